"""Every kind and every field Pilotfish acts on converts to the exact model value."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controlplane.config.document import read_text
from controlplane.config.istio_schema import KINDS
from controlplane.config.resources import (
    KubePort,
    KubeServiceSpec,
    Meta,
    ServiceEntrySpec,
    WorkloadSpec,
)
from controlplane.model import (
    Abort,
    ConnectionPool,
    ConsistentHash,
    Delay,
    DestinationPolicy,
    Fault,
    Gateway,
    GatewayServer,
    HeaderOperations,
    HttpConnectionPool,
    HttpMatch,
    HttpRoute,
    LoadBalancer,
    LoadBalancerKind,
    Locality,
    OutlierDetection,
    PortTrafficPolicy,
    Protocol,
    Redirect,
    Resolution,
    Retries,
    Rewrite,
    RouteDestination,
    ServicePort,
    StringMatch,
    StringMatchKind,
    Subset,
    TcpConnectionPool,
    TcpMatch,
    TcpRoute,
    TrafficPolicy,
    VirtualService,
)
from tests.config.helpers import FILE, dedent, doc, only_resource, spec_of

EXACT, PREFIX, REGEX = StringMatchKind.EXACT, StringMatchKind.PREFIX, StringMatchKind.REGEX
ISTIO_VERSIONS = (
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
)


def kube_service(spec: str, *, name: str = "web") -> str:
    return doc("Service", spec, name=name, api="v1")


def virtual_service(spec: str, *, namespace: str = "shop") -> VirtualService:
    converted = spec_of(doc("VirtualService", spec, name="vs", namespace=namespace))
    assert isinstance(converted, VirtualService)
    return converted


def http_route(rule: str, *, namespace: str = "shop") -> HttpRoute:
    """The single http rule of a VirtualService for host ``web`` whose rule is ``rule``."""
    body = "hosts: [web]\nhttp:\n- " + dedent(rule).replace("\n", "\n  ").rstrip() + "\n"
    (route,) = virtual_service(body, namespace=namespace).http
    return route


def http_match(match: str) -> HttpMatch:
    rule = "match:\n- " + dedent(match).replace("\n", "\n  ").rstrip()
    (found,) = http_route(rule + "\nroute:\n- destination: {host: web}\n").matches
    return found


def destination_rule(spec: str, *, namespace: str = "shop") -> DestinationPolicy:
    converted = spec_of(doc("DestinationRule", spec, name="dr", namespace=namespace))
    assert isinstance(converted, DestinationPolicy)
    return converted


def traffic_policy(policy: str) -> TrafficPolicy:
    indented = "\n".join("  " + line for line in dedent(policy).splitlines())
    return destination_rule(f"host: web\ntrafficPolicy:\n{indented}\n").traffic_policy


def load_balancer(lb: str) -> LoadBalancer | None:
    indented = "\n".join("  " + line for line in dedent(lb).splitlines())
    return traffic_policy(f"loadBalancer:\n{indented}\n").load_balancer


# --- envelope ---------------------------------------------------------------------------------


def test_meta_records_kind_namespace_name_file_document_line_and_sorted_labels() -> None:
    text = "kind: Gateway\n---\n" + dedent(
        """
        # a comment
        apiVersion: networking.istio.io/v1
        kind: Gateway
        metadata:
          name: edge
          namespace: infra
          labels: {team: net, app: edge}
          annotations: {note: kept}
        spec:
          servers:
          - port: {number: 80, protocol: HTTP, name: p}
            hosts: ["*"]
        """
    )
    result = read_text(FILE, text)
    (resource,) = result.resources
    assert resource.meta == Meta(
        kind="Gateway",
        namespace="infra",
        name="edge",
        file=FILE,
        doc=1,
        line=4,
        labels=(("app", "edge"), ("team", "net")),
    )
    assert resource.meta.key == ("Gateway", "infra", "edge")
    assert resource.meta.label == "Gateway infra/edge"


@pytest.mark.parametrize("namespace", ["", "null"])
def test_a_missing_or_empty_namespace_is_default(namespace: str) -> None:
    text = doc(
        "Gateway", "servers:\n- port: {number: 80, protocol: HTTP, name: p}\n  hosts: ['*']\n"
    )
    if namespace:
        text = text.replace("  name: x\n", f"  name: x\n  namespace: {namespace}\n")
    resource = only_resource(text)
    assert resource.meta.namespace == "default"
    assert isinstance(resource.spec, Gateway)
    assert resource.spec.namespace == "default"


@pytest.mark.parametrize("api", ISTIO_VERSIONS)
@pytest.mark.parametrize(
    ("kind", "spec"),
    [
        ("VirtualService", "hosts: [web]\nhttp:\n- route:\n  - destination: {host: web}\n"),
        ("DestinationRule", "host: web\n"),
        ("Gateway", "servers:\n- port: {number: 80, protocol: HTTP, name: p}\n  hosts: ['*']\n"),
        ("ServiceEntry", "hosts: [api.example.com]\n"),
        ("WorkloadEntry", "address: 10.0.0.1\n"),
    ],
)
def test_every_istio_kind_is_read_in_all_three_api_versions(api: str, kind: str, spec: str) -> None:
    resource = only_resource(doc(kind, spec, api=api))
    assert resource.meta.kind == kind


def test_every_kind_pilotfish_reads_is_covered_here() -> None:
    assert sorted(KINDS) == [
        "DestinationRule",
        "Gateway",
        "Service",
        "ServiceEntry",
        "VirtualService",
        "WorkloadEntry",
    ]
    assert KINDS["Service"][0] == ("v1",)
    assert all(KINDS[k][0] == ISTIO_VERSIONS for k in KINDS if k != "Service")


# --- Service ----------------------------------------------------------------------------------


def test_service_selector_and_ports_convert_to_a_kube_service_spec() -> None:
    spec = spec_of(
        kube_service(
            """
            selector: {version: v1, app: web}
            ports:
            - name: http-web
              port: 80
              targetPort: 8080
            - name: grpc
              port: 9090
              targetPort: grpc-port
            - name: metrics
              port: 9100
            """
        )
    )
    assert spec == KubeServiceSpec(
        selector=(("app", "web"), ("version", "v1")),
        ports=(
            KubePort(name="http-web", port=80, target_port=8080, protocol=Protocol.HTTP),
            KubePort(name="grpc", port=9090, target_port="grpc-port", protocol=Protocol.GRPC),
            KubePort(name="metrics", port=9100, target_port=None, protocol=Protocol.TCP),
        ),
    )


@pytest.mark.parametrize("selector", ["", "selector: {}\n", "selector: null\n"])
def test_a_service_without_a_selector_selects_nothing(selector: str) -> None:
    spec = spec_of(kube_service(selector + "ports:\n- port: 80\n"))
    assert spec == KubeServiceSpec(
        selector=None, ports=(KubePort(name="", port=80, target_port=None, protocol=Protocol.TCP),)
    )


@pytest.mark.parametrize(
    ("name", "protocol"),
    [
        ("http", Protocol.HTTP),
        ("http-web", Protocol.HTTP),
        ("HTTP-web", Protocol.HTTP),
        ("http2", Protocol.HTTP2),
        ("http2-api", Protocol.HTTP2),
        ("grpc", Protocol.GRPC),
        ("grpc-api", Protocol.GRPC),
        ("https", Protocol.HTTPS),
        ("tls-db", Protocol.TLS),
        ("tcp", Protocol.TCP),
        ("tcp-db", Protocol.TCP),
        ("mongo", Protocol.MONGO),
        ("redis-cache", Protocol.REDIS),
        ("mysql", Protocol.MYSQL),
        ("web", Protocol.TCP),
        ("httpweb", Protocol.TCP),
        ("web-http", Protocol.TCP),
    ],
)
def test_service_port_protocol_is_inferred_from_the_name_prefix(
    name: str, protocol: Protocol
) -> None:
    spec = spec_of(kube_service(f"ports:\n- name: {name}\n  port: 80\n"))
    assert isinstance(spec, KubeServiceSpec)
    assert spec.ports[0].protocol is protocol


@pytest.mark.parametrize(
    ("app_protocol", "name", "protocol"),
    [
        ("http", "tcp-legacy", Protocol.HTTP),
        ("HTTP", "web", Protocol.HTTP),
        ("grpc", "web", Protocol.GRPC),
        ("http2", "http", Protocol.HTTP2),
        ("h2c", "web", Protocol.HTTP2),
        ("kubernetes.io/h2c", "web", Protocol.HTTP2),
        ("http1.1", "web", Protocol.HTTP),
        ("tcp", "http", Protocol.TCP),
        ("example.com/custom", "http-web", Protocol.HTTP),
        ("example.com/custom", "web", Protocol.TCP),
    ],
)
def test_service_app_protocol_wins_over_the_port_name(
    app_protocol: str, name: str, protocol: Protocol
) -> None:
    text = kube_service(f"ports:\n- name: {name}\n  port: 80\n  appProtocol: {app_protocol}\n")
    spec = spec_of(text)
    assert isinstance(spec, KubeServiceSpec)
    assert spec.ports[0].protocol is protocol


@pytest.mark.parametrize(("value", "protocol"), [("TCP", Protocol.HTTP), ("UDP", Protocol.UDP)])
def test_service_port_protocol_field_tcp_keeps_inference_and_udp_is_udp(
    value: str, protocol: Protocol
) -> None:
    spec = spec_of(kube_service(f"ports:\n- name: http\n  port: 80\n  protocol: {value}\n"))
    assert isinstance(spec, KubeServiceSpec)
    assert spec.ports[0].protocol is protocol


def test_kubectl_service_output_with_cluster_fields_loads_without_findings() -> None:
    text = dedent(
        """
        apiVersion: v1
        kind: Service
        metadata:
          name: web
          namespace: shop
          uid: 7d1c9d1e-0000-4000-8000-000000000000
          resourceVersion: "12345"
          creationTimestamp: "2024-01-02T03:04:05Z"
          managedFields:
          - manager: kubectl
            operation: Update
            fieldsV1: {f:spec: {}}
        spec:
          type: ClusterIP
          clusterIP: 10.96.0.10
          clusterIPs: [10.96.0.10]
          ipFamilies: [IPv4]
          ipFamilyPolicy: SingleStack
          internalTrafficPolicy: Cluster
          sessionAffinity: None
          selector: {app: web}
          ports:
          - name: http
            port: 80
            protocol: TCP
            targetPort: 8080
        status:
          loadBalancer: {}
        """
    )
    assert spec_of(text) == KubeServiceSpec(
        selector=(("app", "web"),),
        ports=(KubePort(name="http", port=80, target_port=8080, protocol=Protocol.HTTP),),
    )


# --- WorkloadEntry ----------------------------------------------------------------------------


def test_workload_entry_converts_address_ports_labels_weight_and_locality() -> None:
    spec = spec_of(
        doc(
            "WorkloadEntry",
            """
            address: 10.0.0.7
            ports: {http: 9080, grpc: 9090}
            labels: {version: v2, app: reviews}
            weight: 3
            locality: us-east1/us-east1-b/rack-7
            """,
        )
    )
    assert spec == WorkloadSpec(
        address="10.0.0.7",
        ports=(("grpc", 9090), ("http", 9080)),
        labels=(("app", "reviews"), ("version", "v2")),
        weight=3,
        locality=Locality("us-east1", "us-east1-b", "rack-7"),
    )


def test_workload_entry_defaults_weight_1_and_no_ports_labels_or_locality() -> None:
    assert spec_of(doc("WorkloadEntry", "address: 10.0.0.7\n")) == WorkloadSpec(
        address="10.0.0.7", ports=(), labels=(), weight=1, locality=Locality("", "", "")
    )


@pytest.mark.parametrize(
    ("locality", "expected"),
    [
        ("us-east1", Locality("us-east1", "", "")),
        ("us-east1/b", Locality("us-east1", "b", "")),
        ("eu/west/1", Locality("eu", "west", "1")),
    ],
)
def test_workload_locality_is_region_zone_subzone(locality: str, expected: Locality) -> None:
    spec = spec_of(doc("WorkloadEntry", f"address: 10.0.0.7\nlocality: {locality}\n"))
    assert isinstance(spec, WorkloadSpec)
    assert spec.locality == expected
    assert str(spec.locality) == locality


@pytest.mark.parametrize(
    "address", ["10.0.0.7", "fd00::7", "reviews.example.com", "db-1", "unix:///run/app.sock"]
)
def test_workload_address_may_be_an_ip_a_host_name_or_a_unix_socket(address: str) -> None:
    spec = spec_of(doc("WorkloadEntry", f"address: '{address}'\n"))
    assert isinstance(spec, WorkloadSpec)
    assert spec.address == address


# --- ServiceEntry -----------------------------------------------------------------------------


def test_service_entry_converts_every_field() -> None:
    spec = spec_of(
        doc(
            "ServiceEntry",
            """
            hosts: [api.example.com, api2.example.com]
            addresses: [240.0.0.1/32]
            ports:
            - {number: 443, name: https, protocol: HTTPS}
            - {number: 80, name: http-web, targetPort: 8080}
            - {number: 5432, name: db, protocol: TCP}
            location: MESH_INTERNAL
            resolution: STATIC
            endpoints:
            - address: 10.0.0.1
              ports: {https: 8443}
              labels: {zone: a}
              locality: eu/west
              weight: 2
            - address: 10.0.0.2
            """,
        )
    )
    assert spec == ServiceEntrySpec(
        hosts=("api.example.com", "api2.example.com"),
        addresses=("240.0.0.1/32",),
        ports=(
            ServicePort(name="https", port=443, protocol=Protocol.HTTPS, target_port=None),
            ServicePort(name="http-web", port=80, protocol=Protocol.HTTP, target_port=8080),
            ServicePort(name="db", port=5432, protocol=Protocol.TCP, target_port=None),
        ),
        mesh_external=False,
        resolution=Resolution.STATIC,
        endpoints=(
            WorkloadSpec(
                address="10.0.0.1",
                ports=(("https", 8443),),
                labels=(("zone", "a"),),
                weight=2,
                locality=Locality("eu", "west", ""),
            ),
            WorkloadSpec(address="10.0.0.2"),
        ),
        workload_selector=None,
    )


def test_service_entry_defaults_to_mesh_external_resolution_none_no_selector() -> None:
    assert spec_of(doc("ServiceEntry", "hosts: [api.example.com]\n")) == ServiceEntrySpec(
        hosts=("api.example.com",),
        addresses=(),
        ports=(),
        mesh_external=True,
        resolution=Resolution.NONE,
        endpoints=(),
        workload_selector=None,
    )


@pytest.mark.parametrize(
    ("resolution", "expected"),
    [
        ("STATIC", Resolution.STATIC),
        ("DNS", Resolution.DNS),
        ("NONE", Resolution.NONE),
        ("DNS_ROUND_ROBIN", Resolution.DNS_ROUND_ROBIN),
        ("DYNAMIC_DNS", Resolution.DNS),
    ],
)
def test_service_entry_resolution(resolution: str, expected: Resolution) -> None:
    spec = spec_of(doc("ServiceEntry", f"hosts: [a.example.com]\nresolution: {resolution}\n"))
    assert isinstance(spec, ServiceEntrySpec)
    assert spec.resolution is expected


@pytest.mark.parametrize(
    ("location", "external"), [("MESH_EXTERNAL", True), ("MESH_INTERNAL", False)]
)
def test_service_entry_location(location: str, external: bool) -> None:
    spec = spec_of(doc("ServiceEntry", f"hosts: [a.example.com]\nlocation: {location}\n"))
    assert isinstance(spec, ServiceEntrySpec)
    assert spec.mesh_external is external


def test_service_entry_dns_endpoints_may_be_host_names() -> None:
    spec = spec_of(
        doc(
            "ServiceEntry",
            "hosts: [a.example.com]\nresolution: DNS\nendpoints:\n- address: a.backend.net\n",
        )
    )
    assert isinstance(spec, ServiceEntrySpec)
    assert spec.endpoints == (WorkloadSpec(address="a.backend.net"),)


def test_service_entry_workload_selector_becomes_sorted_labels() -> None:
    spec = spec_of(
        doc(
            "ServiceEntry",
            "hosts: [db.internal]\nworkloadSelector:\n  labels: {tier: db, app: pg}\n",
        )
    )
    assert isinstance(spec, ServiceEntrySpec)
    assert spec.workload_selector == (("app", "pg"), ("tier", "db"))


@pytest.mark.parametrize(
    ("port", "protocol"),
    [
        ("{number: 80, name: web, protocol: HTTP}", Protocol.HTTP),
        ("{number: 80, name: web, protocol: http}", Protocol.HTTP),
        ("{number: 80, name: web, protocol: GRPC}", Protocol.GRPC),
        ("{number: 80, name: web, protocol: HTTP2}", Protocol.HTTP2),
        ("{number: 80, name: web, protocol: TLS}", Protocol.TLS),
        ("{number: 80, name: web, protocol: MONGO}", Protocol.MONGO),
        ("{number: 80, name: http, protocol: TCP}", Protocol.TCP),
        ("{number: 80, name: http}", Protocol.HTTP),
        ("{number: 80, name: grpc-api}", Protocol.GRPC),
        ("{number: 80, name: web}", Protocol.TCP),
    ],
)
def test_service_entry_port_protocol_is_the_protocol_field_then_the_name(
    port: str, protocol: Protocol
) -> None:
    spec = spec_of(doc("ServiceEntry", f"hosts: [a.example.com]\nports:\n- {port}\n"))
    assert isinstance(spec, ServiceEntrySpec)
    assert spec.ports[0].protocol is protocol


# --- VirtualService: hosts and gateways -------------------------------------------------------


def test_virtual_service_short_hosts_expand_in_the_resources_namespace_others_stay() -> None:
    vs = virtual_service(
        """
        hosts:
        - reviews
        - ratings.prod
        - details.other.svc.cluster.local
        - api.example.com
        - "*.example.com"
        http:
        - route:
          - destination: {host: reviews}
        """,
        namespace="bookinfo",
    )
    assert vs.namespace == "bookinfo"
    assert vs.name == "vs"
    assert vs.hosts == (
        "reviews.bookinfo.svc.cluster.local",
        "ratings.prod",
        "details.other.svc.cluster.local",
        "api.example.com",
        "*.example.com",
    )


def test_a_two_label_external_host_is_taken_as_written() -> None:
    vs = virtual_service("hosts: [httpbin.org]\n")
    assert vs.hosts == ("httpbin.org",)


def test_virtual_service_without_gateways_applies_to_the_mesh() -> None:
    vs = virtual_service("hosts: [web]\n")
    assert vs.gateways == ("mesh",)
    assert vs.applies_to_mesh is True


def test_virtual_service_gateways_are_mesh_namespace_slash_name_or_as_written() -> None:
    vs = virtual_service(
        "hosts: [web]\ngateways: [mesh, edge, istio-system/ingress]\n", namespace="bookinfo"
    )
    assert vs.gateways == ("mesh", "bookinfo/edge", "istio-system/ingress")


def test_a_star_host_is_allowed_with_gateways_only() -> None:
    vs = virtual_service("hosts: ['*']\ngateways: [edge]\n")
    assert vs.hosts == ("*",)
    assert vs.gateways == ("shop/edge",)


# --- VirtualService: http match ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("{exact: /a}", StringMatch(EXACT, "/a")),
        ("{prefix: /api/}", StringMatch(PREFIX, "/api/")),
        ("{regex: '/v[0-9]+/.*'}", StringMatch(REGEX, "/v[0-9]+/.*")),
    ],
)
def test_uri_match_exact_prefix_and_regex(uri: str, expected: StringMatch) -> None:
    assert http_match(f"uri: {uri}\n") == HttpMatch(uri=expected)


def test_every_http_match_field_converts() -> None:
    match = http_match(
        """
        name: tester
        uri: {prefix: /api}
        scheme: {exact: https}
        method: {exact: POST}
        authority: {prefix: api.}
        headers:
          X-User: {exact: jason}
          cookie: {regex: '.*session=[a-z]+.*'}
          Accept: {prefix: application/}
        queryParams:
          Debug: {exact: "1"}
          q: {prefix: a}
        withoutHeaders:
          X-Canary: {exact: "yes"}
          x-internal: {}
        port: 8080
        ignoreUriCase: true
        gateways: [edge, mesh]
        """
    )
    assert match == HttpMatch(
        name="tester",
        uri=StringMatch(PREFIX, "/api"),
        scheme=StringMatch(EXACT, "https"),
        method=StringMatch(EXACT, "POST"),
        authority=StringMatch(PREFIX, "api."),
        headers=(
            ("accept", StringMatch(PREFIX, "application/")),
            ("x-user", StringMatch(EXACT, "jason")),
            ("cookie", StringMatch(REGEX, ".*session=[a-z]+.*")),
        ),
        without_headers=(("x-canary", StringMatch(EXACT, "yes")), ("x-internal", None)),
        query_params=(("Debug", StringMatch(EXACT, "1")), ("q", StringMatch(PREFIX, "a"))),
        port=8080,
        ignore_uri_case=True,
        gateways=("shop/edge", "mesh"),
    )


def test_several_matches_keep_their_order_and_an_empty_match_is_catch_all() -> None:
    route = http_route(
        """
        match:
        - uri: {prefix: /b}
        - uri: {prefix: /a}
        - {}
        route:
        - destination: {host: web}
        """
    )
    assert route.matches == (
        HttpMatch(uri=StringMatch(PREFIX, "/b")),
        HttpMatch(uri=StringMatch(PREFIX, "/a")),
        HttpMatch(),
    )
    assert route.is_catch_all is True


# --- VirtualService: route, redirect, rewrite -------------------------------------------------


def test_a_single_route_destination_gets_weight_100() -> None:
    route = http_route(
        """
        name: main
        route:
        - destination:
            host: reviews
            subset: v1
            port: {number: 9080}
        """
    )
    assert route == HttpRoute(
        name="main",
        destinations=(
            RouteDestination(host="reviews.shop.svc.cluster.local", subset="v1", port=9080),
        ),
    )
    assert route.destinations[0].weight == 100


def test_weighted_destinations_keep_their_weights_and_order() -> None:
    route = http_route(
        """
        route:
        - destination: {host: reviews.prod, subset: v1}
          weight: 75
        - destination: {host: reviews.prod, subset: v3}
          weight: 25
        - destination: {host: api.example.com}
          weight: 0
        """
    )
    assert route.destinations == (
        RouteDestination(host="reviews.prod", subset="v1", weight=75),
        RouteDestination(host="reviews.prod", subset="v3", weight=25),
        RouteDestination(host="api.example.com", weight=0),
    )


def test_redirect_converts_every_field() -> None:
    route = http_route(
        """
        match: [{uri: {exact: /old}}]
        redirect:
          uri: /new
          authority: new.example.com
          port: 8443
          scheme: https
          redirectCode: 308
        """
    )
    assert route.destinations == ()
    assert route.redirect == Redirect(
        uri="/new", authority="new.example.com", port=8443, scheme="https", redirect_code=308
    )


def test_redirect_code_defaults_to_301() -> None:
    assert http_route("redirect: {uri: /new}\n").redirect == Redirect(uri="/new")
    assert Redirect().redirect_code == 301


def test_rewrite_uri_and_authority() -> None:
    route = http_route(
        "rewrite: {uri: /, authority: internal}\nroute:\n- destination: {host: web}\n"
    )
    assert route.rewrite == Rewrite(uri="/", authority="internal")


# --- VirtualService: timeout, retries, fault, mirror, headers ---------------------------------


def test_timeout_and_retries() -> None:
    route = http_route(
        """
        route:
        - destination: {host: web}
        timeout: 1.5s
        retries:
          attempts: 3
          perTryTimeout: 250ms
          retryOn: " 5xx,connect-failure ,,reset"
        """
    )
    assert route.timeout == timedelta(seconds=1.5)
    assert route.retries == Retries(
        attempts=3,
        per_try_timeout=timedelta(milliseconds=250),
        retry_on=("5xx", "connect-failure", "reset"),
    )


def test_retries_with_only_attempts_have_no_per_try_timeout_or_conditions() -> None:
    route = http_route("route:\n- destination: {host: web}\nretries: {attempts: 0}\n")
    assert route.retries == Retries(attempts=0, per_try_timeout=None, retry_on=())


def test_fault_delay_and_abort_with_percentages() -> None:
    route = http_route(
        """
        route:
        - destination: {host: web}
        fault:
          delay:
            fixedDelay: 5s
            percentage: {value: 12.5}
          abort:
            httpStatus: 503
            percentage: {value: 50}
        """
    )
    assert route.fault == Fault(
        delay=Delay(fixed_delay=timedelta(seconds=5), percentage=12.5),
        abort=Abort(http_status=503, grpc_status=None, percentage=50.0),
    )


def test_fault_percentages_default_to_100_and_abort_may_be_a_grpc_status() -> None:
    route = http_route(
        """
        route:
        - destination: {host: web}
        fault:
          delay: {fixedDelay: 100ms}
          abort: {grpcStatus: UNAVAILABLE}
        """
    )
    assert route.fault == Fault(
        delay=Delay(fixed_delay=timedelta(milliseconds=100), percentage=100.0),
        abort=Abort(http_status=None, grpc_status="UNAVAILABLE", percentage=100.0),
    )


def test_mirror_and_mirror_percentage() -> None:
    route = http_route(
        """
        route:
        - destination: {host: web}
        mirror:
          host: shadow
          subset: v2
          port: {number: 8080}
        mirrorPercentage: {value: 10.5}
        """
    )
    assert route.mirror == RouteDestination(
        host="shadow.shop.svc.cluster.local", subset="v2", port=8080
    )
    assert route.mirror_percentage == 10.5


def test_mirror_without_a_percentage_has_none() -> None:
    route = http_route("route:\n- destination: {host: web}\nmirror: {host: shadow}\n")
    assert route.mirror == RouteDestination(host="shadow.shop.svc.cluster.local")
    assert route.mirror_percentage is None


def test_route_level_and_destination_level_header_operations() -> None:
    route = http_route(
        """
        route:
        - destination: {host: web}
          headers:
            request:
              set: {X-Dest: "1"}
            response:
              remove: [X-Debug]
        headers:
          request:
            set: {X-B: b, x-a: a}
            add: {X-Trace: on-route}
            remove: [X-Internal, cookie]
          response:
            add: {Cache-Control: no-store}
        """
    )
    assert route.request_headers == HeaderOperations(
        set=(("x-a", "a"), ("x-b", "b")),
        add=(("x-trace", "on-route"),),
        remove=("x-internal", "cookie"),
    )
    assert route.response_headers == HeaderOperations(add=(("cache-control", "no-store"),))
    (destination,) = route.destinations
    assert destination.request_headers == HeaderOperations(set=(("x-dest", "1"),))
    assert destination.response_headers == HeaderOperations(remove=("x-debug",))


def test_a_rule_without_extras_has_empty_defaults() -> None:
    assert http_route("route:\n- destination: {host: web}\n") == HttpRoute(
        name="",
        matches=(),
        destinations=(RouteDestination(host="web.shop.svc.cluster.local", weight=100),),
        redirect=None,
        rewrite=None,
        timeout=None,
        retries=None,
        fault=None,
        mirror=None,
        mirror_percentage=None,
        request_headers=HeaderOperations(),
        response_headers=HeaderOperations(),
    )


def test_http_rules_keep_their_order() -> None:
    vs = virtual_service(
        """
        hosts: [web]
        http:
        - name: first
          match: [{uri: {prefix: /a}}]
          route: [{destination: {host: a}}]
        - name: second
          route: [{destination: {host: b}}]
        """
    )
    assert [r.name for r in vs.http] == ["first", "second"]


# --- VirtualService: tcp ----------------------------------------------------------------------


def test_tcp_routes_convert_match_port_and_weighted_destinations() -> None:
    vs = virtual_service(
        """
        hosts: [db]
        tcp:
        - match:
          - port: 5432
          route:
          - destination: {host: db, subset: primary, port: {number: 5432}}
            weight: 90
          - destination: {host: db, subset: replica, port: {number: 5432}}
            weight: 10
        - route:
          - destination: {host: db-fallback}
        """
    )
    assert vs.http == ()
    assert vs.tcp == (
        TcpRoute(
            matches=(TcpMatch(port=5432),),
            destinations=(
                RouteDestination(
                    host="db.shop.svc.cluster.local", subset="primary", port=5432, weight=90
                ),
                RouteDestination(
                    host="db.shop.svc.cluster.local", subset="replica", port=5432, weight=10
                ),
            ),
        ),
        TcpRoute(
            matches=(),
            destinations=(RouteDestination(host="db-fallback.shop.svc.cluster.local"),),
        ),
    )


# --- DestinationRule --------------------------------------------------------------------------


def test_destination_rule_host_is_expanded_in_its_namespace() -> None:
    policy = destination_rule("host: reviews\n", namespace="bookinfo")
    assert policy == DestinationPolicy(
        host="reviews.bookinfo.svc.cluster.local",
        namespace="bookinfo",
        name="dr",
        traffic_policy=TrafficPolicy(),
        subsets=(),
    )


@pytest.mark.parametrize(
    ("simple", "kind"),
    [
        ("ROUND_ROBIN", LoadBalancerKind.ROUND_ROBIN),
        ("RANDOM", LoadBalancerKind.RANDOM),
        ("LEAST_REQUEST", LoadBalancerKind.LEAST_REQUEST),
        ("LEAST_CONN", LoadBalancerKind.LEAST_REQUEST),
        ("PASSTHROUGH", LoadBalancerKind.PASSTHROUGH),
    ],
)
def test_simple_load_balancers(simple: str, kind: LoadBalancerKind) -> None:
    assert load_balancer(f"simple: {simple}\n") == LoadBalancer(kind, None)


def test_unspecified_load_balancer_is_none() -> None:
    assert load_balancer("simple: UNSPECIFIED\n") is None


@pytest.mark.parametrize(
    ("hashing", "expected"),
    [
        ("httpHeaderName: x-user", ConsistentHash(http_header_name="x-user")),
        (
            "httpCookie: {name: session, path: /, ttl: 60s}",
            ConsistentHash(
                http_cookie_name="session",
                http_cookie_path="/",
                http_cookie_ttl=timedelta(seconds=60),
            ),
        ),
        ("httpCookie: {name: session}", ConsistentHash(http_cookie_name="session")),
        ("useSourceIp: true", ConsistentHash(use_source_ip=True)),
        ("httpQueryParameterName: user", ConsistentHash(http_query_parameter_name="user")),
        (
            "useSourceIp: true\nminimumRingSize: 2048",
            ConsistentHash(use_source_ip=True, minimum_ring_size=2048),
        ),
        (
            "useSourceIp: true\nminimumRingSize: '4096'",
            ConsistentHash(use_source_ip=True, minimum_ring_size=4096),
        ),
        (
            "useSourceIp: true\nringHash: {minimumRingSize: 1024}",
            ConsistentHash(use_source_ip=True, minimum_ring_size=1024),
        ),
        (
            "httpHeaderName: x-user\nmaglev: {tableSize: 1031}",
            ConsistentHash(http_header_name="x-user", maglev=True, maglev_table_size=1031),
        ),
        ("useSourceIp: true\nmaglev: {}", ConsistentHash(use_source_ip=True, maglev=True)),
    ],
)
def test_consistent_hash_load_balancers(hashing: str, expected: ConsistentHash) -> None:
    indented = "\n".join("  " + line for line in hashing.splitlines())
    assert load_balancer(f"consistentHash:\n{indented}\n") == LoadBalancer(
        LoadBalancerKind.CONSISTENT_HASH, expected
    )


def test_connection_pool_tcp_and_http_settings() -> None:
    policy = traffic_policy(
        """
        connectionPool:
          tcp:
            maxConnections: 100
            connectTimeout: 2s
          http:
            http1MaxPendingRequests: 64
            http2MaxRequests: 1000
            maxRequestsPerConnection: 10
            maxRetries: 3
            idleTimeout: 1m
        """
    )
    assert policy.connection_pool == ConnectionPool(
        tcp=TcpConnectionPool(max_connections=100, connect_timeout=timedelta(seconds=2)),
        http=HttpConnectionPool(
            http1_max_pending_requests=64,
            http2_max_requests=1000,
            max_requests_per_connection=10,
            max_retries=3,
            idle_timeout=timedelta(minutes=1),
        ),
    )


def test_connection_pool_with_only_tcp_has_no_http_settings() -> None:
    policy = traffic_policy("connectionPool:\n  tcp: {maxConnections: 1}\n")
    assert policy.connection_pool == ConnectionPool(tcp=TcpConnectionPool(max_connections=1))


def test_outlier_detection_settings() -> None:
    policy = traffic_policy(
        """
        outlierDetection:
          consecutive5xxErrors: 5
          consecutiveGatewayErrors: 2
          interval: 10s
          baseEjectionTime: 30s
          maxEjectionPercent: 50
        """
    )
    assert policy.outlier_detection == OutlierDetection(
        consecutive_5xx_errors=5,
        consecutive_gateway_errors=2,
        interval=timedelta(seconds=10),
        base_ejection_time=timedelta(seconds=30),
        max_ejection_percent=50,
    )


def test_port_level_settings_are_sorted_by_port() -> None:
    policy = traffic_policy(
        """
        loadBalancer: {simple: RANDOM}
        portLevelSettings:
        - port: {number: 9090}
          connectionPool:
            http: {maxRetries: 1}
        - port: {number: 8080}
          loadBalancer: {simple: ROUND_ROBIN}
          outlierDetection: {consecutive5xxErrors: 1}
        """
    )
    assert policy == TrafficPolicy(
        load_balancer=LoadBalancer(LoadBalancerKind.RANDOM),
        port_level=(
            PortTrafficPolicy(
                port=8080,
                load_balancer=LoadBalancer(LoadBalancerKind.ROUND_ROBIN),
                outlier_detection=OutlierDetection(consecutive_5xx_errors=1),
            ),
            PortTrafficPolicy(
                port=9090, connection_pool=ConnectionPool(http=HttpConnectionPool(max_retries=1))
            ),
        ),
    )


def test_subsets_keep_name_sorted_labels_and_their_own_policy() -> None:
    policy = destination_rule(
        """
        host: reviews
        subsets:
        - name: v1
          labels: {version: v1, app: reviews}
        - name: v2
          labels: {version: v2}
          trafficPolicy:
            loadBalancer: {simple: LEAST_REQUEST}
        """
    )
    assert policy.subsets == (
        Subset(name="v1", labels=(("app", "reviews"), ("version", "v1")), traffic_policy=None),
        Subset(
            name="v2",
            labels=(("version", "v2"),),
            traffic_policy=TrafficPolicy(
                load_balancer=LoadBalancer(LoadBalancerKind.LEAST_REQUEST)
            ),
        ),
    )
    assert policy.subset("v2") is policy.subsets[1]
    assert policy.subset("v9") is None


EFFECTIVE = """
host: reviews
trafficPolicy:
  loadBalancer: {simple: RANDOM}
  connectionPool:
    tcp: {maxConnections: 10}
  outlierDetection: {consecutive5xxErrors: 7}
  portLevelSettings:
  - port: {number: 9080}
    connectionPool:
      tcp: {maxConnections: 99}
