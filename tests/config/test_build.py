"""build_mesh: the model joined from several resources, and the checks that span them."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

from controlplane.config.build import BuildResult, MeshBuilder, build_mesh
from controlplane.config.diagnostics import Diagnostic, Severity
from controlplane.config.document import read_text
from controlplane.config.resources import Resource
from controlplane.config.store import validate_directory
from controlplane.model import (
    Endpoint,
    Gateway,
    GatewayServer,
    Locality,
    Mesh,
    Protocol,
    Resolution,
    Service,
    ServicePort,
)
from controlplane.translate.route_configs import gateway_route_configs

ERROR, WARNING = Severity.ERROR, Severity.WARNING
REVIEWS_HOST = "reviews.default.svc.cluster.local"
VS_REVIEWS = "VirtualService default/reviews"


def yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def resources(files: dict[str, str]) -> list[Resource]:
    out: list[Resource] = []
    for name, text in files.items():
        result = read_text(name, yaml(text))
        assert result.findings == ()
        out.extend(result.resources)
    return out


def build(files: dict[str, str]) -> BuildResult:
    return build_mesh(resources(files))


def validate(root: Path, files: dict[str, str]) -> list[Diagnostic]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml(text))
    return validate_directory(root)


def error(
    code: str, file: str, line: int, column: int, resource: str, field: str, message: str
) -> Diagnostic:
    return Diagnostic(ERROR, code, file, line, column, resource, field, message)


def warning(
    code: str, file: str, line: int, column: int, resource: str, field: str, message: str
) -> Diagnostic:
    return Diagnostic(WARNING, code, file, line, column, resource, field, message)


def targets(mesh: Mesh, host: str, port: int) -> list[tuple[str, int]]:
    """(address, port) of each endpoint of ``host`` for service port ``port``."""
    service = mesh.service(host)
    assert service is not None
    return [(e.address, e.port) for e in service.endpoints_for(port)]


# Ten lines: the port name is on line 9, the port number on line 10.
REVIEWS = """
    apiVersion: v1
    kind: Service
    metadata:
      name: reviews
    spec:
      selector:
        app: reviews
      ports:
      - name: http
        port: 9080
    """

REVIEWS_WORKLOADS = """
    apiVersion: networking.istio.io/v1
    kind: WorkloadEntry
    metadata: {name: reviews-v1}
    spec: {address: 10.0.0.1, labels: {app: reviews, version: v1}}
    ---
    apiVersion: networking.istio.io/v1
    kind: WorkloadEntry
    metadata: {name: reviews-v2}
    spec: {address: 10.0.0.2, labels: {app: reviews, version: v2}}
    """

REVIEWS_RULE = """
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: reviews}
    spec:
      host: reviews
      subsets:
      - {name: v1, labels: {version: v1}}
      - {name: v2, labels: {version: v2}}
    """


# --- the model -------------------------------------------------------------------------------


def test_a_service_selects_workload_entries_of_its_own_namespace_by_all_selector_labels() -> None:
    result = build(
        {
            "a.yaml": """
            apiVersion: v1
            kind: Service
            metadata: {name: reviews, namespace: shop}
            spec:
              selector: {app: reviews, tier: backend}
              ports: [{name: http, port: 9080}]
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: same-namespace, namespace: shop}
            spec: {address: 10.0.0.1, labels: {app: reviews, tier: backend, version: v1}}
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: other-namespace, namespace: other}
            spec: {address: 10.0.0.2, labels: {app: reviews, tier: backend}}
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: partial-labels, namespace: shop}
            spec: {address: 10.0.0.3, labels: {app: reviews}}
            """
        }
    )
    assert result.findings == ()
    assert result.mesh.services == (
        Service(
            host="reviews.shop.svc.cluster.local",
            namespace="shop",
            name="reviews",
            ports=(ServicePort("http", 9080, Protocol.HTTP, None),),
            endpoints=(
                (
                    9080,
                    (
                        Endpoint(
                            "10.0.0.1",
                            9080,
                            (("app", "reviews"), ("tier", "backend"), ("version", "v1")),
                        ),
                    ),
                ),
            ),
            source="Service shop/reviews",
        ),
    )


def test_a_workload_port_named_like_the_service_port_overrides_target_port() -> None:
    result = build(
        {
            "a.yaml": """
            apiVersion: v1
            kind: Service
            metadata: {name: hello}
            spec:
              selector: {app: hello}
              ports: [{name: http, port: 8080, targetPort: 9090}]
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: named}
            spec: {address: 10.0.0.1, labels: {app: hello}, ports: {http: 9101}}
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: unnamed}
            spec: {address: 10.0.0.2, labels: {app: hello}, ports: {admin: 9999}}
            """
        }
    )
    assert targets(result.mesh, "hello.default.svc.cluster.local", 8080) == [
        ("10.0.0.1", 9101),
        ("10.0.0.2", 9090),
    ]


def test_without_target_port_the_endpoint_port_is_the_service_port() -> None:
    result = build(
        {
            "a.yaml": """
            apiVersion: v1
            kind: Service
            metadata: {name: hello}
            spec:
              selector: {app: hello}
              ports: [{port: 8080}]
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: w}
            spec: {address: 10.0.0.1, labels: {app: hello}}
            """
        }
    )
    assert targets(result.mesh, "hello.default.svc.cluster.local", 8080) == [("10.0.0.1", 8080)]


def test_a_named_target_port_is_looked_up_in_each_workloads_ports() -> None:
    result = build(
        {
            "a.yaml": """
            apiVersion: v1
            kind: Service
            metadata: {name: web}
            spec:
              selector: {app: web}
              ports: [{name: http, port: 80, targetPort: web-port}]
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: a}
            spec: {address: 10.0.0.1, labels: {app: web}, ports: {web-port: 8001}}
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: b}
            spec: {address: 10.0.0.2, labels: {app: web}, ports: {web-port: 8002}}
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: c-without-the-port}
            spec: {address: 10.0.0.3, labels: {app: web}, ports: {other: 8003}}
            """
        }
    )
    assert targets(result.mesh, "web.default.svc.cluster.local", 80) == [
        ("10.0.0.1", 8001),
        ("10.0.0.2", 8002),
    ]


def test_each_service_port_gets_its_own_endpoint_ports() -> None:
    result = build(
        {
            "a.yaml": """
            apiVersion: v1
            kind: Service
            metadata: {name: api}
            spec:
              selector: {app: api}
              ports:
              - {name: http, port: 80, targetPort: 8080}
              - {name: grpc, port: 90, targetPort: 9090}
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: a}
            spec: {address: 10.0.0.1, labels: {app: api}, ports: {grpc: 7070}}
            """
        }
    )
    service = result.mesh.service("api.default.svc.cluster.local")
    assert service is not None
    assert service.ports == (
        ServicePort("http", 80, Protocol.HTTP, 8080),
        ServicePort("grpc", 90, Protocol.GRPC, 9090),
    )
    assert targets(result.mesh, service.host, 80) == [("10.0.0.1", 8080)]
    assert targets(result.mesh, service.host, 90) == [("10.0.0.1", 7070)]


def test_a_service_without_a_selector_has_no_endpoints() -> None:
    result = build(
        {
            "a.yaml": """
            apiVersion: v1
            kind: Service
            metadata: {name: manual}
            spec:
              ports: [{name: http, port: 80}]
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: a}
            spec: {address: 10.0.0.1, labels: {app: manual}}
            """
        }
    )
    service = result.mesh.service("manual.default.svc.cluster.local")
    assert service is not None
    assert service.endpoints == ((80, ()),)


def test_endpoints_carry_the_workload_weight_labels_and_locality() -> None:
    result = build(
        {
            "a.yaml": """
            apiVersion: v1
            kind: Service
            metadata: {name: hello}
            spec:
              selector: {app: hello}
              ports: [{name: http, port: 80}]
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: a}
            spec:
              address: 10.0.0.1
              labels: {app: hello, version: v2}
              weight: 3
              locality: us-east/us-east-1a/rack1
            """
        }
    )
    service = result.mesh.service("hello.default.svc.cluster.local")
    assert service is not None
    assert service.endpoints_for(80) == (
        Endpoint(
            address="10.0.0.1",
            port=80,
            labels=(("app", "hello"), ("version", "v2")),
            weight=3,
            locality=Locality("us-east", "us-east-1a", "rack1"),
        ),
    )


def test_endpoints_are_sorted_by_address_then_port() -> None:
    result = build(
        {
            "a.yaml": """
            apiVersion: v1
            kind: Service
            metadata: {name: hello}
            spec:
              selector: {app: hello}
              ports: [{name: http, port: 80}]
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: a}
            spec: {address: 10.0.0.2, labels: {app: hello}}
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: b}
            spec: {address: 10.0.0.1, labels: {app: hello}, ports: {http: 82}}
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: c}
            spec: {address: 10.0.0.1, labels: {app: hello}, ports: {http: 81}}
            """
        }
    )
    assert targets(result.mesh, "hello.default.svc.cluster.local", 80) == [
        ("10.0.0.1", 81),
        ("10.0.0.1", 82),
        ("10.0.0.2", 80),
    ]


def test_a_service_entry_with_endpoints_becomes_one_service_per_host() -> None:
    result = build(
        {
            "a.yaml": """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: api, namespace: egress}
            spec:
              hosts: [api.example.com, api.example.net]
              ports: [{number: 443, name: https, protocol: HTTPS}]
              resolution: DNS
              endpoints:
              - {address: api-2.example.com}
              - address: api-1.example.com
                ports: {https: 8443}
                weight: 2
                locality: eu-west
                labels: {dc: one}
            """
        }
    )
    expected_endpoints = (
        (
            443,
            (
                Endpoint("api-1.example.com", 8443, (("dc", "one"),), 2, Locality("eu-west")),
                Endpoint("api-2.example.com", 443),
            ),
        ),
    )
    assert result.findings == ()
    assert result.mesh.services == tuple(
        Service(
            host=host,
            namespace="egress",
            name="api",
            ports=(ServicePort("https", 443, Protocol.HTTPS, None),),
            endpoints=expected_endpoints,
            resolution=Resolution.DNS,
            mesh_external=True,
            source="ServiceEntry egress/api",
        )
        for host in ("api.example.com", "api.example.net")
    )


def test_a_service_entry_with_dns_resolution_and_no_endpoints_has_empty_endpoint_lists() -> None:
    result = build(
        {
            "a.yaml": """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: cnn}
            spec:
              hosts: [edition.cnn.com]
              ports: [{number: 80, name: http}, {number: 443, name: tls, protocol: TLS}]
              resolution: DNS
            """
        }
    )
    service = result.mesh.service("edition.cnn.com")
    assert service is not None
    assert service.resolution is Resolution.DNS
    assert service.mesh_external is True
    assert service.ports == (
        ServicePort("http", 80, Protocol.HTTP),
        ServicePort("tls", 443, Protocol.TLS),
    )
    assert service.endpoints == ((80, ()), (443, ()))


def test_a_service_entry_workload_selector_selects_workloads_of_its_namespace() -> None:
    result = build(
        {
            "a.yaml": """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: vms, namespace: legacy}
            spec:
              hosts: [vms.legacy.internal]
              location: MESH_INTERNAL
              ports: [{number: 80, name: http, targetPort: 8080}]
              resolution: STATIC
              workloadSelector:
                labels: {app: vm}
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: vm-1, namespace: legacy}
            spec: {address: 10.1.0.1, labels: {app: vm}}
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: vm-2, namespace: legacy}
            spec: {address: 10.1.0.2, labels: {app: vm}, ports: {http: 8888}}
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: vm-elsewhere, namespace: default}
            spec: {address: 10.1.0.3, labels: {app: vm}}
            """
        }
    )
    service = result.mesh.service("vms.legacy.internal")
    assert service is not None
    assert service.mesh_external is False
    assert service.resolution is Resolution.STATIC
    assert service.endpoints == (
        (
            80,
            (
                Endpoint("10.1.0.1", 8080, (("app", "vm"),)),
                Endpoint("10.1.0.2", 8888, (("app", "vm"),)),
            ),
        ),
    )


def test_short_namespaced_and_fully_qualified_hosts_name_the_same_service() -> None:
    result = build(
        {
            "services.yaml": """
            apiVersion: v1
            kind: Service
            metadata: {name: reviews, namespace: shop}
            spec:
              selector: {app: reviews}
              ports: [{name: http, port: 9080}]
            """,
            "routing.yaml": """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: reviews, namespace: shop}
            spec:
              hosts: [reviews]
              http:
              - route:
                - destination: {host: reviews}
                  weight: 50
                - destination: {host: reviews.shop}
                  weight: 30
                - destination: {host: reviews.shop.svc.cluster.local}
                  weight: 20
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: from-elsewhere, namespace: web}
            spec:
              hosts: [reviews.shop]
              gateways: [edge]
              http:
              - route:
                - destination: {host: reviews.shop}
            ---
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata: {name: edge, namespace: web}
            spec:
              servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: reviews, namespace: web}
            spec:
              host: reviews.shop
            """,
        }
    )
    host = "reviews.shop.svc.cluster.local"
    assert result.findings == ()
    shop, web = result.mesh.virtual_services
    assert shop.hosts == (host,)
    assert [d.host for d in shop.http[0].destinations] == [host, host, host]
    assert web.hosts == (host,)
    assert web.gateways == ("web/edge",)
    assert [d.host for d in web.http[0].destinations] == [host]
    policy = result.mesh.policy(host)
    assert policy is not None
    assert (policy.namespace, policy.name) == ("web", "reviews")


def test_a_short_host_is_relative_to_the_namespace_of_the_resource_that_writes_it() -> None:
    result = build(
        {
            "a.yaml": """
            apiVersion: v1
            kind: Service
            metadata: {name: reviews, namespace: shop}
            spec:
              selector: {app: reviews}
              ports: [{name: http, port: 9080}]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: reviews, namespace: web}
            spec:
              hosts: [reviews.shop]
              http:
              - route:
                - destination: {host: reviews}
            """
        }
    )
    assert [(f.code, f.path, f.message) for f in result.findings] == [
        (
            "PF200",
            ("spec", "http", 0, "route", 0, "destination", "host"),
            "destination host reviews.web.svc.cluster.local is not a Service or ServiceEntry; "
            "define it or fix the name",
        )
    ]


MESH_LOOKUPS = {
    "a.yaml": """
    apiVersion: v1
    kind: Service
    metadata: {name: reviews}
    spec:
      selector: {app: reviews}
      ports: [{name: http, port: 9080}]
    ---
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: reviews}
    spec: {host: reviews}
    ---
    apiVersion: networking.istio.io/v1
    kind: Gateway
    metadata: {name: public, namespace: edge}
    spec:
      selector: {istio: ingressgateway}
      servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
    ---
    apiVersion: networking.istio.io/v1
    kind: Gateway
    metadata: {name: internal, namespace: edge}
    spec:
      selector: {istio: ingressgateway, zone: internal}
      servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
    ---
    apiVersion: networking.istio.io/v1
    kind: Gateway
    metadata: {name: no-selector, namespace: edge}
    spec:
      servers: [{port: {number: 9090, name: http, protocol: HTTP}, hosts: ["*"]}]
    ---
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: in-mesh}
    spec:
      hosts: [reviews]
      http: [{route: [{destination: {host: reviews}}]}]
    ---
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: both, namespace: edge}
    spec:
      hosts: [reviews.example.com]
      gateways: [public, mesh]
      http: [{route: [{destination: {host: reviews.default}}]}]
    ---
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: public-only, namespace: edge}
    spec:
      hosts: [shop.example.com]
      gateways: [edge/public]
      http: [{route: [{destination: {host: reviews.default}}]}]
    """
}


def test_mesh_lookups_find_services_policies_virtual_services_and_gateways() -> None:
    result = build(MESH_LOOKUPS)
    mesh = result.mesh
    assert result.findings == ()
    service = mesh.service(REVIEWS_HOST)
    assert service is not None and service.name == "reviews"
    assert mesh.service("reviews") is None
    assert mesh.service("ratings.default.svc.cluster.local") is None
    policy = mesh.policy(REVIEWS_HOST)
    assert policy is not None and policy.name == "reviews"
    assert mesh.policy("ratings.default.svc.cluster.local") is None
    assert [vs.name for vs in mesh.virtual_services_for_gateway("mesh")] == ["in-mesh", "both"]
    assert [vs.name for vs in mesh.virtual_services_for_gateway("edge/public")] == [
        "both",
        "public-only",
    ]
    assert mesh.virtual_services_for_gateway("edge/internal") == ()
    assert [g.key for g in mesh.gateways_for((("istio", "ingressgateway"),))] == ["edge/public"]
    assert [
        g.key for g in mesh.gateways_for((("istio", "ingressgateway"), ("zone", "internal")))
    ] == ["edge/internal", "edge/public"]
    assert mesh.gateways_for(()) == ()
    assert mesh.gateways_for((("app", "reviews"),)) == ()
    assert mesh.gateways_by_key["edge/no-selector"] == Gateway(
        namespace="edge",
        name="no-selector",
        selector=(),
        servers=(GatewayServer(9090, "http", Protocol.HTTP, ("*",)),),
    )


def test_the_model_collections_are_sorted_by_key() -> None:
    mesh = build(MESH_LOOKUPS).mesh
    assert [(vs.namespace, vs.name) for vs in mesh.virtual_services] == [
        ("default", "in-mesh"),
        ("edge", "both"),
        ("edge", "public-only"),
    ]
    assert [g.key for g in mesh.gateways] == ["edge/internal", "edge/no-selector", "edge/public"]


DETERMINISM = {
    "a.yaml": REVIEWS_WORKLOADS,
    "b.yaml": REVIEWS,
    "c.yaml": """
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata: {name: reviews}
    spec:
      host: reviews
      subsets:
      - {name: v1, labels: {version: v1}}
      - {name: v9, labels: {version: v9}}
    ---
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: reviews}
    spec:
      hosts: [reviews]
      http:
      - route: [{destination: {host: reviews, subset: v1}}]
      - route: [{destination: {host: ratings}}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: reviews}
    spec:
      selector: {app: other}
      ports: [{name: http, port: 9080}]
    """,
}


def test_the_same_resources_in_any_order_give_an_equal_mesh_and_equal_findings() -> None:
    ordered = resources(DETERMINISM)
    expected = build_mesh(ordered)
    assert [f.code for f in expected.findings] == ["PF205", "PF207", "PF200", "PF208"]
    rng = random.Random(7)
    for _ in range(20):
        shuffled = list(ordered)
        rng.shuffle(shuffled)
        assert build_mesh(shuffled) == expected


def test_documents_in_another_order_give_an_equal_mesh_and_the_same_problems() -> None:
    # Everything in one file, in reverse document order, except that the duplicate
    # Service stays after the first so that the same one is blamed.
    texts = [
        textwrap.dedent(doc).strip("\n")
        for part in (DETERMINISM["c.yaml"], DETERMINISM["a.yaml"], DETERMINISM["b.yaml"])
        for doc in part.split("---")
    ]
    duplicate = texts.pop(2)
    single = "\n---\n".join([*reversed(texts), duplicate]) + "\n"
    result = read_text("all.yaml", single)
    assert result.findings == ()
    reordered = build_mesh(result.resources)
    expected = build_mesh(resources(DETERMINISM))
    assert reordered.mesh == expected.mesh

    def problems(build_result: BuildResult) -> set[tuple[str, str, tuple[str | int, ...]]]:
        return {(f.code, f.resource, f.path) for f in build_result.findings}

    assert problems(reordered) == problems(expected)


def test_build_result_is_ok_with_warnings_only() -> None:
    result = build({"a.yaml": REVIEWS_RULE})
    assert [f.code for f in result.findings] == ["PF209"]
    assert result.ok is True
    assert build({"a.yaml": REVIEWS, "b.yaml": REVIEWS}).ok is False


# --- the cross-resource checks, with their positions ------------------------------------------


def test_pf200_destination_hosts_of_routes_mirrors_and_tcp_routes_must_exist(
    tmp_path: Path,
) -> None:
    diagnostics = validate(
        tmp_path,
        {
            "services.yaml": REVIEWS,
            "routing.yaml": """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata:
              name: reviews
            spec:
              hosts:
              - reviews
              http:
              - match:
                - uri: {prefix: /v1}
                route:
                - destination:
                    host: ratings
                mirror:
                  host: shadow
              - route:
                - destination:
                    host: reviews
                mirror:
                  host: reviews.default
              tcp:
              - route:
                - destination:
                    host: db
            """,
        },
    )
    assert diagnostics == [
        error(
            "PF200",
            "routing.yaml",
            13,
            9,
            VS_REVIEWS,
            "spec.http[0].route[0].destination.host",
            "destination host ratings.default.svc.cluster.local is not a Service or "
            "ServiceEntry; define it or fix the name",
        ),
        error(
            "PF200",
            "routing.yaml",
            15,
            7,
            VS_REVIEWS,
            "spec.http[0].mirror.host",
            "destination host shadow.default.svc.cluster.local is not a Service or "
            "ServiceEntry; define it or fix the name",
        ),
        error(
            "PF200",
            "routing.yaml",
            24,
            9,
            VS_REVIEWS,
            "spec.tcp[0].route[0].destination.host",
            "destination host db.default.svc.cluster.local is not a Service or "
            "ServiceEntry; define it or fix the name",
        ),
    ]


def test_pf200_is_not_reported_for_a_host_covered_by_a_wildcard_service_entry(
    tmp_path: Path,
) -> None:
    diagnostics = validate(
        tmp_path,
        {
            "a.yaml": """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: wildcard}
            spec:
              hosts: ["*.example.com"]
              ports: [{number: 80, name: http}]
              resolution: NONE
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: api}
            spec:
              hosts: [api.example.com]
              http:
              - route: [{destination: {host: api.example.com}}]
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: api}
            spec: {host: api.example.com}
            """
        },
    )
    assert diagnostics == []


def test_pf201_a_subset_must_be_defined_by_a_destination_rule_of_the_host(
    tmp_path: Path,
) -> None:
    diagnostics = validate(
        tmp_path,
        {
            "services.yaml": REVIEWS,
            "workloads.yaml": REVIEWS_WORKLOADS,
            "rules.yaml": REVIEWS_RULE,
            "ratings.yaml": REVIEWS.replace("reviews", "ratings"),
            "routing.yaml": """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata:
              name: reviews
            spec:
              hosts:
              - reviews
              http:
              - match:
                - uri: {prefix: /ratings}
                route:
                - destination:
                    host: ratings
                    subset: v1
              - route:
                - destination:
                    host: reviews
                    subset: v1
                  weight: 50
                - destination:
                    host: reviews
                    subset: v3
                  weight: 50
            """,
        },
    )
    assert diagnostics == [
        error(
            "PF201",
            "routing.yaml",
            14,
            9,
            VS_REVIEWS,
            "spec.http[0].route[0].destination.subset",
            "subset 'v1' of ratings.default.svc.cluster.local is not defined by any "
            "DestinationRule",
        ),
        error(
            "PF201",
            "routing.yaml",
            22,
            9,
            VS_REVIEWS,
            "spec.http[1].route[1].destination.subset",
            f"subset 'v3' of {REVIEWS_HOST} is not defined by any DestinationRule "
            "(defined: v1, v2)",
        ),
    ]


MULTI_PORT_API = """
apiVersion: v1
kind: Service
metadata:
  name: api
