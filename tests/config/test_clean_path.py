"""The clean path of reading a document agrees with the exact one, or stands aside.

``document._read_clean`` (with ``schema.is_clean`` and the ``clean_*``
converters) reads the common, valid document in one pass; ``document._read``
is the exact path that reports. The clean path may say "not sure" (None) as
often as it likes, but when it returns a resource, the exact path must give
the same resource and report nothing at all, not even a warning.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bench.config_scale import service_file, six_file
from controlplane.config import document as document_module
from controlplane.config import routing, services
from controlplane.config.diagnostics import Finding
from controlplane.config.document import read_text
from controlplane.config.istio_schema import KINDS, MESSAGES
from controlplane.config.report import Reporter
from controlplane.config.resources import Resource, slot_constructor
from controlplane.config.schema import SUPPORTED, check_message, is_clean
from controlplane.config.yamlsource import Document, forget_scalars, parse, share
from controlplane.model import RouteDestination
from tests.config.helpers import dedent, doc
from tests.config.test_fuzz import DOCUMENTS, FUZZ, mutated_documents, resources, structures

BENCH_DOCUMENTS = [d.data for text in (service_file(7), six_file(3)) for d in parse(text)]


def exact(document: Document) -> tuple[Resource | None, list[Finding]]:
    report = Reporter("f.yaml", document.index, "")
    resource = document_module._read(document.data, document, report)
    return resource, report.findings


def assert_agrees(documents: list[Any]) -> int:
    """The clean read of each document is the exact one, when there is one; how many there were."""
    taken = 0
    for document in parse(yaml.safe_dump_all(documents, sort_keys=False)):
        clean = document_module._read_clean("f.yaml", document)
        if clean is not None:
            assert exact(document) == (clean, [])
            taken += 1
    return taken


def test_the_clean_path_reads_every_valid_example_as_the_exact_path_does() -> None:
    documents = DOCUMENTS + BENCH_DOCUMENTS
    assert assert_agrees(documents) == len(documents)


@FUZZ
@given(st.lists(mutated_documents(), min_size=1, max_size=3))
def test_mutated_examples_read_clean_only_as_the_exact_path_reads_them(
    documents: list[Any],
) -> None:
    assert_agrees(documents)


@FUZZ
@given(st.lists(resources, min_size=1, max_size=3))
def test_resource_shaped_documents_read_clean_only_as_the_exact_path_reads_them(
    documents: list[Any],
) -> None:
    assert_agrees(documents)


@FUZZ
@given(st.sampled_from(sorted(MESSAGES)), structures)
def test_is_clean_only_when_check_message_reports_nothing(message: str, value: Any) -> None:
    report = Reporter("f.yaml", 0, "")
    check_message(value, message, ("spec",), report)
    if is_clean(value, message):
        assert report.findings == []


def test_is_clean_accepts_the_specs_of_the_examples() -> None:
    for data in DOCUMENTS + BENCH_DOCUMENTS:
        assert is_clean(data["metadata"], "ObjectMeta")
        assert is_clean(data["spec"], KINDS[data["kind"]][1]), data


ROUTE = dedent(
    """
    hosts: [reviews]
    http:
    - match:
      - headers: {end-user: {exact: jason}}
        uri: {prefix: /api}
      route:
      - destination: {host: reviews, subset: v2}
    - route:
      - destination: {host: reviews, subset: v1}
        weight: 90
      - destination: {host: reviews, subset: v2}
        weight: 10
      timeout: 2s
      retries: {attempts: 3, perTryTimeout: 500ms}
    """
)
RULE = dedent(
    """
    host: reviews
    trafficPolicy:
      loadBalancer: {simple: LEAST_REQUEST}
      connectionPool: {tcp: {maxConnections: 100}}
    subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
    """
)
WORKLOAD = dedent(
    """
    address: 10.0.0.1
    labels: {app: reviews, version: v1}
    ports: {http: 9080}
    """
)
SERVICE = dedent(
    """
    selector: {app: reviews}
    ports:
    - {name: http, port: 9080, targetPort: 9080}
    """
)

# Each a small step away from a clean document, into something the exact path reports
# (an error or a warning): the clean path must stand aside for every one.
NEAR_MISSES = [
    doc("VirtualService", ROUTE.replace("timeout: 2s", "timeout: 2 s")),
    doc("VirtualService", ROUTE.replace("timeout: 2s", "timeouts: 2s")),
    doc("VirtualService", ROUTE.replace("timeout: 2s", "corsPolicy: {allowOrigins: []}")),
    doc("VirtualService", ROUTE.replace("weight: 90", "weight: 0").replace("10\n", "0\n")),
    doc("VirtualService", ROUTE.replace("weight: 10\n", "weight: -10\n")),
    doc("VirtualService", ROUTE.replace("hosts: [reviews]", "hosts: [reviews, reviews]")),
    doc("VirtualService", ROUTE.replace("hosts: [reviews]", "hosts: ['*']")),
    doc("VirtualService", ROUTE.replace("{exact: jason}", "{regex: '(?=x)'}")),
    doc("VirtualService", ROUTE.replace("{exact: jason}", "{exact: a, prefix: b}")),
    doc("VirtualService", ROUTE.replace("{exact: jason}", "{}")),
    doc("VirtualService", ROUTE.replace("subset: v2}", "subset: v2, port: {number: 0}}", 1)),
    doc("VirtualService", ROUTE.replace("attempts: 3", "attempts: -1")),
    doc("VirtualService", ROUTE + "exportTo: ['.', '.']\n"),
    doc("VirtualService", ROUTE + "tls: [{}]\n"),
    doc(
        "VirtualService",
        ROUTE.replace("- route:\n", "- mirrorPercentage: {value: 150}\n  route:\n"),
    ),
    doc("DestinationRule", RULE.replace("LEAST_REQUEST", "LEAST_REQUESTS")),
    doc("DestinationRule", RULE.replace("{name: v2,", "{name: v1,")),
    doc("DestinationRule", RULE.replace("version: v2", "version: v2*")),
    doc(
        "DestinationRule",
        RULE.replace(
            "connectionPool: {tcp: {maxConnections: 100}}",
            "outlierDetection: {maxEjectionPercent: 150}",
        ),
    ),
    doc(
        "DestinationRule",
        RULE.replace("trafficPolicy:\n", "trafficPolicy:\n  tls: {mode: SIMPLE}\n"),
    ),
    doc(
        "DestinationRule",
        RULE.replace(
            "labels: {version: v2}}", "labels: {version: v2}, trafficPolicy: {tls: {mode: SIMPLE}}}"
        ),
    ),
    doc("DestinationRule", RULE + "exportTo: ['~']\n"),
    doc("WorkloadEntry", WORKLOAD.replace("10.0.0.1", "10.0.0.1/8")),
    doc("WorkloadEntry", WORKLOAD.replace("10.0.0.1", "")),
    doc("WorkloadEntry", WORKLOAD.replace("http: 9080", "Http: 9080")),
    doc("WorkloadEntry", WORKLOAD.replace("http: 9080", "http: 0")),
    doc("WorkloadEntry", WORKLOAD.replace("version: v1", "version: -v1")),
    doc("WorkloadEntry", WORKLOAD.replace("app: reviews", "a/b/c: reviews")),
    doc("WorkloadEntry", WORKLOAD + "weight: 0\n"),
    doc("WorkloadEntry", WORKLOAD + "network: west\n"),
    doc("Service", SERVICE.replace("name: http, ", "") + "- {port: 9081}\n", api="v1"),
    doc("Service", SERVICE.replace("reviews", "'*'"), api="v1"),
    doc("Service", SERVICE.replace("port: 9080,", "port: 70000,"), api="v1"),
    doc("Service", SERVICE.replace("targetPort: 9080", "nodePort: 30000"), api="v1"),
    doc("Service", SERVICE, name="Reviews", api="v1"),
    doc("Service", SERVICE, namespace="a_b", api="v1"),
    doc("Service", SERVICE, api="networking.istio.io/v1"),
    doc("Service", SERVICE, api="v1").replace("metadata:", "metadata:\n  uid: 7\n"),
    doc("Service", SERVICE, api="v1").replace("metadata:", "extra: 1\nmetadata:"),
    doc("Service", SERVICE, api="v1").replace(
        "metadata:", "metadata:\n  annotations: {networking.istio.io/exportTo: '~, *'}\n"
    ),
    doc("DestinationRule", RULE).replace(
        "metadata:", "metadata:\n  annotations: {pilotfish.io/latency-decay: 10s}\n"
    ),
    doc("Service", SERVICE + "- {name: http, port: 9081}\n", api="v1"),
    doc("Service", SERVICE + "- {name: web, port: 9080}\n", api="v1"),
    doc("Service", SERVICE.replace("targetPort: 9080", "targetPort: 0"), api="v1"),
    doc("Service", SERVICE.replace("version", "v").replace("reviews}", "re*}"), api="v1"),
    doc("Service", "selector: {app: reviews}\nports: []\n", api="v1"),
    doc("Service", "ports:\n- null\n", api="v1"),
    doc("Service", SERVICE, name="'7'", api="v1").replace("name: '7'", "name: 7"),
    doc("Service", SERVICE, namespace="x", api="v1").replace("namespace: x", "namespace: 0"),
    doc("Service", SERVICE, namespace="x", api="v1").replace("namespace: x", "namespace: false"),
    doc("Service", SERVICE, namespace="x", api="v1").replace("namespace: x", "namespace: []"),
    doc("Service", SERVICE, namespace="x" * 64, api="v1"),
    doc("WorkloadEntry", WORKLOAD.replace("http: 9080", "http: 9080, http_2: 9081")),
    doc("WorkloadEntry", WORKLOAD + "weight: 4294967296\n"),
    doc("WorkloadEntry", WORKLOAD + "weight: '2'\n"),
    doc("WorkloadEntry", WORKLOAD + "weight: true\n"),
    doc("WorkloadEntry", WORKLOAD.replace("http: 9080", "http: '9080'")),
    doc("WorkloadEntry", WORKLOAD.replace("http: 9080", "http: null")),
    doc("WorkloadEntry", WORKLOAD.replace("http: 9080", "http: [9080]")),
    doc("WorkloadEntry", WORKLOAD.replace("{http: 9080}", "[]")),
    doc("WorkloadEntry", WORKLOAD.replace("{app: reviews, version: v1}", "[]")),
    doc("WorkloadEntry", WORKLOAD.replace("{app: reviews, version: v1}", "''")),
    doc("WorkloadEntry", WORKLOAD.replace("version: v1", "version: [v1]")),
    doc("WorkloadEntry", WORKLOAD.replace("version: v1", "version: null")),
    doc("WorkloadEntry", WORKLOAD.replace("10.0.0.1", "7")),
    doc("WorkloadEntry", WORKLOAD + "serviceAccount: reviews\n"),
    doc("WorkloadEntry", WORKLOAD + "locality: 7\n"),
    doc("DestinationRule", RULE.replace("{simple: LEAST_REQUEST}", "{consistentHash: {}}")),
    doc(
        "DestinationRule",
        RULE.replace(
            "connectionPool: {tcp: {maxConnections: 100}}", "portLevelSettings: [{port: {}}]"
        ),
    ),
    doc("Gateway", "selector: {istio: ingress}\nservers: []\n"),
    doc(
        "Gateway",
        "servers: [{port: {number: 443, name: https, protocol: HTTP}, hosts: ['*'], "
        "tls: {mode: SIMPLE}}]\n",
    ),
]


def test_the_near_misses_start_from_documents_the_clean_path_takes() -> None:
    for kind, spec, api in [
        ("VirtualService", ROUTE, None),
        ("DestinationRule", RULE, None),
        ("WorkloadEntry", WORKLOAD, None),
        ("Service", SERVICE, "v1"),
    ]:
        (document,) = parse(doc(kind, spec, **({"api": api} if api else {})))
        assert document_module._read_clean("f.yaml", document) is not None


@pytest.mark.parametrize("text", NEAR_MISSES, ids=range(len(NEAR_MISSES)))
def test_the_clean_path_stands_aside_for_anything_the_exact_path_reports(text: str) -> None:
    (document,) = parse(dedent(text))
    assert exact(document)[1] != []
    assert document_module._read_clean("f.yaml", document) is None


@pytest.mark.parametrize("text", NEAR_MISSES, ids=range(len(NEAR_MISSES)))
def test_read_text_reports_as_the_exact_path_alone_does(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_clean_path = read_text("f.yaml", dedent(text))
    monkeypatch.setattr(document_module, "_read_clean", lambda file, document: None)
    assert with_clean_path == read_text("f.yaml", dedent(text))
    assert with_clean_path.findings != ()


def test_regex_verdicts_are_remembered_only_up_to_the_cache_size() -> None:
    routing.regex_error.cache_clear()
    for index in range(routing.REGEX_CACHE_SIZE + 100):
        assert routing.regex_error(f"^/api/v{index}/.*$") is None
    assert routing.regex_error.cache_info().currsize == routing.REGEX_CACHE_SIZE
    assert routing.regex_error("(?=x)") == (
        "lookaround and backreferences are not supported by Envoy's RE2 engine"
    )
    assert routing.regex_error("(?=x)") == routing.regex_error("(?=x)")
    assert routing.regex_error.cache_info().currsize == routing.REGEX_CACHE_SIZE


def test_a_slot_constructor_makes_what_the_class_makes() -> None:
    make = slot_constructor(RouteDestination)
    made = make("a.b.svc.cluster.local", "v1", weight=7)
    assert made == RouteDestination("a.b.svc.cluster.local", "v1", weight=7)
    assert hash(made) == hash(RouteDestination("a.b.svc.cluster.local", "v1", weight=7))
    assert make("h") == RouteDestination("h")
    assert repr(make("h", port=80)) == repr(RouteDestination("h", port=80))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.weight = 1  # type: ignore[misc]


def test_a_slot_constructor_is_refused_for_a_class_it_would_not_make_alike() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        value: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True)
    class Unslotted:
        value: int

    for cls in (Checked, Unslotted, dict):
        with pytest.raises(TypeError):
            slot_constructor(cls)


def test_the_clean_path_takes_the_bench_services_without_a_reporter() -> None:
    for data in BENCH_DOCUMENTS:
        if data["kind"] == "Service":
            spec = data["spec"]
            report = Reporter("f.yaml", 0, "")
            exact_spec = services.kube_service(spec, report)
            assert services.clean_kube_service(spec, "bench", "x") == exact_spec
            assert report.findings == []


def test_strings_repeated_across_files_are_held_once() -> None:
    first, second = (read_text(f"svc-{i}.yaml", service_file(i)) for i in (1, 2))
    (service_a, workload_a, *_), (service_b, workload_b, *_) = first.resources, second.resources
    assert workload_a.meta.namespace == "bench"
    assert workload_a.meta.namespace is workload_b.meta.namespace is service_b.meta.namespace
    assert workload_a.meta.kind is workload_b.meta.kind
    labels_a, labels_b = dict(workload_a.spec.labels), dict(workload_b.spec.labels)  # type: ignore[union-attr]
    assert [k for k in labels_a] == ["app", "version"]
    (key_a, _), (key_b, _) = workload_a.spec.labels[0], workload_b.spec.labels[0]  # type: ignore[union-attr]
    assert key_a is key_b
    assert labels_a["version"] is labels_b["version"]
    # The service's name, its selector and its workloads' labels: one string.
    assert service_a.meta.name is service_a.spec.selector[0][1]  # type: ignore[union-attr]
    assert service_a.meta.name is labels_a["app"]


def test_the_load_caches_are_emptied_after_a_load() -> None:
    forget_scalars()
    read_text("svc-1.yaml", service_file(1))
    assert "svc-00001" in services._LABEL_VALUES_SEEN
    assert document_module._NAMESPACES_SEEN == {"bench": "bench"}
    fresh = "".join(["ben", "ch"])
    assert share(fresh) == "bench" and share(fresh) is not fresh
    forget_scalars()
    assert share(fresh) is fresh
    assert not services._LABEL_VALUES_SEEN
    assert document_module._NAMESPACES_SEEN == {}


def test_the_one_pass_workload_check_assumes_the_schemas_types() -> None:
    fields = MESSAGES["WorkloadEntry"]
    assert {name: fields[name].type for name in services.PLAIN_WORKLOAD_FIELDS} == {
        "address": "string",
        "weight": "uint32",
        "ports": "map:uint32",
        "labels": "map:string",
    }
    assert not any(fields[name].repeated for name in services.PLAIN_WORKLOAD_FIELDS)
    assert SUPPORTED["WorkloadEntry"] >= services.PLAIN_WORKLOAD_FIELDS


def test_a_workload_with_a_locality_or_a_unix_address_reads_as_the_exact_path_reads_it() -> None:
    for spec in (
        WORKLOAD + "locality: us-east/a\n",
        "address: unix:///var/run/app.sock\nlabels: {app: reviews}\n",
    ):
        (document,) = parse(doc("WorkloadEntry", spec))
        resource, findings = exact(document)
        assert findings == [] and resource is not None
        assert read_text("f.yaml", doc("WorkloadEntry", spec)).resources == (resource,)


@pytest.mark.parametrize("number", ["true", "1.0", "'1'"])
def test_a_port_map_met_before_is_not_taken_for_one_that_only_compares_equal(
    number: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    valid = doc("WorkloadEntry", "address: 10.0.0.1\nports: {http: 1}\n", name="a")
    other = doc("WorkloadEntry", f"address: 10.0.0.2\nports: {{http: {number}}}\n", name="b")
    text = valid + "---\n" + other
    forget_scalars()
    with_clean_path = read_text("f.yaml", text)
    monkeypatch.setattr(document_module, "_read_clean", lambda file, document: None)
    assert with_clean_path == read_text("f.yaml", text)
    assert [f.code for f in with_clean_path.findings] == ["PF112"]
