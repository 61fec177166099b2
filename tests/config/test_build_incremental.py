"""A builder that remembers gives exactly what a fresh builder gives, for any sequence.

The store keeps one :class:`MeshBuilder` for the life of the process and feeds
it one candidate file set after another (including last-known-good trials that
are rolled back). Whatever the sequence, each result must equal the result of a
new builder given the same files: the same mesh and the same findings.
"""

from __future__ import annotations

import random
import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.config.build import MeshBuilder, build_mesh
from controlplane.config.document import read_text
from controlplane.config.resources import Resource

DOCS = {
    "svc-a": """
        apiVersion: v1
        kind: Service
        metadata: {name: a}
        spec: {selector: {app: a}, ports: [{name: http, port: 80}]}
    """,
    "svc-a-two-ports": """
        apiVersion: v1
        kind: Service
        metadata: {name: a}
        spec:
          selector: {app: a}
          ports: [{name: http, port: 80}, {name: http-admin, port: 81, targetPort: admin}]
    """,
    "svc-b": """
        apiVersion: v1
        kind: Service
        metadata: {name: b}
        spec: {selector: {app: b}, ports: [{name: http, port: 80}]}
    """,
    "svc-all": """
        apiVersion: v1
        kind: Service
        metadata: {name: everyone}
        spec: {selector: {}, ports: [{name: http, port: 8080}]}
    """,
    "svc-db-prod": """
        apiVersion: v1
        kind: Service
        metadata: {name: db, namespace: prod}
        spec: {selector: {app: db}, ports: [{name: tcp, port: 5432}]}
    """,
    "we-a1": """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: a1}
        spec: {address: 10.0.0.1, labels: {app: a, version: v1}, ports: {admin: 9001}}
    """,
    "we-a1-heavy": """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: a1}
        spec: {address: 10.0.0.11, weight: 5, labels: {app: a, version: v1}}
    """,
    "we-a2": """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: a2}
        spec: {address: 10.0.0.2, labels: {app: a, version: v2}}
    """,
    "we-b1": """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: b1}
        spec: {address: 10.0.1.1, labels: {app: b, version: v1}}
    """,
    "we-db": """
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: db1, namespace: prod}
        spec: {address: 10.0.2.1, labels: {app: db}}
    """,
    "se-db-prod": """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: db-external}
        spec:
          hosts: [db.prod]
          ports: [{number: 5432, name: tcp, protocol: TCP}]
          resolution: STATIC
          endpoints: [{address: 192.0.2.1}]
    """,
    "se-wildcard": """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: example}
        spec:
          hosts: ["*.example.com"]
          ports: [{number: 443, name: https, protocol: HTTPS}]
          resolution: NONE
    """,
    "se-steals-a": """
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: a-entry}
        spec:
          hosts: [a.default.svc.cluster.local]
          ports: [{number: 80, name: http, protocol: HTTP}]
          workloadSelector: {labels: {app: b}}
    """,
    "dr-a": """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: a}
        spec:
          host: a
          subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
    """,
    "dr-a-again": """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: a-again}
        spec:
          host: a.default.svc.cluster.local
          subsets: [{name: v3, labels: {version: v3}}]
    """,
    "dr-a-v1-only": """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: a-narrow}
        spec:
          host: a.default
          subsets: [{name: v1, labels: {version: v1}}]
    """,
    "dr-db": """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: db}
        spec: {host: db.prod, trafficPolicy: {loadBalancer: {simple: RANDOM}}}
    """,
    "dr-ghost": """
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {name: ghost}
        spec: {host: ghost.invalid.test}
    """,
    "vs-a": """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: a}
        spec:
          hosts: [a]
          http:
          - match: [{headers: {x-user: {exact: jason}}}]
            route: [{destination: {host: a, subset: v2}}]
          - route:
            - {destination: {host: a, subset: v1}, weight: 70}
            - {destination: {host: b}, weight: 30}
    """,
    "vs-a-rival": """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: a-rival}
        spec:
          hosts: [a.default.svc.cluster.local]
          http: [{route: [{destination: {host: a, port: {number: 80}}}]}]
    """,
    "vs-db": """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: db}
        spec:
          hosts: [db.prod]
          tcp: [{route: [{destination: {host: db.prod}}]}]
    """,
    "vs-wild": """
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {name: wild}
        spec:
          hosts: [api.example.com]
          gateways: [edge]
          http: [{route: [{destination: {host: api.example.com}}]}]
    """,
    "gw-edge": """
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata: {name: edge}
        spec:
          selector: {istio: ingressgateway}
          servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
    """,
}

