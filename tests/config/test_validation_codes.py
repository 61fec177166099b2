"""Every per-resource validation code, with its exact place and a message that says how to fix it.

Each case is a whole file; its diagnostics are resolved the way the store
resolves them and compared field by field: severity, code, file, line,
column, resource, field path and message. ``hint`` is the part of the
message that tells the operator what to do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.config import store
from controlplane.config.diagnostics import CODES, Diagnostic, Severity
from controlplane.config.document import read_text
from controlplane.config.store import ConfigStore, validate_directory
from tests.config.helpers import FILE, dedent, diagnose, doc

ERROR, WARNING = Severity.ERROR, Severity.WARNING
VS_RULE = "hosts: [web]\nhttp:\n- route:\n  - destination: {host: web}\n"


def error(code: str, line: int, column: int, resource: str, field: str, message: str) -> Diagnostic:
    return Diagnostic(ERROR, code, FILE, line, column, resource, field, message)


def warning(
    code: str, line: int, column: int, resource: str, field: str, message: str
) -> Diagnostic:
    return Diagnostic(WARNING, code, FILE, line, column, resource, field, message)


def only(text: str) -> Diagnostic:
    (diagnostic,) = diagnose(dedent(text))
    return diagnostic


def check(text: str, expected: Diagnostic, hint: str) -> None:
    result = read_text(FILE, dedent(text))
    assert result.resources == ()
    assert result.ok is False
    assert only(text) == expected
    assert hint in expected.message


# --- PF100-PF105: the file and the envelope ---------------------------------------------------


def test_pf100_yaml_syntax_error_is_placed_where_the_parser_stopped() -> None:
    text = """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          labels: {app: web
        spec: {}
        """
    check(
        text,
        error("PF100", 6, 5, "", "", "YAML syntax: did not find expected ',' or '}'"),
        "expected ',' or '}'",
    )
    result = read_text(FILE, dedent(text))
    assert result.syntax_error == (6, 5)


def test_pf100_a_duplicate_key_is_placed_at_the_second_key() -> None:
    check(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          name: other
        """,
        error(
            "PF100",
            5,
            3,
            "",
            "",
            "duplicate key 'name': a key may appear once per mapping, remove one",
        ),
        "remove one",
    )


def test_pf100_a_syntax_error_anywhere_loses_every_document_of_the_file() -> None:
    text = doc("WorkloadEntry", "address: 10.0.0.1\n") + "---\nkind: [\n"
    result = read_text(FILE, text)
    assert result.resources == ()
    assert [f.code for f in result.findings] == ["PF100"]
    assert result.syntax_error == (9, 1)


def test_pf101_a_document_that_is_not_a_mapping() -> None:
    check(
        "- apiVersion: v1\n- kind: Service\n",
        error(
            "PF101", 1, 1, "", "", "a document must be a mapping with apiVersion, kind and metadata"
        ),
        "must be a mapping with apiVersion, kind and metadata",
    )


def test_pf101_a_document_without_a_kind() -> None:
    check(
        "apiVersion: v1\nmetadata: {name: web}\n",
        error(
            "PF101",
            1,
            1,
            "",
            "kind",
            "the document has no kind; add one, for example kind: Service",
        ),
        "add one, for example kind: Service",
    )


def test_pf101_a_document_without_an_api_version_is_told_the_kinds_version() -> None:
    check(
        "# a comment\nkind: Gateway\nmetadata: {name: web}\n",
        error(
            "PF101",
            2,
            1,
            "",
            "apiVersion",
            "the document has no apiVersion; add apiVersion: networking.istio.io/v1",
        ),
        "add apiVersion: networking.istio.io/v1",
    )


def test_pf102_an_unknown_kind_with_a_suggestion() -> None:
    check(
        """
        apiVersion: networking.istio.io/v1
        kind: VirtualServce
        metadata: {name: web}
        """,
        error(
            "PF102",
            2,
            1,
            "",
            "kind",
            "unknown kind 'VirtualServce'; Pilotfish reads DestinationRule, Gateway, Service, "
            "ServiceEntry, VirtualService, WorkloadEntry; did you mean 'VirtualService'?",
        ),
        "did you mean 'VirtualService'?",
    )


def test_pf102_a_kind_close_to_ours_in_lowercase_is_still_an_error() -> None:
    check(
        "apiVersion: v1\nkind: service\nmetadata: {name: web}\n",
        error(
            "PF102",
            2,
            1,
            "",
            "kind",
            "unknown kind 'service'; Pilotfish reads DestinationRule, Gateway, Service, "
            "ServiceEntry, VirtualService, WorkloadEntry; did you mean 'Service'?",
        ),
        "did you mean 'Service'?",
    )


# --- PF122: kinds Pilotfish does not read -----------------------------------------------------

SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n"


def test_pf122_a_kind_pilotfish_does_not_read_is_skipped_and_the_rest_of_the_file_is_used() -> None:
    text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\n" + SERVICE
    result = read_text(FILE, text)
    assert result.ok is True
    assert [r.meta.kind for r in result.resources] == ["Service"]
    assert diagnose(text) == [
        warning(
            "PF122",
            2,
            1,
            "Deployment",
            "kind",
            "kind 'Deployment' (apps/v1) is not one Pilotfish reads; the document is skipped "
            "and the rest of the file is used",
        )
    ]


def test_pf122_a_kind_close_to_ours_but_known_elsewhere_is_skipped_without_a_hint() -> None:
    text = "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: web}\n---\n" + SERVICE
    (diagnostic,) = diagnose(text)
    assert (diagnostic.severity, diagnostic.code, diagnostic.message) == (
        WARNING,
        "PF122",
        "kind 'ServiceAccount' (v1) is not one Pilotfish reads; the document is skipped "
        "and the rest of the file is used",
    )


def test_pf122_one_warning_per_kind_and_file_counting_its_documents() -> None:
    text = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n---\n"
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\n"
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b}\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: c}\n"
    )
    assert [(d.code, d.line, d.resource, d.message) for d in diagnose(text)] == [
        (
            "PF122",
            2,
            "Deployment",
            "kind 'Deployment' (apps/v1) is not one Pilotfish reads; the document is skipped "
            "and the rest of the file is used (3 documents)",
        ),
        (
            "PF122",
            6,
            "AuthorizationPolicy",
            "kind 'AuthorizationPolicy' (security.istio.io/v1) is not one Pilotfish reads; "
            "the document is skipped and the rest of the file is used",
        ),
    ]


def test_pf122_a_kind_unknown_everywhere_and_far_from_ours_is_skipped() -> None:
    (diagnostic,) = diagnose("apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {}\n")
    assert (diagnostic.severity, diagnostic.code, diagnostic.line) == (WARNING, "PF122", 2)


@pytest.mark.parametrize("kind", ["Gateway", "HTTPRoute", "GRPCRoute", "ReferenceGrant"])
def test_pf122_gateway_api_objects_are_skipped_with_a_message_that_says_so(kind: str) -> None:
    text = (
        f"apiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: web}}\n"
        "spec: {}\n"
    )
    assert read_text(FILE, text).ok is True
    assert diagnose(text) == [
        warning(
            "PF122",
            2,
            1,
            kind,
            "kind",
            f"{kind} is a Kubernetes Gateway API object (gateway.networking.k8s.io); "
            "Pilotfish does not read the Gateway API, only Istio's networking.istio.io "
            "Gateway and VirtualService: the document is skipped",
        )
    ]