subsets:
- name: v1
  labels: {version: v1}
- name: v2
  labels: {version: v2}
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
- name: v3
  labels: {version: v3}
  trafficPolicy:
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: LEAST_REQUEST}
"""
RANDOM_LB = LoadBalancer(LoadBalancerKind.RANDOM)
POOL_10 = ConnectionPool(tcp=TcpConnectionPool(max_connections=10))
POOL_99 = ConnectionPool(tcp=TcpConnectionPool(max_connections=99))
OUTLIER_7 = OutlierDetection(consecutive_5xx_errors=7)


def test_effective_policy_of_the_host_for_another_port_drops_port_level_settings() -> None:
    assert destination_rule(EFFECTIVE).effective(8080) == TrafficPolicy(
        load_balancer=RANDOM_LB, connection_pool=POOL_10, outlier_detection=OUTLIER_7
    )


def test_effective_policy_applies_the_port_level_setting_for_its_port() -> None:
    assert destination_rule(EFFECTIVE).effective(9080) == TrafficPolicy(
        load_balancer=RANDOM_LB, connection_pool=POOL_99, outlier_detection=OUTLIER_7
    )


@pytest.mark.parametrize("subset", ["v1", "v9", None])
def test_effective_policy_of_a_subset_without_a_policy_is_the_hosts(subset: str | None) -> None:
    policy = destination_rule(EFFECTIVE)
    assert policy.effective(8080, subset) == policy.effective(8080)


def test_effective_policy_of_a_subset_overrides_the_host_field_by_field() -> None:
    assert destination_rule(EFFECTIVE).effective(8080, "v2") == TrafficPolicy(
        load_balancer=LoadBalancer(LoadBalancerKind.ROUND_ROBIN),
        connection_pool=POOL_10,
        outlier_detection=OUTLIER_7,
    )


def test_effective_policy_applies_a_subsets_port_level_setting() -> None:
    assert destination_rule(EFFECTIVE).effective(9080, "v3").load_balancer == LoadBalancer(
        LoadBalancerKind.LEAST_REQUEST
    )


def test_effective_policy_of_a_subset_keeps_host_port_level_settings_it_does_not_set() -> None:
    policy = destination_rule(EFFECTIVE)
    assert policy.effective(9080, "v2") == TrafficPolicy(
        load_balancer=LoadBalancer(LoadBalancerKind.ROUND_ROBIN),
        connection_pool=POOL_99,
        outlier_detection=OUTLIER_7,
    )
    assert policy.effective(9080, "v3").connection_pool == POOL_99


# --- Gateway ----------------------------------------------------------------------------------


def test_gateway_selector_and_servers_convert() -> None:
    spec = spec_of(
        doc(
            "Gateway",
            """
            selector: {istio: ingressgateway, app: edge}
            servers:
            - port: {number: 80, name: http, protocol: HTTP}
              hosts: ["*"]
            - port: {number: 8443, name: tcp-shop, protocol: TCP}
              hosts: [shop/www.example.com, "*.example.com"]
            - port: {number: 9000, protocol: grpc, name: grpc}
              hosts: [api.example.com]
            """,
            name="edge",
            namespace="infra",
        )
    )
    assert spec == Gateway(
        namespace="infra",
        name="edge",
        selector=(("app", "edge"), ("istio", "ingressgateway")),
        servers=(
            GatewayServer(port=80, port_name="http", protocol=Protocol.HTTP, hosts=("*",)),
            GatewayServer(
                port=8443,
                port_name="tcp-shop",
                protocol=Protocol.TCP,
                hosts=("shop/www.example.com", "*.example.com"),
            ),
            GatewayServer(
                port=9000, port_name="grpc", protocol=Protocol.GRPC, hosts=("api.example.com",)
            ),
        ),
    )
    assert spec.key == "infra/edge"


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("HTTP", Protocol.HTTP),
        ("GRPC", Protocol.GRPC),
        ("HTTP2", Protocol.HTTP2),
        ("MONGO", Protocol.MONGO),
        ("TCP", Protocol.TCP),
        ("tcp", Protocol.TCP),
    ],
)
def test_gateway_server_protocols(protocol: str, expected: Protocol) -> None:
    spec = spec_of(
        doc(
            "Gateway",
            f"servers:\n- port: {{number: 80, protocol: {protocol}, name: p}}\n  hosts: [a]\n",
        )
    )
    assert isinstance(spec, Gateway)
    assert spec.servers[0].protocol is expected


def test_a_gateway_without_a_selector_has_an_empty_one() -> None:
    spec = spec_of(
        doc("Gateway", "servers:\n- port: {number: 80, protocol: HTTP, name: p}\n  hosts: [a]\n")
    )
    assert isinstance(spec, Gateway)
    assert spec.selector == ()