# Each path has two versions; a step picks, per path, no file or one of them.
FILES: dict[str, tuple[list[str], list[str]]] = {
    "10-services.yaml": (["svc-a", "svc-b"], ["svc-a-two-ports", "svc-b", "svc-all"]),
    "20-workloads.yaml": (["we-a1", "we-a2", "we-b1"], ["we-a1-heavy", "we-b1", "we-db"]),
    "30-entries.yaml": (["se-db-prod", "se-wildcard"], ["se-steals-a", "svc-db-prod"]),
    "40-rules.yaml": (["dr-a", "dr-db"], ["dr-a", "dr-a-again", "dr-ghost"]),
    "50-routes.yaml": (["vs-a", "vs-db"], ["vs-a", "vs-a-rival", "vs-wild"]),
    "60-edge.yaml": (["gw-edge"], ["gw-edge", "we-a1"]),
    "70-more.yaml": (["we-a2", "svc-b", "dr-a-v1-only"], ["dr-db", "vs-db", "we-db"]),
    "05-early.yaml": (["dr-a-again", "vs-a-rival"], ["se-steals-a", "dr-a-v1-only"]),
}
PATHS = sorted(FILES)


def _parse(path: str, names: list[str]) -> tuple[Resource, ...]:
    text = "---\n".join(textwrap.dedent(DOCS[name]).strip() + "\n" for name in names)
    result = read_text(path, text)
    assert result.ok, result.findings
    return result.resources


VERSIONS = {path: tuple(_parse(path, v) for v in versions) for path, versions in FILES.items()}


def _files(choice: list[int | None]) -> dict[str, tuple[Resource, ...]]:
    return {
        path: VERSIONS[path][pick]
        for path, pick in zip(PATHS, choice, strict=True)
        if pick is not None
    }


# A step either picks new files or (None) rebuilds the same files with another
# ``changed`` set, as the last-known-good trials do.
step = st.tuples(
    st.one_of(
        st.none(),
        st.lists(st.sampled_from([None, 0, 1]), min_size=len(PATHS), max_size=len(PATHS)),
    ),
    st.one_of(st.none(), st.frozensets(st.sampled_from(PATHS))),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, min_size=1, max_size=12))
def test_any_sequence_of_builds_equals_a_fresh_build(steps: list) -> None:  # type: ignore[type-arg]
    builder = MeshBuilder()
    files: dict[str, tuple[Resource, ...]] = {}
    for choice, changed in steps:
        if choice is not None:
            files = _files(choice)
        remembered = builder.build(files, changed)
        fresh = MeshBuilder().build(files, changed)
        assert remembered.mesh == fresh.mesh
        assert remembered.findings == fresh.findings


def test_the_pool_exercises_conflicts_canonical_hosts_and_wildcards() -> None:
    everything = [r for versions in VERSIONS.values() for v in versions for r in v]
    codes = {f.code for f in build_mesh(everything).findings}
    assert {"PF206", "PF208", "PF209", "PF210", "PF211"} <= codes


def test_a_fresh_build_does_not_depend_on_file_order() -> None:
    files = _files([1, 1, 0, 1, 1, 1, 1, 0])
    expected = MeshBuilder().build(files)
    rng = random.Random(3)
    for _ in range(10):
        paths = list(files)
        rng.shuffle(paths)
        again = MeshBuilder().build({p: files[p] for p in paths})
        assert again.mesh == expected.mesh
        assert again.findings == expected.findings