def test_pf122_is_an_error_with_validate_strict(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\n" + SERVICE
    )
    (lenient,) = validate_directory(tmp_path)
    (strict,) = validate_directory(tmp_path, strict=True)
    assert (lenient.severity, lenient.code) == (WARNING, "PF122")
    assert strict == Diagnostic(
        ERROR,
        "PF122",
        "app.yaml",
        2,
        1,
        "Deployment",
        "kind",
        lenient.message,
    )


def test_pf103_an_istio_kind_with_the_wrong_api_version() -> None:
    check(
        "kind: Gateway\napiVersion: networking.istio.io/v2\nmetadata: {name: web}\n",
        error(
            "PF103",
            2,
            1,
            "",
            "apiVersion",
            "apiVersion 'networking.istio.io/v2' is not valid for Gateway; use "
            "networking.istio.io/v1 or networking.istio.io/v1beta1 or networking.istio.io/v1alpha3",
        ),
        "use networking.istio.io/v1 or",
    )


def test_pf103_a_kubernetes_service_with_an_istio_api_version() -> None:
    check(
        "apiVersion: networking.istio.io/v1\nkind: Service\nmetadata: {name: web}\n",
        error(
            "PF103",
            1,
            1,
            "",
            "apiVersion",
            "apiVersion 'networking.istio.io/v1' is not valid for Service; use v1",
        ),
        "use v1",
    )


def test_pf104_a_name_that_is_not_a_dns_name() -> None:
    check(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: Web_1
        spec:
          ports: [{port: 80}]
        """,
        error(
            "PF104",
            4,
            3,
            "Service default/Web_1",
            "metadata.name",
            "metadata.name 'Web_1' must be a lowercase DNS name (a-z, 0-9, '-', '.')",
        ),
        "must be a lowercase DNS name (a-z, 0-9, '-', '.')",
    )


def test_pf104_a_missing_name_is_placed_at_metadata() -> None:
    check(
        """
        apiVersion: v1
        kind: Service
        metadata:
          namespace: shop
        spec:
          ports: [{port: 80}]
        """,
        error("PF104", 3, 1, "Service", "metadata.name", "metadata has no name; add metadata.name"),
        "add metadata.name",
    )


def test_pf104_a_namespace_that_is_not_a_dns_label() -> None:
    check(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          namespace: shop.prod
        spec:
          ports: [{port: 80}]
        """,
        error(
            "PF104",
            5,
            3,
            "Service shop.prod/web",
            "metadata.namespace",
            "metadata.namespace 'shop.prod' must be a lowercase DNS label (a-z, 0-9, '-')",
        ),
        "must be a lowercase DNS label (a-z, 0-9, '-')",
    )


def test_pf104_a_document_without_metadata() -> None:
    check(
        "apiVersion: v1\nkind: Service\nspec:\n  ports: [{port: 80}]\n",
        error(
            "PF104", 1, 1, "Service", "metadata", "the document has no metadata; add metadata.name"
        ),
        "add metadata.name",
    )


def test_pf104_a_name_longer_than_253_characters() -> None:
    name = "a" * 254
    diagnostic = only(doc("WorkloadEntry", "address: 10.0.0.1\n", name=name))
    assert (diagnostic.code, diagnostic.line, diagnostic.column, diagnostic.field) == (
        "PF104",
        4,
        3,
        "metadata.name",
    )


NOT_UTF8 = b"apiVersion: v1\nkind: Service\nmetadata:\n  name: caf\xe9\n"


def test_pf105_a_file_that_is_not_utf8_is_reported_at_its_first_line(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_bytes(NOT_UTF8)
    version = store._read(tmp_path, "bad.yaml")
    assert version is not None
    assert version.text == ""
    assert version.result.resources == ()
    expected = Diagnostic(
        ERROR,
        "PF105",
        "bad.yaml",
        1,
        1,
        "",
        "",
        "the file is not UTF-8: invalid continuation byte",
    )
    assert validate_directory(tmp_path) == [expected]
    assert "not UTF-8" in expected.message


def test_pf105_a_store_rejects_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_bytes(NOT_UTF8)
    result = ConfigStore(tmp_path).reload()
    assert result.rejected == ("bad.yaml",)
    assert [(d.code, d.file, d.line, d.column) for d in result.diagnostics] == [
        ("PF105", "bad.yaml", 1, 1)
    ]


# --- PF110-PF111: fields ----------------------------------------------------------------------


def test_pf110_an_unknown_field_with_did_you_mean() -> None:
    check(
        doc("VirtualService", "hots: [web]\n", name="web"),
        error(
            "PF110",
            6,
            3,
            "VirtualService default/web",
            "spec.hots",
            "unknown field 'hots' in VirtualService; did you mean 'hosts'?",
        ),
        "did you mean 'hosts'?",
    )


def test_pf110_an_unknown_nested_field_names_its_message() -> None:
    check(
        doc(
            "VirtualService",
            "hosts: [web]\nhttp:\n- route:\n  - destination:\n      host: web\n      subet: v1\n",
            name="web",
        ),
        error(
            "PF110",
            11,
            9,
            "VirtualService default/web",
            "spec.http[0].route[0].destination.subet",
            "unknown field 'subet' in Destination; did you mean 'subset'?",
        ),
        "did you mean 'subset'?",
    )


def test_pf110_a_field_with_the_wrong_case_suggests_the_right_one() -> None:
    check(
        doc("DestinationRule", "Host: web\n", name="web"),
        error(
            "PF110",
            6,
            3,
            "DestinationRule default/web",
            "spec.Host",
            "unknown field 'Host' in DestinationRule; did you mean 'host'?",
        ),
        "did you mean 'host'?",
    )


def test_pf110_an_unknown_field_without_a_close_match_is_to_be_removed() -> None:
    check(
        doc(
            "Gateway",
            "servers: [{port: {number: 80, protocol: HTTP, name: p}, hosts: ['*']}]\nzzz: 1\n",
            name="gw",
        ),
        error(
            "PF110",
            7,
            3,
            "Gateway default/gw",
            "spec.zzz",
            "unknown field 'zzz' in Gateway; remove it",
        ),
        "remove it",
    )


def test_pf110_an_unknown_top_level_field() -> None:
    check(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspecs:\n  ports: [{port: 80}]\n",
        error(
            "PF110",
            4,
            1,
            "Service default/web",
            "specs",
            "unknown top-level field 'specs'; did you mean 'spec'?",
        ),
        "did you mean 'spec'?",
    )


def test_pf110_an_unknown_metadata_field() -> None:
    check(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, label: {a: b}}\n",
        error(
            "PF110",
            3,
            23,
            "Service default/web",
            "metadata.label",
            "unknown field 'label' in ObjectMeta; did you mean 'labels'?",
        ),
        "did you mean 'labels'?",
    )


def test_pf111_valid_istio_fields_pilotfish_ignores_are_warnings_and_their_children_are_not() -> (
    None
):
    text = doc(
        "VirtualService",
        """
        hosts: [web]
        exportTo: ["."]
        http:
        - route:
          - destination: {host: web}
          corsPolicy:
            allowOrigins:
            - exact: https://example.com
            allowMethods: [GET]
            maxAge: 24h
        """,
        name="web",
    )
    result = read_text(FILE, text)
    assert result.ok is True
    assert len(result.resources) == 1
    message = "field {!r} is valid Istio but Pilotfish does not act on it yet; it is ignored"
    assert diagnose(text) == [
        warning(
            "PF111",
            11,
            5,
            "VirtualService default/web",
            "spec.http[0].corsPolicy",
            message.format("corsPolicy"),
        ),
    ]
    assert "it is ignored" in message