spec:
  ports:
  - name: http
    port: 80
  - name: grpc
    port: 90
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
  - name: http
    port: 8080
"""


def _route_to_api(host: str, gateways: str = "") -> str:
    return f"""
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata:
      name: api
    spec:
      hosts:
      - {host}{gateways}
      http:
      - route:
        - destination:
            host: api
    """


def test_a_sidecar_route_may_leave_out_the_port_of_a_service_with_several(
    tmp_path: Path,
) -> None:
    diagnostics = validate(
        tmp_path, {"services.yaml": MULTI_PORT_API, "routing.yaml": _route_to_api("api")}
    )
    assert diagnostics == []


def test_pf202_a_sidecar_route_without_a_port_needs_a_listener_port_the_service_has(
    tmp_path: Path,
) -> None:
    diagnostics = validate(
        tmp_path, {"services.yaml": MULTI_PORT_API, "routing.yaml": _route_to_api("web")}
    )
    assert diagnostics == [
        error(
            "PF202",
            "routing.yaml",
            10,
            7,
            "VirtualService default/api",
            "spec.http[0].route[0].destination.port",
            "api.default.svc.cluster.local has ports 80, 90, none of them a port the route "
            "applies on (8080): set destination.port.number",
        )
    ]


def test_pf202_a_gateway_route_must_name_the_port_of_a_service_with_several(
    tmp_path: Path,
) -> None:
    gateway = """
    apiVersion: networking.istio.io/v1
    kind: Gateway
    metadata:
      name: edge
    spec:
      servers:
      - port: {number: 80, name: http, protocol: HTTP}
        hosts: ["*"]
    """
    diagnostics = validate(
        tmp_path,
        {
            "services.yaml": MULTI_PORT_API,
            "gateway.yaml": gateway,
            "routing.yaml": _route_to_api("api.example.com", "\n      gateways: [edge]"),
        },
    )
    assert diagnostics == [
        error(
            "PF202",
            "routing.yaml",
            11,
            7,
            "VirtualService default/api",
            "spec.http[0].route[0].destination.port",
            "api.default.svc.cluster.local has ports 80, 90 and a gateway cannot take the "
            "port from its listener: set destination.port.number",
        )
    ]


def test_pf203_a_destination_port_must_be_exposed_by_the_service(tmp_path: Path) -> None:
    diagnostics = validate(
        tmp_path,
        {
            "services.yaml": REVIEWS,
            "routing.yaml": """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata:
              name: reviews
            spec:
              hosts:
              - reviews
              http:
              - route:
                - destination:
                    host: reviews
                    port:
                      number: 8080
            """,
        },
    )
    assert diagnostics == [
        error(
            "PF203",
            "routing.yaml",
            13,
            11,
            VS_REVIEWS,
            "spec.http[0].route[0].destination.port.number",
            f"{REVIEWS_HOST} does not expose port 8080 (it exposes 9080)",
        )
    ]


def test_pf204_gateways_resolve_in_the_virtual_service_namespace_or_as_namespace_slash_name(
    tmp_path: Path,
) -> None:
    diagnostics = validate(
        tmp_path,
        {
            "services.yaml": REVIEWS,
            "gateway.yaml": """
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata: {name: public, namespace: edge}
            spec:
              servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
            """,
            "edge.yaml": """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: shop, namespace: edge}
            spec:
              hosts: [shop.example.com]
              gateways: [public]
              http: [{route: [{destination: {host: reviews.default}}]}]
            """,
            "routing.yaml": """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata:
              name: reviews
            spec:
              hosts:
              - reviews.example.com
              gateways:
              - mesh
              - edge/public
              - public
              - edge/private
              http:
              - route:
                - destination:
                    host: reviews
            """,
        },
    )
    assert diagnostics == [
        error(
            "PF204",
            "routing.yaml",
            11,
            5,
            VS_REVIEWS,
            "spec.gateways[2]",
            "Gateway default/public does not exist; define it or fix the name",
        ),
        error(
            "PF204",
            "routing.yaml",
            12,
            5,
            VS_REVIEWS,
            "spec.gateways[3]",
            "Gateway edge/private does not exist; define it or fix the name",
        ),
    ]


def test_pf205_a_subset_that_selects_no_workload_is_a_warning(tmp_path: Path) -> None:
    diagnostics = validate(
        tmp_path,
        {
            "services.yaml": REVIEWS,
            "workloads.yaml": REVIEWS_WORKLOADS,
            "rules.yaml": """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata:
              name: reviews
            spec:
              host: reviews
              subsets:
              - name: v1
                labels:
                  version: v1
              - name: v9
                labels:
                  version: v9
                  app: reviews
            """,
        },
    )
    assert diagnostics == [
        warning(
            "PF205",
            "rules.yaml",
            12,
            5,
            "DestinationRule default/reviews",
            "spec.subsets[1].labels",
            f"subset 'v9' (app=reviews,version=v9) selects no workload of {REVIEWS_HOST}",
        )
    ]


def test_pf205_is_not_reported_for_a_dns_service_without_endpoints(tmp_path: Path) -> None:
    diagnostics = validate(
        tmp_path,
        {
            "a.yaml": """
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: cnn}
            spec:
              hosts: [edition.cnn.com]
              ports: [{number: 80, name: http}]
              resolution: DNS
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: cnn}
            spec:
              host: edition.cnn.com
              subsets: [{name: v1, labels: {version: v1}}]
            """
        },
    )
    assert diagnostics == []


TWO_VIRTUAL_SERVICES_A = """
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata:
      name: reviews-a
    spec:
      hosts:
      - reviews
      http:
      - route:
        - destination:
            host: reviews
    """

TWO_VIRTUAL_SERVICES_B = """
    # The second claim on reviews.
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata:
      name: reviews-b
    spec:
      hosts:
      - reviews.example.com
      - reviews
      http:
      - route:
        - destination:
            host: reviews
    """


def pf206(first: str, where: str) -> str:
    return (
        f"host {REVIEWS_HOST} is already routed for sidecars by {first} at {where}, which "
        "comes first in file order and wins; this VirtualService's rules are ignored for "
        "the host (merge the two)"
    )


def test_pf206_two_sidecar_virtual_services_for_a_host_warn_on_the_later_naming_the_first(
    tmp_path: Path,
) -> None:
    diagnostics = validate(
        tmp_path,
        {
            "services.yaml": REVIEWS,
            "a.yaml": TWO_VIRTUAL_SERVICES_A,
            "b.yaml": TWO_VIRTUAL_SERVICES_B,
        },
    )
    assert diagnostics == [
        warning(
            "PF206",
            "b.yaml",
            9,
            5,
            "VirtualService default/reviews-b",
            "spec.hosts[1]",
            pf206("VirtualService default/reviews-a", "a.yaml:1"),
        )
    ]


def test_pf206_the_same_host_on_different_gateways_is_no_conflict(tmp_path: Path) -> None:
    diagnostics = validate(
        tmp_path,
        {
            "services.yaml": REVIEWS,
            "a.yaml": TWO_VIRTUAL_SERVICES_A,
            "b.yaml": yaml(TWO_VIRTUAL_SERVICES_B).replace(
                "spec:\n", "spec:\n  gateways: [edge]\n"
            ),
            "gateway.yaml": """
            apiVersion: networking.istio.io/v1
            kind: Gateway
            metadata: {name: edge}
            spec:
              servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
            """,
        },
    )
    assert diagnostics == []


def test_pf206_the_first_in_file_order_wins_whichever_file_changed() -> None:
    built = build_mesh(
        resources(
            {
                "services.yaml": REVIEWS,
                "a.yaml": TWO_VIRTUAL_SERVICES_B,
                "b.yaml": TWO_VIRTUAL_SERVICES_A,
            }
        ),
        changed=frozenset({"a.yaml"}),
    )
    assert built.ok
    assert [(f.code, f.file, f.path, f.resource) for f in built.findings if f.code == "PF206"] == [
        ("PF206", "b.yaml", ("spec", "hosts", 0), "VirtualService default/reviews-a")
    ]
    assert [vs.name for vs in built.mesh.virtual_services] == ["reviews-b", "reviews-a"]


def _bound_to_edge(name: str, prefix: str) -> str:
    return f"""
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {{name: {name}}}
    spec:
      hosts: [shop.example.com]
      gateways: [edge]
      http:
      - match: [{{uri: {{prefix: {prefix}}}}}]
        route: [{{destination: {{host: reviews}}}}]
    """


GATEWAY_EDGE = """
    apiVersion: networking.istio.io/v1
    kind: Gateway
    metadata: {name: edge}
    spec:
      selector: {app: edge}
      servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
    """


def test_gateway_virtual_services_for_one_host_are_merged_in_file_order(tmp_path: Path) -> None:
    files = {
        "services.yaml": REVIEWS,
        "gateway.yaml": GATEWAY_EDGE,
        "routes/b.yaml": _bound_to_edge("aa", "/b"),
        "routes/a.yaml": _bound_to_edge("zz", "/a") + "---" + _bound_to_edge("mm", "/m"),
    }
    assert validate(tmp_path, files) == []
    mesh = build(files).mesh
    assert [vs.name for vs in mesh.virtual_services] == ["zz", "mm", "aa"]
    (config,) = gateway_route_configs(mesh, (("app", "edge"),))
    (vhost,) = config.virtual_hosts
    assert [r.match.prefix for r in vhost.routes] == ["/a", "/m", "/b"]


def test_pf207_rules_after_a_catch_all_rule_are_unreachable(tmp_path: Path) -> None:
    diagnostics = validate(
        tmp_path,
        {
            "services.yaml": REVIEWS,
            "routing.yaml": """
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata:
              name: reviews
            spec:
              hosts:
              - reviews
              http:
              - match:
                - uri:
                    prefix: /api
                route:
                - destination:
                    host: reviews
              - match:
                - headers:
                    end-user:
                      exact: jason
                - uri:
                    prefix: /
                route:
                - destination:
                    host: reviews
              - match:
                - uri:
                    prefix: /admin
                route:
                - destination:
                    host: reviews
              - route:
                - destination:
                    host: reviews
            """,
        },
    )
    message = "this rule is never used: spec.http[1] before it matches every request"
    assert diagnostics == [
        warning("PF207", "routing.yaml", 24, 5, VS_REVIEWS, "spec.http[2]", message),
        warning("PF207", "routing.yaml", 30, 5, VS_REVIEWS, "spec.http[3]", message),
    ]


def test_pf208_a_resource_defined_twice_is_blamed_on_the_later_place(tmp_path: Path) -> None:
    diagnostics = validate(
        tmp_path,
        {
            "a.yaml": REVIEWS,
            "b.yaml": "# A copy.\n---\n" + yaml(REVIEWS) + "---\n" + yaml(REVIEWS),
            # The same name as another kind, or in another namespace, is no duplicate.
            "c.yaml": """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: reviews}
            spec: {host: reviews}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: reviews, namespace: other}
            spec:
              ports: [{name: http, port: 9080}]
            """,
        },
    )
    assert diagnostics == [
        error(
            "PF208",
            "b.yaml",
            6,
            3,
            "Service default/reviews",
            "metadata.name",
            "Service default/reviews is defined twice: here and at a.yaml:1; rename or remove one",
        ),
        error(
            "PF208",
            "b.yaml",
            17,
            3,
            "Service default/reviews",
            "metadata.name",
            "Service default/reviews is defined twice: here and at a.yaml:1; rename or remove one",
        ),
    ]


def test_pf208_blames_the_changed_file_and_keeps_the_unchanged_definition() -> None:
    changed = REVIEWS.replace("port: 9080", "port: 9090")
    built = build_mesh(
        resources({"a.yaml": changed, "b.yaml": REVIEWS}), changed=frozenset({"a.yaml"})
    )
    assert [(f.code, f.file, f.message) for f in built.findings] == [
        (
            "PF208",
            "a.yaml",
            "Service default/reviews is defined twice: here and at b.yaml:1; rename or remove one",
        )
    ]
    service = built.mesh.service(REVIEWS_HOST)
    assert service is not None
    assert [p.port for p in service.ports] == [9080]


def test_pf209_a_destination_rule_for_an_unknown_host_is_a_warning(tmp_path: Path) -> None:
    diagnostics = validate(tmp_path, {"rules.yaml": "# Rules\n" + yaml(REVIEWS_RULE)})
    assert diagnostics == [
        warning(
            "PF209",
            "rules.yaml",
            6,
            3,
            "DestinationRule default/reviews",
            "spec.host",
            f"no Service or ServiceEntry defines host {REVIEWS_HOST}; the rule applies to nothing",
        )
    ]


SERVICE_ENTRY_FOR_REVIEWS = """
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata:
      name: reviews-entry
    spec:
      hosts:
      - reviews.example.com
      - reviews.default.svc.cluster.local
      ports:
      - number: 9080
        name: http
      resolution: DNS
    """


def test_pf210_a_service_entry_host_already_defined_by_a_service(tmp_path: Path) -> None:
    diagnostics = validate(tmp_path, {"a.yaml": REVIEWS, "b.yaml": SERVICE_ENTRY_FOR_REVIEWS})
    assert diagnostics == [
        error(
            "PF210",
            "b.yaml",
            6,
            3,
            "ServiceEntry default/reviews-entry",
            "spec.hosts",
            f"host {REVIEWS_HOST} is already defined by Service default/reviews at a.yaml:1",
        )
    ]


def test_pf210_is_blamed_on_the_later_file_whatever_the_kinds(tmp_path: Path) -> None:
    diagnostics = validate(tmp_path, {"a.yaml": SERVICE_ENTRY_FOR_REVIEWS, "b.yaml": REVIEWS})
    assert diagnostics == [
        error(
            "PF210",
            "b.yaml",
            4,
            3,
            "Service default/reviews",
            "metadata.name",
            f"host {REVIEWS_HOST} is already defined by ServiceEntry default/reviews-entry "
            "at a.yaml:1",
        )
    ]


def _static_entry(name: str, ports: str, endpoints: str, namespace: str = "default") -> str:
    return f"""
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata:
      name: {name}
      namespace: {namespace}
    spec:
      hosts: [db.example.com]
      ports: {ports}
      resolution: STATIC
      endpoints: {endpoints}
    """


def test_service_entries_for_one_host_are_combined_the_first_definition_with_all_endpoints(
    tmp_path: Path,
) -> None:
    files = {
        "a.yaml": _static_entry(
            "primary", "[{number: 5432, name: tcp}]", "[{address: 10.0.0.2}, {address: 10.0.0.1}]"
        ),
        "b.yaml": _static_entry(
            "replicas",
            "[{number: 5432, name: tcp-pg}, {number: 6432, name: tcp-pool}]",
            "[{address: 10.0.0.3}, {address: 10.0.0.1}]",
        ),
    }
    assert validate(tmp_path, files) == []
    (service,) = build(files).mesh.services
    assert service.source == "ServiceEntry default/primary, ServiceEntry default/replicas"
    assert [(p.name, p.port) for p in service.ports] == [("tcp", 5432), ("tcp-pool", 6432)]
    assert [(n, [e.address for e in eps]) for n, eps in service.endpoints] == [
        (5432, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
        (6432, ["10.0.0.1", "10.0.0.3"]),
    ]


def test_a_later_service_entry_with_another_resolution_is_ignored_as_in_istio(
    tmp_path: Path,
) -> None:
    files = {
        "a.yaml": _static_entry("one", "[{number: 80, name: http}]", "[{address: 10.0.0.1}]"),
        "b.yaml": _static_entry(
            "two", "[{number: 80, name: http}, {number: 81, name: http-alt}]", "[{address: b.test}]"
        ).replace("resolution: STATIC", "resolution: DNS"),
    }
    (service,) = build(files).mesh.services
    assert (service.source, service.resolution) == ("ServiceEntry default/one", Resolution.STATIC)
    assert [p.port for p in service.ports] == [80]
    assert [(n, [e.address for e in eps]) for n, eps in service.endpoints] == [(80, ["10.0.0.1"])]
    assert validate(tmp_path, files) == [
        warning(
            "PF210",
            "b.yaml",
            7,
            3,
            "ServiceEntry default/two",
            "spec.hosts",
            "host db.example.com is also defined by ServiceEntry default/one at a.yaml:1 with "
            "another resolution, labels or workloadSelector; as in Istio, this ServiceEntry is "
            "ignored for it",
        )
    ]


def test_combining_service_entries_does_not_depend_on_which_file_changed() -> None:
    files = {
        "a.yaml": _static_entry("one", "[{number: 80, name: http}]", "[{address: 10.0.0.1}]"),
        "b.yaml": _static_entry("two", "[{number: 80, name: http}]", "[{address: 10.0.0.2}]"),
    }
    builder = MeshBuilder()
    first = builder.build({k: resources({k: v}) for k, v in files.items()}, None)
    files["b.yaml"] = files["b.yaml"].replace("10.0.0.2", "10.0.0.9")
    second = builder.build({k: resources({k: v}) for k, v in files.items()}, frozenset({"b.yaml"}))
    assert [[e.address for e in s.endpoints[0][1]] for s in first.mesh.services] == [
        ["10.0.0.1", "10.0.0.2"]
    ]
    assert [[e.address for e in s.endpoints[0][1]] for s in second.mesh.services] == [
        ["10.0.0.1", "10.0.0.9"]
    ]
    assert second.findings == ()


def test_pf210_service_entries_of_different_namespaces_for_one_host_keep_the_first(
    tmp_path: Path,
) -> None:
    files = {
        "a.yaml": _static_entry("db", "[{number: 80, name: http}]", "[{address: 10.0.0.1}]"),
        "b.yaml": _static_entry(
            "db", "[{number: 80, name: http}]", "[{address: 10.0.0.2}]", namespace="other"
        ),
    }
    assert validate(tmp_path, files) == [
        error(
            "PF210",
            "b.yaml",
            7,
            3,
            "ServiceEntry other/db",
            "spec.hosts",
            "host db.example.com is already defined by ServiceEntry default/db at a.yaml:1",
        )
    ]
    assert [s.source for s in build(files).mesh.services] == ["ServiceEntry default/db"]


def test_pf211_two_destination_rules_for_one_host(tmp_path: Path) -> None:
    diagnostics = validate(
        tmp_path,
        {
            "services.yaml": REVIEWS,
            "workloads.yaml": REVIEWS_WORKLOADS,
            "a.yaml": REVIEWS_RULE,
            "b.yaml": """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata:
              name: reviews-fqdn
            spec:
              host: reviews.default.svc.cluster.local
            """,
        },
    )
    assert diagnostics == [
        error(
            "PF211",
            "b.yaml",
            6,
            3,
            "DestinationRule default/reviews-fqdn",
            "spec.host",
            f"host {REVIEWS_HOST} already has DestinationRule default/reviews at a.yaml:1; "
            "merge the two into one DestinationRule",
        )
    ]


def test_conflicts_are_blamed_on_the_later_file_even_when_its_names_sort_first(
    tmp_path: Path,
) -> None:
    diagnostics = validate(
        tmp_path,
        {
            "a.yaml": """
            apiVersion: v1
            kind: Service
            metadata: {name: reviews}
            spec:
              ports: [{name: http, port: 9080}]
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: zz}
            spec: {host: reviews}
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: zz}
            spec:
              hosts: [reviews]
              http: [{route: [{destination: {host: reviews}}]}]
            """,
            "b.yaml": """
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: aa}
            spec: {host: reviews}
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: aa}
            spec:
              hosts: [reviews]
              http: [{route: [{destination: {host: reviews}}]}]
            """,
        },
    )
    assert diagnostics == [
        error(
            "PF211",
            "b.yaml",
            4,
            8,
            "DestinationRule default/aa",
            "spec.host",
            f"host {REVIEWS_HOST} already has DestinationRule default/zz at a.yaml:7; "
            "merge the two into one DestinationRule",
        ),
        warning(
            "PF206",
            "b.yaml",
            10,
            11,
            "VirtualService default/aa",
            "spec.hosts[0]",
            pf206("VirtualService default/zz", "a.yaml:12"),
        ),
    ]


def test_a_workload_on_another_network_without_address_is_valid_but_gets_no_traffic(
    tmp_path: Path,
) -> None:
    files = {
        "services.yaml": """
            apiVersion: v1
            kind: Service
            metadata: {name: web}
            spec:
              selector: {app: web}
              ports: [{name: http, port: 80}]
            ---
            apiVersion: networking.istio.io/v1
            kind: ServiceEntry
            metadata: {name: db}
            spec:
              hosts: [db.example.com]
              ports: [{number: 5432, name: tcp}]
              resolution: STATIC
              endpoints:
              - {address: 10.0.0.9}
              - {network: west}
            """,
        "workloads.yaml": """
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: web-east}
            spec: {address: 10.0.0.1, labels: {app: web}}
            ---
            apiVersion: networking.istio.io/v1
            kind: WorkloadEntry
            metadata: {name: web-west}
            spec: {network: west, labels: {app: web}}
            """,
    }
    diagnostics = validate(tmp_path, files)
    assert [(d.severity, d.code, d.file, d.line, d.field) for d in diagnostics] == [
        (WARNING, "PF111", "services.yaml", 17, "spec.endpoints[1].network"),
        (WARNING, "PF124", "services.yaml", 17, "spec.endpoints[1].network"),
        (WARNING, "PF111", "workloads.yaml", 9, "spec.network"),
        (WARNING, "PF124", "workloads.yaml", 9, "spec.network"),
    ]
    assert "it is on network 'west'" in diagnostics[1].message
    mesh = build_mesh(
        r for name, text in files.items() for r in read_text(name, yaml(text)).resources
    ).mesh
    assert targets(mesh, "web.default.svc.cluster.local", 80) == [("10.0.0.1", 80)]
    assert targets(mesh, "db.example.com", 5432) == [("10.0.0.9", 5432)]


def test_a_workload_without_address_or_network_is_still_an_error() -> None:
    result = read_text(
        "w.yaml",
        yaml("""
        apiVersion: networking.istio.io/v1
        kind: WorkloadEntry
        metadata: {name: w}
        spec: {labels: {app: web}}
        """),
    )
    assert [(f.code, f.path) for f in result.findings] == [("PF113", ("spec", "address"))]