@pytest.mark.parametrize(
    ("kind", "spec", "field"),
    [
        (
            "DestinationRule",
            "host: web\ntrafficPolicy:\n  tls: {mode: DISABLE}\n",
            "spec.trafficPolicy.tls",
        ),
        (
            "Gateway",
            "servers:\n- port: {number: 80, protocol: HTTP, name: p}\n  hosts: ['*']\n"
            "  bind: 0.0.0.0\n",
            "spec.servers[0].bind",
        ),
        ("ServiceEntry", "hosts: [a.example.com]\nsubjectAltNames: [x]\n", "spec.subjectAltNames"),
        ("WorkloadEntry", "address: 10.0.0.1\nserviceAccount: web\n", "spec.serviceAccount"),
        (
            "VirtualService",
            VS_RULE + "  match:\n  - sourceLabels: {app: x}\n",
            "spec.http[0].match[0].sourceLabels",
        ),
        (
            "DestinationRule",
            "host: web\ntrafficPolicy:\n  connectionPool:\n    http: {h2UpgradePolicy: UPGRADE}\n",
            "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy",
        ),
    ],
)
def test_pf111_each_ignored_field_is_one_warning_at_its_key(
    kind: str, spec: str, field: str
) -> None:
    text = doc(kind, spec)
    result = read_text(FILE, text)
    assert result.ok is True
    assert len(result.resources) == 1
    assert [(d.severity, d.code, d.field) for d in diagnose(text)] == [(WARNING, "PF111", field)]


def test_pf111_values_below_an_ignored_field_are_still_type_checked() -> None:
    text = doc("VirtualService", VS_RULE + "  corsPolicy:\n    maxAge: a day\n", name="web")
    assert [(d.severity, d.code, d.line, d.column, d.field, d.message) for d in diagnose(text)] == [
        (
            WARNING,
            "PF111",
            10,
            5,
            "spec.http[0].corsPolicy",
            "field 'corsPolicy' is valid Istio but Pilotfish does not act on it yet; it is ignored",
        ),
        (
            ERROR,
            "PF116",
            11,
            7,
            "spec.http[0].corsPolicy.maxAge",
            "invalid duration 'a day': write it like 1.5s or 100ms",
        ),
    ]


def test_kubectl_cluster_fields_of_a_service_are_accepted_silently() -> None:
    text = doc(
        "Service",
        "type: ClusterIP\nclusterIP: 10.0.0.1\nsessionAffinity: None\nports: [{port: 80}]\n",
        api="v1",
    )
    assert diagnose(text) == []


# --- PF112-PF114: types, required fields, values ----------------------------------------------


def test_pf112_a_value_of_the_wrong_type() -> None:
    check(
        doc(
            "DestinationRule",
            "host: web\ntrafficPolicy:\n  connectionPool:\n    tcp:\n      maxConnections: lots\n",
            name="web",
        ),
        error(
            "PF112",
            10,
            9,
            "DestinationRule default/web",
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
            "expected an integer, found string 'lots'",
        ),
        "expected an integer",
    )


def test_pf113_a_missing_required_field_is_placed_at_its_parent() -> None:
    check(
        doc("VirtualService", "hosts: [web]\nhttp:\n- match:\n  - uri: {prefix: /}\n", name="web"),
        error(
            "PF113",
            8,
            5,
            "VirtualService default/web",
            "spec.http[0].route",
            "a rule needs a route (or a redirect)",
        ),
        "needs a route (or a redirect)",
    )


def test_pf113_a_document_without_a_spec() -> None:
    check(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web}\n",
        error(
            "PF113", 1, 1, "DestinationRule default/web", "spec", "a DestinationRule needs a spec"
        ),
        "needs a spec",
    )


def test_pf114_an_enum_value_with_a_suggestion() -> None:
    check(
        doc("ServiceEntry", "hosts: [api.example.com]\nresolution: STATIK\n", name="api"),
        error(
            "PF114",
            7,
            3,
            "ServiceEntry default/api",
            "spec.resolution",
            "string 'STATIK' is not one of NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS; "
            "did you mean 'STATIC'?",
        ),
        "did you mean 'STATIC'?",
    )


def test_pf114_a_redirect_code_that_is_not_a_redirect() -> None:
    check(
        doc(
            "VirtualService",
            "hosts: [web]\nhttp:\n- redirect:\n    uri: /new\n    redirectCode: 200\n",
        ),
        error(
            "PF114",
            10,
            7,
            "VirtualService default/x",
            "spec.http[0].redirect.redirectCode",
            "redirectCode 200 is not one of 301, 302, 303, 307, 308",
        ),
        "is not one of 301, 302, 303, 307, 308",
    )


def test_pf114_an_abort_status_that_is_not_an_http_status() -> None:
    check(
        doc("VirtualService", VS_RULE + "  fault:\n    abort: {httpStatus: 99}\n"),
        error(
            "PF114",
            11,
            15,
            "VirtualService default/x",
            "spec.http[0].fault.abort.httpStatus",
            "HTTP status 99 is not 200-599",
        ),
        "is not 200-599",
    )


CASES_PF112_TO_PF114 = [
    # PF112: wrong types
    (
        "VirtualService",
        "hosts: web\n",
        ("PF112", 6, 3, "spec.hosts", "expected a list, found string 'web'"),
    ),
    (
        "VirtualService",
        "hosts: [web]\nhttp: {route: []}\n",
        ("PF112", 7, 3, "spec.http", "expected a list, found a mapping"),
    ),
    (
        "VirtualService",
        "hosts: [web, 5]\n",
        ("PF112", 6, 16, "spec.hosts[1]", "expected a string, found int 5"),
    ),
    (
        "VirtualService",
        "hosts: [web, null]\n",
        ("PF112", 6, 16, "spec.hosts[1]", "expected a string, found null"),
    ),
    (
        "VirtualService",
        "hosts: [web]\ngateways:\n-\n",
        ("PF112", 8, 4, "spec.gateways[0]", "expected a string, found null"),
    ),
    (
        "VirtualService",
        VS_RULE + "  headers:\n    request:\n      remove: [~]\n",
        (
            "PF112",
            12,
            18,
            "spec.http[0].headers.request.remove[0]",
            "expected a string, found null",
        ),
    ),
    (
        "Gateway",
        "selector: {app: 1}\n"
        "servers: [{port: {number: 80, protocol: HTTP, name: p}, hosts: ['*']}]\n",
        ("PF112", 6, 14, "spec.selector.app", "expected a string, found int 1"),
    ),
    (
        "WorkloadEntry",
        "address: 10.0.0.1\nports: {http: '80'}\n",
        ("PF112", 7, 11, "spec.ports.http", "expected a non-negative integer, found string '80'"),
    ),
    (
        "DestinationRule",
        "host: web\ntrafficPolicy: []\n",
        ("PF112", 7, 3, "spec.trafficPolicy", "expected a mapping, found a list"),
    ),
    (
        "VirtualService",
        VS_RULE + "  match:\n  - ignoreUriCase: 'yes'\n",
        (
            "PF112",
            11,
            7,
            "spec.http[0].match[0].ignoreUriCase",
            "expected true or false, found string 'yes'",
        ),
    ),
    (
        "VirtualService",
        VS_RULE + "  mirrorPercentage: {value: half}\n",
        (
            "PF112",
            10,
            24,
            "spec.http[0].mirrorPercentage.value",
            "expected a number, found string 'half'",
        ),
    ),
    (
        "Service",
        "ports:\n- port: 80\n  targetPort: [8080]\n",
        ("PF112", 8, 5, "spec.ports[0].targetPort", "expected a number or a name, found a list"),
    ),
    (
        "Service",
        "ports:\n- port: '80'\n",
        ("PF112", 7, 5, "spec.ports[0].port", "expected an integer, found string '80'"),
    ),
    # PF113: missing required fields
    (
        "VirtualService",
        "gateways: [mesh]\n",
        ("PF113", 5, 1, "spec.hosts", "a VirtualService needs at least one host"),
    ),
    (
        "DestinationRule",
        "subsets: []\n",
        ("PF113", 5, 1, "spec.host", "a DestinationRule needs a host"),
    ),
    (
        "Gateway",
        "selector: {app: gw}\n",
        ("PF113", 5, 1, "spec.servers", "a Gateway needs at least one server"),
    ),
    (
        "Gateway",
        "servers:\n- port: {protocol: HTTP}\n  hosts: ['*']\n",
        ("PF113", 7, 5, "spec.servers[0].port.number", "a server needs a port number"),
    ),
    (
        "Gateway",
        "servers:\n- port: {number: 80, name: p}\n  hosts: ['*']\n",
        (
            "PF113",
            7,
            5,
            "spec.servers[0].port.protocol",
            "a server port needs a protocol: one of HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS",
        ),
    ),
    (
        "Gateway",
        "servers:\n- port: {number: 80, protocol: HTTP, name: p}\n",
        ("PF113", 7, 5, "spec.servers[0].hosts", "a server needs at least one host"),
    ),
    (
        "Service",
        "selector: {app: web}\n",
        ("PF113", 5, 1, "spec.ports", "a Service needs at least one port"),
    ),
    (
        "Service",
        "ports:\n- {name: http, port: 80}\n- {port: 81}\n",
        ("PF113", 8, 5, "spec.ports[1].name", "ports must be named when a Service has several"),
    ),
    (
        "WorkloadEntry",
        "labels: {app: web}\n",
        ("PF113", 5, 1, "spec.address", "a workload needs an address"),
    ),
    (
        "WorkloadEntry",
        "address: 10.0.0.1\nports: {http: null}\n",
        ("PF113", 7, 11, "spec.ports.http", "a port number is required"),
    ),
    (
        "ServiceEntry",
        "ports: [{number: 80, name: http}]\n",
        ("PF113", 5, 1, "spec.hosts", "a ServiceEntry needs at least one host"),
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\nports:\n- {number: 80}\n",
        ("PF113", 8, 5, "spec.ports[0].name", "a ServiceEntry port needs a name"),
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\nports:\n- {name: http}\n",
        ("PF113", 8, 5, "spec.ports[0].number", "a port number is required"),
    ),
    (
        "VirtualService",
        "hosts: [web]\nhttp:\n- match:\n  - uri: {}\n  route:\n  - destination: {host: web}\n",
        (
            "PF113",
            9,
            7,
            "spec.http[0].match[0].uri",
            "a string match needs one of exact, prefix or regex",
        ),
    ),
    (
        "VirtualService",
        "hosts: [web]\nhttp:\n- route:\n  - destination: {subset: v1}\n",
        ("PF113", 9, 7, "spec.http[0].route[0].destination.host", "a destination needs a host"),
    ),
    (
        "VirtualService",
        "hosts: [web]\nhttp:\n- route:\n  -\n",
        ("PF113", 9, 6, "spec.http[0].route[0].destination.host", "a destination needs a host"),
    ),
    (
        "VirtualService",
        VS_RULE + "  fault: {delay: {percentage: {value: 5}}}\n",
        ("PF113", 10, 13, "spec.http[0].fault.delay.fixedDelay", "a delay needs fixedDelay"),
    ),
    (
        "VirtualService",
        VS_RULE + "  fault:\n    abort: {percentage: {value: 5}}\n",
        ("PF113", 11, 7, "spec.http[0].fault.abort", "an abort needs httpStatus or grpcStatus"),
    ),
    (
        "DestinationRule",
        "host: web\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {minimumRingSize: 1024}\n",
        (
            "PF113",
            9,
            7,
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "consistentHash needs one of httpHeaderName, httpCookie, useSourceIp, "
            "httpQueryParameterName",
        ),
    ),
    (
        "DestinationRule",
        "host: web\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {useSourceIp: false}\n",
        (
            "PF113",
            9,
            7,
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "consistentHash needs one of httpHeaderName, httpCookie, useSourceIp, "
            "httpQueryParameterName",
        ),
    ),
    (
        "DestinationRule",
        "host: web\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n"
        "      httpCookie: {ttl: 1s}\n",
        (
            "PF113",
            10,
            9,
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
            "a hash cookie needs a name",
        ),
    ),
    (
        "DestinationRule",
        "host: web\nsubsets:\n- labels: {version: v1}\n",
        ("PF113", 8, 5, "spec.subsets[0].name", "a subset needs a name"),
    ),
    (
        "DestinationRule",
        "host: web\ntrafficPolicy:\n  portLevelSettings:\n  - loadBalancer: {simple: RANDOM}\n",
        (
            "PF113",
            9,
            7,
            "spec.trafficPolicy.portLevelSettings[0].port.number",
            "a port-level setting needs a port number",
        ),
    ),
    (
        "VirtualService",
        "hosts: [db]\ntcp:\n- match: [{port: 5432}]\n",
        ("PF113", 8, 5, "spec.tcp[0].route", "a tcp rule needs a route"),
    ),
    # PF114: values that are not allowed
    (
        "Service",
        "type: Headless\nports: [{port: 80}]\n",
        (
            "PF114",
            6,
            3,
            "spec.type",
            "string 'Headless' is not one of ClusterIP, NodePort, LoadBalancer, ExternalName",
        ),
    ),
    (
        "Service",
        "ports: [{port: 80, protocol: HTTP}]\n",
        ("PF114", 6, 22, "spec.ports[0].protocol", "string 'HTTP' is not one of TCP, UDP, SCTP"),
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\nlocation: EXTERNAL\n",
        (
            "PF114",
            7,
            3,
            "spec.location",
            "string 'EXTERNAL' is not one of MESH_EXTERNAL, MESH_INTERNAL; "
            "did you mean 'MESH_EXTERNAL'?",
        ),
    ),
    (
        "Service",
        "ports:\n- port: 0\n",
        ("PF114", 7, 5, "spec.ports[0].port", "port 0 is not 1-65535"),
    ),
    (
        "Service",
        "ports:\n- port: 80\n  targetPort: 70000\n",
        ("PF114", 8, 5, "spec.ports[0].targetPort", "targetPort 70000 is not 1-65535"),
    ),
    (
        "Service",
        "ports:\n- {name: http, port: 80}\n- {name: http, port: 81}\n",
        ("PF114", 8, 6, "spec.ports[1].name", "port name 'http' is used twice"),
    ),
    (
        "Service",
        "ports:\n- {name: http, port: 80}\n- {name: http-alt, port: 80, protocol: TCP}\n",
        (
            "PF114",
            8,
            22,
            "spec.ports[1].port",
            "port 80/TCP is used twice; remove one or change its number",
        ),
    ),
    (
        "ServiceEntry",
        "hosts: [api.example.com]\nports:\n- {number: 443, name: https}\n"
        "- {number: 8443, name: https}\n",
        ("PF114", 9, 20, "spec.ports[1].name", "port name 'https' is used twice"),
    ),
    (
        "WorkloadEntry",
        "address: 10.0.0.1\nports: {http: 0}\n",
        ("PF114", 7, 11, "spec.ports.http", "port 0 is not 1-65535"),
    ),
    (
        "WorkloadEntry",
        "address: 10.0.0.1\nweight: 0\n",
        ("PF114", 7, 3, "spec.weight", "a weight must be at least 1 (omit it for 1)"),
    ),
    (
        "WorkloadEntry",
        "address: not_an/address\n",
        ("PF114", 6, 3, "spec.address", "'not_an/address' is not an IP address or host name"),
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\nports:\n- {number: 65536, name: http}\n",
        ("PF114", 8, 6, "spec.ports[0].number", "port 65536 is not 1-65535"),
    ),
    (
        "ServiceEntry",
        "hosts: [a.example.com]\nresolution: STATIC\nendpoints:\n- address: a.backend.net\n",
        (
            "PF114",
            9,
            5,
            "spec.endpoints[0].address",
            "resolution STATIC needs IP addresses, not 'a.backend.net' (use DNS)",
        ),
    ),
    (
        "Gateway",
        "servers:\n- port: {number: 0, protocol: HTTP, name: p}\n  hosts: ['*']\n",
        ("PF114", 7, 12, "spec.servers[0].port.number", "port 0 is not 1-65535"),
    ),
    (
        "Gateway",
        "servers:\n- port: {number: 80, protocol: UDP, name: p}\n  hosts: ['*']\n",
        (
            "PF114",
            7,
            24,
            "spec.servers[0].port.protocol",
            "protocol 'UDP' is not one of HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS",
        ),
    ),
    (
        "VirtualService",
        "hosts: [web]\nhttp:\n- route:\n  - destination: {host: web, port: {number: 0}}\n",
        (
            "PF114",
            9,
            39,
            "spec.http[0].route[0].destination.port.number",
            "port 0 is not 1-65535",
        ),
    ),
    (
        "VirtualService",
        "hosts: [web]\nhttp:\n- match: [{port: 70000}]\n  route:\n  - destination: {host: web}\n",
        ("PF114", 8, 14, "spec.http[0].match[0].port", "port 70000 is not 1-65535"),
    ),
    (
        "VirtualService",
        "hosts: [db]\ntcp:\n- match: [{port: 70000}]\n  route:\n  - destination: {host: db}\n",
        ("PF114", 8, 14, "spec.tcp[0].match[0].port", "port 70000 is not 1-65535"),
    ),
    (
        "VirtualService",
        "hosts: [web]\nhttp:\n- redirect: {uri: /a, port: 70000}\n",
        ("PF114", 8, 25, "spec.http[0].redirect.port", "port 70000 is not 1-65535"),
    ),
    (
        "DestinationRule",
        "host: web\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 0}\n",
        (
            "PF114",
            9,
            14,
            "spec.trafficPolicy.portLevelSettings[0].port.number",
            "port 0 is not 1-65535",
        ),
    ),
    (
        "DestinationRule",
        "host: web\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 80}\n"
        "  - port: {number: 80}\n",
        (
            "PF114",
            10,
            14,
            "spec.trafficPolicy.portLevelSettings[1].port.number",
            "port 80 is configured twice",
        ),
    ),
    (
        "VirtualService",
        VS_RULE + "  fault:\n    delay: {fixedDelay: 1s, percentage: {value: -1}}\n",
        (
            "PF114",
            11,
            44,
            "spec.http[0].fault.delay.percentage.value",
            "a percentage must be 0 to 100, not -1.0",
        ),
    ),
    (
        "VirtualService",
        VS_RULE + "  fault:\n    abort: {httpStatus: 503, percentage: {value: 100.5}}\n",
        (
            "PF114",
            11,
            45,
            "spec.http[0].fault.abort.percentage.value",
            "a percentage must be 0 to 100, not 100.5",
        ),
    ),
    (
        "VirtualService",
        VS_RULE + "  mirror: {host: shadow}\n  mirrorPercentage:\n    value: 150\n",
        (
            "PF114",
            12,
            7,
            "spec.http[0].mirrorPercentage.value",
            "a percentage must be 0 to 100, not 150.0",
        ),
    ),
    (
        "DestinationRule",
        "host: web\ntrafficPolicy:\n  outlierDetection: {maxEjectionPercent: 101}\n",
        (
            "PF114",
            8,
            24,
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
            "101 is not a percentage 0-100",
        ),
    ),
    (
        "VirtualService",
        "hosts: [web]\nhttp:\n- route:\n  - destination: {host: a}\n    weight: 110\n"
        "  - destination: {host: b}\n    weight: -10\n",
        ("PF114", 12, 7, "spec.http[0].route[1].weight", "a weight cannot be negative"),
    ),
    (
        "VirtualService",
        VS_RULE + "  retries: {attempts: -1}\n",
        ("PF114", 10, 15, "spec.http[0].retries.attempts", "attempts cannot be negative"),
    ),
    (
        "VirtualService",
        "hosts: ['*']\n",
        ("PF114", 6, 11, "spec.hosts[0]", "host '*' is only allowed for gateways, not mesh"),
    ),
    (
        "VirtualService",
        "hosts: [web]\nhttp:\n- route:\n  - destination: {host: web}\n    weight: 4294967296\n",
        ("PF114", 10, 7, "spec.http[0].route[0].weight", "4294967296 is out of range for int32"),
    ),
    (
        "DestinationRule",
        "host: web\ntrafficPolicy:\n  loadBalancer:\n"
        "    consistentHash: {useSourceIp: true, minimumRingSize: '-1'}\n",
        (
            "PF114",
            9,
            43,
            "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
            "-1 is out of range for uint64",
        ),
    ),
]


@pytest.mark.parametrize(("kind", "spec", "expected"), CASES_PF112_TO_PF114)
def test_pf112_pf113_pf114_cases(
    kind: str, spec: str, expected: tuple[str, int, int, str, str]
) -> None:
    text = doc(kind, spec, api="v1" if kind == "Service" else "networking.istio.io/v1")
    result = read_text(FILE, text)
    assert result.resources == ()
    assert [(d.code, d.line, d.column, d.field, d.message) for d in diagnose(text)] == [expected]
    (diagnostic,) = diagnose(text)
    assert diagnostic.severity is ERROR
    assert diagnostic.resource == f"{kind} default/x"


# --- PF115-PF120 ------------------------------------------------------------------------------


def test_pf115_a_regex_that_does_not_compile() -> None:
    check(
        doc(
            "VirtualService",
            "hosts: [web]\nhttp:\n- match:\n  - headers:\n      x-user: {regex: '(jason'}\n"
            "  route:\n  - destination: {host: web}\n",
            name="web",
        ),
        error(
            "PF115",
            10,
            18,
            "VirtualService default/web",
            "spec.http[0].match[0].headers.x-user.regex",
            "invalid regex '(jason': missing ), unterminated subpattern at position 0",
        ),
        "missing ), unterminated subpattern",
    )


@pytest.mark.parametrize("regex", ["/a(?=b)", "/a(?!b)", "(?<=a)b", "(a)\\1"])
def test_pf115_lookaround_and_backreferences_are_rejected_for_re2(regex: str) -> None:
    text = doc(
        "VirtualService",
        f"hosts: [web]\nhttp:\n- match:\n  - uri: {{regex: '{regex}'}}\n"
        "  route:\n  - destination: {host: web}\n",
    )
    assert [(d.code, d.line, d.column, d.field, d.message) for d in diagnose(text)] == [
        (
            "PF115",
            9,
            13,
            "spec.http[0].match[0].uri.regex",
            f"invalid regex {regex!r}: lookaround and backreferences are not supported by "
            "Envoy's RE2 engine",
        )
    ]


@pytest.mark.parametrize("regex", ["/a++", "/a*+", "/a{2}+", "(?>a)b", "(?P<x>a)(?P=x)"])
def test_pf115_possessive_quantifiers_and_atomic_groups_are_rejected_for_re2(regex: str) -> None:
    text = doc(
        "VirtualService",
        f"hosts: [web]\nhttp:\n- match:\n  - uri: {{regex: '{regex}'}}\n"
        "  route:\n  - destination: {host: web}\n",
    )
    assert [(d.code, d.field, d.message) for d in diagnose(text)] == [
        (
            "PF115",
            "spec.http[0].match[0].uri.regex",
            f"invalid regex {regex!r}: atomic groups, possessive quantifiers, conditionals and "
            "named backreferences are not supported by Envoy's RE2 engine",
        )
    ]


@pytest.mark.parametrize("regex", ["/a\\++", "/[+]+", "/a+b?"])
def test_pf115_an_escaped_plus_or_a_class_before_a_quantifier_is_no_possessive(
    regex: str,
) -> None:
    text = doc(
        "VirtualService",
        f"hosts: [web]\nhttp:\n- match:\n  - uri: {{regex: '{regex}'}}\n"
        "  route:\n  - destination: {host: web}\n",
    )
    assert diagnose(text) == []


@pytest.mark.parametrize(
    ("regex", "problem"),
    [
        ("a{4294967296}", "the repetition number is too large"),
        ("(" * 1200 + ")" * 1200, "the pattern is nested too deeply"),
    ],
)
def test_pf115_regexes_too_large_for_the_compiler_are_findings_not_crashes(
    regex: str, problem: str
) -> None:
    text = doc(
        "VirtualService",
        f"hosts: [web]\nhttp:\n- match:\n  - uri: {{regex: '{regex}'}}\n"
        "  route:\n  - destination: {host: web}\n",
    )
    (diagnostic,) = diagnose(text)
    assert (diagnostic.code, diagnostic.field) == ("PF115", "spec.http[0].match[0].uri.regex")
    assert diagnostic.message.endswith(f": {problem}")


def test_pf116_a_malformed_duration() -> None:
    check(
        doc("VirtualService", VS_RULE + "  timeout: 5 seconds\n", name="web"),
        error(
            "PF116",
            10,
            5,
            "VirtualService default/web",
            "spec.http[0].timeout",
            "invalid duration '5 seconds': write it like 1.5s or 100ms",
        ),
        "write it like 1.5s or 100ms",
    )


@pytest.mark.parametrize(
    ("policy", "field", "message"),
    [
        (
            "outlierDetection: {interval: 10}",
            "spec.trafficPolicy.outlierDetection.interval",
            "expected a duration like 1.5s or 100ms, found int 10",
        ),
        (
            "outlierDetection: {baseEjectionTime: -30s}",
            "spec.trafficPolicy.outlierDetection.baseEjectionTime",
            "invalid duration '-30s': write it like 1.5s or 100ms",
        ),
        (
            "connectionPool: {tcp: {connectTimeout: 1d}}",
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
            "invalid duration '1d': write it like 1.5s or 100ms",
        ),
        (
            "connectionPool: {http: {idleTimeout: 300000000000h}}",
            "spec.trafficPolicy.connectionPool.http.idleTimeout",
            "duration '300000000000h' is longer than the longest Istio takes, 2562047h (about "
            "292 years)",
        ),
        (
            "loadBalancer: {consistentHash: {httpCookie: {name: s, ttl: 1 hour}}}",
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.ttl",
            "invalid duration '1 hour': write it like 1.5s or 100ms",
        ),
    ],
)
def test_pf116_durations_of_a_destination_rule(policy: str, field: str, message: str) -> None:
    text = doc("DestinationRule", f"host: web\ntrafficPolicy:\n  {policy}\n")
    assert [(d.code, d.field, d.message) for d in diagnose(text)] == [("PF116", field, message)]


def test_pf116_retry_per_try_timeout() -> None:
    text = doc("VirtualService", VS_RULE + "  retries: {attempts: 2, perTryTimeout: 1}\n")
    assert [(d.code, d.line, d.column, d.field) for d in diagnose(text)] == [
        ("PF116", 10, 28, "spec.http[0].retries.perTryTimeout")
    ]


def test_pf117_several_destinations_whose_weights_sum_to_zero() -> None:
    check(
        doc(
            "VirtualService",
            "hosts: [web]\nhttp:\n- route:\n  - destination: {host: web, subset: v1}\n"
            "    weight: 0\n  - destination: {host: web, subset: v2}\n",
            name="web",
        ),
        error(
            "PF117",
            8,
            5,
            "VirtualService default/web",
            "spec.http[0].route",
            "route weights sum to 0 (0, unset); weights are relative, "
            "give at least one destination a weight above 0",
        ),
        "give at least one destination a weight above 0",
    )


def test_pf117_weights_summing_past_what_envoy_can_add_up() -> None:
    text = doc(
        "VirtualService",
        "hosts: [db]\ntcp:\n- route:\n  - destination: {host: db, subset: a}\n"
        "    weight: 2147483647\n  - destination: {host: db, subset: b}\n    weight: 2147483647\n"
        "  - destination: {host: db, subset: c}\n    weight: 2\n",
    )
    assert [(d.code, d.line, d.column, d.field, d.message) for d in diagnose(text)] == [
        (
            "PF117",
            8,
            5,
            "spec.tcp[0].route",
            "route weights sum to 4294967296 (2147483647, 2147483647, 2); weights are "
            "relative, keep the sum at most 4294967295",
        )
    ]


@pytest.mark.parametrize(
    "route",
    [
        # relative weights: 1/4 and 3/4
        "  - destination: {host: web, subset: v1}\n    weight: 1\n"
        "  - destination: {host: web, subset: v2}\n    weight: 3\n",
        # an unset weight among several is 0; the other gets everything
        "  - destination: {host: web, subset: v1}\n    weight: 50\n"
        "  - destination: {host: web, subset: v2}\n",
        # a single destination gets everything whatever its weight
        "  - destination: {host: web}\n    weight: 0\n",
        "  - destination: {host: web}\n    weight: 30\n",
    ],
)
def test_weights_are_relative_and_need_not_sum_to_100(route: str) -> None:
    text = doc("VirtualService", "hosts: [web]\nhttp:\n- route:\n" + route, name="web")
    assert diagnose(text) == []


def test_relative_weights_are_kept_as_written_in_the_model() -> None:
    result = read_text(
        FILE,
        doc(
            "VirtualService",
            "hosts: [web]\nhttp:\n- route:\n  - destination: {host: web, subset: v1}\n"
            "    weight: 1\n  - destination: {host: web, subset: v2}\n    weight: 3\n"
            "  - destination: {host: web, subset: v3}\n",
            name="web",
        ),
    )
    (resource,) = result.resources
    (rule,) = resource.spec.http  # type: ignore[union-attr]
    assert [(d.subset, d.weight) for d in rule.destinations] == [("v1", 1), ("v2", 3), ("v3", 0)]


def test_an_empty_entry_in_a_route_list_is_reported_not_a_crash() -> None:
    text = doc(
        "VirtualService",
        "hosts: [web]\nhttp:\n- route:\n  - destination: {host: web, subset: v1}\n"
        "    weight: 80\n  - null\n",
        name="web",
    )
    codes = [(d.code, d.field) for d in diagnose(text)]
    assert codes == [("PF113", "spec.http[0].route[1].destination.host")]
    assert read_text(FILE, text).ok is False


def test_pf118_an_unknown_load_balancer() -> None:
    check(
        doc(
            "DestinationRule",
            "host: web\ntrafficPolicy:\n  loadBalancer:\n    simple: LEAST_CONNECTIONS\n",
            name="web",
        ),
        error(
            "PF118",
            9,
            7,
            "DestinationRule default/web",
            "spec.trafficPolicy.loadBalancer.simple",
            "string 'LEAST_CONNECTIONS' is not one of UNSPECIFIED, LEAST_CONN, RANDOM, "
            "PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST; did you mean 'LEAST_CONN'?",
        ),
        "did you mean 'LEAST_CONN'?",
    )


def test_pf118_in_a_subsets_port_level_setting() -> None:
    text = doc(
        "DestinationRule",
        "host: web\nsubsets:\n- name: v1\n  trafficPolicy:\n    portLevelSettings:\n"
        "    - port: {number: 80}\n      loadBalancer: {simple: FASTEST}\n",
    )
    assert [(d.code, d.line, d.column, d.field) for d in diagnose(text)] == [
        ("PF118", 12, 24, "spec.subsets[0].trafficPolicy.portLevelSettings[0].loadBalancer.simple")
    ]


def test_pf119_a_duplicate_subset_name_points_at_the_first() -> None:
    check(
        doc(
            "DestinationRule",
            "host: web\nsubsets:\n- name: v1\n  labels: {version: v1}\n- name: v2\n"
            "  labels: {version: v2}\n- name: v1\n  labels: {version: v3}\n",
            name="web",
        ),
        error(
            "PF119",
            12,
            5,
            "DestinationRule default/web",
            "spec.subsets[2].name",
            "subset 'v1' is already defined at spec.subsets[0]; subset names must be unique",
        ),
        "subset names must be unique",
    )


def test_pf120_exact_and_prefix_in_one_string_match() -> None:
    check(
        doc(
            "VirtualService",
            "hosts: [web]\nhttp:\n- match:\n  - uri:\n      exact: /a\n      prefix: /b\n"
            "  route:\n  - destination: {host: web}\n",
            name="web",
        ),
        error(
            "PF120",
            11,
            9,
            "VirtualService default/web",
            "spec.http[0].match[0].uri.prefix",
            "'prefix' and 'exact' exclude each other: set only one",
        ),
        "set only one",
    )


def test_pf120_route_and_redirect_in_one_rule() -> None:
    check(
        doc("VirtualService", VS_RULE + "  redirect: {uri: /x}\n", name="web"),
        error(
            "PF120",
            10,
            5,
            "VirtualService default/web",
            "spec.http[0].redirect",
            "a rule has either route or redirect, not both",
        ),
        "either route or redirect, not both",
    )


def test_pf120_simple_and_consistent_hash_load_balancers() -> None:
    check(
        doc(
            "DestinationRule",
            "host: web\ntrafficPolicy:\n  loadBalancer:\n    simple: RANDOM\n"
            "    consistentHash:\n      useSourceIp: true\n",
            name="web",
        ),
        error(
            "PF120",
            10,
            7,
            "DestinationRule default/web",
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "'consistentHash' and 'simple' exclude each other: set only one",
        ),
        "set only one",
    )


@pytest.mark.parametrize(
    ("kind", "spec", "expected"),
    [
        (
            "VirtualService",
            "hosts: [web]\nhttp:\n- redirect: {uri: /x}\n  rewrite: {uri: /y}\n",
            ("PF120", 9, 5, "spec.http[0].rewrite", "a redirect rule cannot also rewrite"),
        ),
        (
            "ServiceEntry",
            "hosts: [db.internal]\nresolution: STATIC\nendpoints:\n- address: 10.0.0.1\n"
            "workloadSelector:\n  labels: {app: db}\n",
            (
                "PF120",
                10,
                3,
                "spec.workloadSelector",
                "use either endpoints or workloadSelector, not both",
            ),
        ),
        (
            "DestinationRule",
            "host: web\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n"
            "      httpHeaderName: x-user\n      useSourceIp: true\n",
            (
                "PF120",
                11,
                9,
                "spec.trafficPolicy.loadBalancer.consistentHash.useSourceIp",
                "'useSourceIp' and 'httpHeaderName' exclude each other: set only one",
            ),
        ),
        (
            "VirtualService",
            VS_RULE + "  fault:\n    abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}\n",
            (
                "PF120",
                11,
                32,
                "spec.http[0].fault.abort.grpcStatus",
                "'grpcStatus' and 'httpStatus' exclude each other: set only one",
            ),
        ),
    ],
)
def test_pf120_other_exclusive_fields(
    kind: str, spec: str, expected: tuple[str, int, int, str, str]
) -> None:
    text = doc(kind, spec)
    assert [(d.code, d.line, d.column, d.field, d.message) for d in diagnose(text)] == [expected]


def test_a_service_entry_listing_port_443_twice_is_rejected_before_translation() -> None:
    text = doc(
        "ServiceEntry",
        "hosts: [api.example.com]\nresolution: DNS\nports:\n"
        "- {number: 443, name: https, protocol: TLS}\n"
        "- {number: 443, name: https-2, protocol: TLS}\n",
        name="api",
    )
    assert read_text(FILE, text).resources == ()
    assert diagnose(text) == [
        error(
            "PF114",
            10,
            6,
            "ServiceEntry default/api",
            "spec.ports[1].number",
            "port 443 is used twice; remove one or change its number",
        )
    ]


def test_a_service_may_serve_one_port_number_over_tcp_and_udp_as_in_kubernetes() -> None:
    text = doc(
        "Service",
        "ports:\n- {name: dns, port: 53, protocol: UDP}\n- {name: dns-tcp, port: 53}\n",
        api="v1",
    )
    assert diagnose(text) == []


# --- files with several documents and problems -------------------------------------------------


def test_a_bad_document_does_not_hide_the_problems_or_resources_of_the_others() -> None:
    text = (
        doc("WorkloadEntry", "address: 10.0.0.1\n", name="good")
        + "---\n"
        + doc("WorkloadEntry", "adress: 10.0.0.2\n", name="bad")
        + "---\n"
        + doc("DestinationRule", "host: web\n", name="dr")
    )
    result = read_text(FILE, text)
    assert [r.meta.name for r in result.resources] == ["good", "dr"]
    assert result.ok is False
    assert [(d.code, d.line, d.column, d.resource, d.field) for d in diagnose(text)] == [
        ("PF110", 13, 3, "WorkloadEntry default/bad", "spec.adress"),
    ]


def test_every_finding_of_a_document_is_reported_not_just_the_first() -> None:
    text = doc(
        "VirtualService",
        "hosts: [web]\nhttp:\n- route:\n  - destination: {host: web}\n    weight: 60\n"
        "  timeout: 1x\n  retries: {attempts: 1, perTryTimeout: soon}\n",
    )
    assert [(d.code, d.line, d.field) for d in diagnose(text)] == [
        ("PF116", 11, "spec.http[0].timeout"),
        ("PF116", 12, "spec.http[0].retries.perTryTimeout"),
    ]


def test_every_per_resource_code_is_covered_by_these_tests() -> None:
    per_resource = sorted(c for c in CODES if c < "PF200")
    assert per_resource == [
        "PF100",
        "PF101",
        "PF102",
        "PF103",
        "PF104",
        "PF105",
        "PF106",
        "PF107",
        "PF108",
        "PF109",
        "PF110",
        "PF111",
        "PF112",
        "PF113",
        "PF114",
        "PF115",
        "PF116",
        "PF117",
        "PF118",
        "PF119",
        "PF120",
        "PF121",
        "PF122",
        "PF123",
        "PF124",
    ]


def test_pf124_a_workload_without_address_on_another_network_is_a_warning() -> None:
    assert diagnose(doc("WorkloadEntry", "network: west\nlabels: {app: web}\n")) == [
        warning(
            "PF111",
            6,
            3,
            "WorkloadEntry default/x",
            "spec.network",
            "field 'network' is valid Istio but Pilotfish does not act on it yet; it is ignored",
        ),
        warning(
            "PF124",
            6,
            3,
            "WorkloadEntry default/x",
            "spec.network",
            "the workload has no address: it is on network 'west', reachable only through "
            "that network's gateway, which Pilotfish does not route to; it receives no traffic",
        ),
    ]


# --- PF123: TLS is asked for but not supported yet -------------------------------------------

UPSTREAM_TLS = (
    "TLS to the upstream (mode {}) is not supported yet; the policy is refused rather than "
    "its traffic sent as plaintext (set mode: DISABLE only if plaintext is intended)"
)


def test_pf123_a_gateway_server_with_tls_settings_is_refused_not_served_as_plaintext() -> None:
    check(
        doc(
            "Gateway",
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: ['*']\n"
            "  tls: {mode: SIMPLE, credentialName: cert}\n",
            name="edge",
        ),
        error(
            "PF123",
            9,
            5,
            "Gateway default/edge",
            "spec.servers[0].tls",
            "TLS on a gateway server (credentialName, mode) is not supported yet; the server "
            "is refused rather than served as plaintext (only tls.httpsRedirect is supported)",
        ),
        "is refused rather than served as plaintext",
    )


@pytest.mark.parametrize("protocol", ["HTTPS", "TLS"])
def test_pf123_an_https_or_tls_server_without_tls_settings_is_refused(protocol: str) -> None:
    check(
        doc(
            "Gateway",
            f"servers:\n- port: {{number: 443, protocol: {protocol}, name: p}}\n  hosts: ['*']\n",
            name="edge",
        ),
        error(
            "PF123",
            7,
            25,
            "Gateway default/edge",
            "spec.servers[0].port.protocol",
            f"a {protocol} server needs TLS, which is not supported yet; the server is "
            "refused rather than served as plaintext",
        ),
        "not supported yet",
    )


@pytest.mark.parametrize(
    ("spec", "field", "mode"),
    [
        ("trafficPolicy:\n  tls: {mode: ISTIO_MUTUAL}\n", "spec.trafficPolicy.tls", "ISTIO_MUTUAL"),
        (
            "trafficPolicy:\n  portLevelSettings:\n  - port: {number: 80}\n"
            "    tls: {mode: SIMPLE, sni: web.example.com}\n",
            "spec.trafficPolicy.portLevelSettings[0].tls",
            "SIMPLE",
        ),
        (
            "subsets:\n- name: v1\n  labels: {version: v1}\n  trafficPolicy:\n"
            "    tls: {mode: MUTUAL}\n",
            "spec.subsets[0].trafficPolicy.tls",
            "MUTUAL",
        ),
    ],
)
def test_pf123_a_destination_rule_asking_for_upstream_tls_is_refused(
    spec: str, field: str, mode: str
) -> None:
    text = doc("DestinationRule", "host: web\n" + spec, name="web")
    assert read_text(FILE, text).ok is False
    assert [(d.severity, d.code, d.field, d.message) for d in diagnose(text)] == [
        (ERROR, "PF123", field, UPSTREAM_TLS.format(mode))
    ]


def test_pf123_tls_mode_disable_is_plaintext_as_asked_and_only_a_warning() -> None:
    text = doc("DestinationRule", "host: web\ntrafficPolicy:\n  tls: {mode: DISABLE}\n")
    assert read_text(FILE, text).ok is True
    assert [(d.code, d.field) for d in diagnose(text)] == [("PF111", "spec.trafficPolicy.tls")]


def test_pf123_virtual_service_tls_routes_are_refused() -> None:
    text = doc(
        "VirtualService",
        "hosts: [web]\ntls:\n- match:\n  - sniHosts: [web]\n  route:\n"
        "  - destination: {host: web}\n",
        name="web",
    )
    assert read_text(FILE, text).ok is False
    assert diagnose(text) == [
        error(
            "PF123",
            7,
            3,
            "VirtualService default/web",
            "spec.tls",
            "tls routes (routing TLS connections by SNI) are not supported yet; the "
            "VirtualService is refused rather than its TLS traffic routed another way",
        )
    ]


def test_https_redirect_on_an_http_server_is_read_without_a_finding() -> None:
    text = doc(
        "Gateway",
        "servers:\n- port: {number: 80, protocol: HTTP, name: p}\n  hosts: [shop.example.com]\n"
        "  tls: {httpsRedirect: true}\n",
    )
    result = read_text(FILE, text)
    assert result.findings == ()
    (resource,) = result.resources
    assert [s.https_redirect for s in resource.spec.servers] == [True]  # type: ignore[union-attr]


def test_https_redirect_on_a_tcp_server_is_an_error() -> None:
    text = doc(
        "Gateway",
        "servers:\n- port: {number: 80, protocol: TCP, name: p}\n  hosts: ['*']\n"
        "  tls: {httpsRedirect: true}\n",
    )
    assert [(d.code, d.field, d.message) for d in diagnose(text)] == [
        (
            "PF114",
            "spec.servers[0].tls.httpsRedirect",
            "httpsRedirect applies to HTTP servers, not TCP; remove it",
        )
    ]


# --- real-world Istio YAML --------------------------------------------------------------------

BOOKINFO = """
apiVersion: v1
kind: Service
metadata:
  name: productpage
  labels:
    app: productpage
    service: productpage
spec:
  ports:
  - port: 9080
    name: http
  selector:
    app: productpage
---
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata:
  name: bookinfo-gateway
spec:
  selector:
    istio: ingressgateway # use istio default controller
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "*"
    tls:
      httpsRedirect: true
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: bookinfo
spec:
  hosts:
  - "*"
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        exact: /productpage
    - uri:
        prefix: /static
    - uri:
        exact: /login
    route:
    - destination:
        host: productpage
        port:
          number: 9080
    corsPolicy:
      allowOrigins:
      - exact: https://bookinfo.example.com
      allowMethods: [GET, POST]
      maxAge: "24h"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  exportTo: ["."]
  trafficPolicy:
    tls:
      mode: DISABLE
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"""


def test_real_world_bookinfo_yaml_with_extra_istio_fields_loads_with_warnings_only() -> None:
    text = dedent(BOOKINFO)
    result = read_text(FILE, text)
    assert result.ok is True
    assert [r.meta.label for r in result.resources] == [
        "Service default/productpage",
        "Gateway default/bookinfo-gateway",
        "VirtualService default/bookinfo",
        "DestinationRule default/reviews",
    ]
    assert [
        (d.severity, d.code, d.line, d.column, d.resource, d.field) for d in diagnose(text)
    ] == [
        (WARNING, "PF111", 54, 5, "VirtualService default/bookinfo", "spec.http[0].corsPolicy"),
        (WARNING, "PF111", 68, 5, "DestinationRule default/reviews", "spec.trafficPolicy.tls"),
    ]


def test_pf114_a_maglev_table_size_that_is_not_prime() -> None:
    text = doc(
        "DestinationRule",
        "host: web\ntrafficPolicy:\n  loadBalancer:\n    consistentHash:\n"
        "      useSourceIp: true\n      maglev: {tableSize: 1000}\n",
    )
    assert [(d.code, d.field, d.message) for d in diagnose(text)] == [
        (
            "PF114",
            "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
            "the maglev table size must be a prime number, not 1000 (65537 is the default)",
        )
    ]
