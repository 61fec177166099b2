"""Model builders and the bookinfo-like mesh the translation tests share."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from controlplane.model import (
    Abort,
    ConnectionPool,
    ConsistentHash,
    Delay,
    DestinationPolicy,
    Endpoint,
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
    Mesh,
    OutlierDetection,
    PortTrafficPolicy,
    Protocol,
    Redirect,
    Resolution,
    Retries,
    Rewrite,
    RouteDestination,
    Service,
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
from controlplane.translate import resource_name

NO_LOCALITY = Locality()
ZONE_A = Locality("us-east1", "us-east1-a")
ZONE_B = Locality("us-east1", "us-east1-b")


def http_service(
    name: str,
    endpoints: tuple[Endpoint, ...] = (),
    *,
    port: int = 9080,
    namespace: str = "default",
    protocol: Protocol = Protocol.HTTP,
) -> Service:
    return Service(
        host=f"{name}.{namespace}.svc.cluster.local",
        namespace=namespace,
        name=name,
        ports=(ServicePort("http", port, protocol),),
        endpoints=((port, endpoints),),
    )


def version(
    address: str, app: str, v: str, *, locality: Locality = NO_LOCALITY, weight: int = 1
) -> Endpoint:
    return Endpoint(
        address, 9080, labels=(("app", app), ("version", v)), weight=weight, locality=locality
    )


def exact(value: str) -> StringMatch:
    return StringMatch(StringMatchKind.EXACT, value)


def prefix(value: str) -> StringMatch:
    return StringMatch(StringMatchKind.PREFIX, value)


def regex(value: str) -> StringMatch:
    return StringMatch(StringMatchKind.REGEX, value)


REVIEWS = "reviews.default.svc.cluster.local"
RATINGS = "ratings.default.svc.cluster.local"
PRODUCTPAGE = "productpage.default.svc.cluster.local"
DETAILS = "details.default.svc.cluster.local"
MONGODB = "mongodb.default.svc.cluster.local"
HTTPBIN = "httpbin.org"


def _subsets(*versions: str) -> tuple[Subset, ...]:
    return tuple(Subset(v, (("version", v),)) for v in versions)


def bookinfo_mesh() -> Mesh:
    services = (
        http_service("productpage", (version("10.0.0.1", "productpage", "v1"),)),
        http_service("details", (version("10.0.3.1", "details", "v1"),)),
        http_service(
            "reviews",
            (
                version("10.0.1.1", "reviews", "v1", locality=ZONE_A),
                version("10.0.1.2", "reviews", "v2", locality=ZONE_A, weight=2),
                version("10.0.1.3", "reviews", "v3", locality=ZONE_B),
            ),
        ),
        http_service(
            "ratings",
            (version("10.0.2.1", "ratings", "v1"), version("10.0.2.2", "ratings", "v2")),
        ),
        Service(
            host=MONGODB,
            namespace="default",
            name="mongodb",
            ports=(ServicePort("mongo", 27017, Protocol.TCP),),
            endpoints=((27017, (Endpoint("10.0.4.1", 27017),)),),
        ),
        Service(
            host=HTTPBIN,
            namespace="default",
            name="httpbin",
            ports=(ServicePort("http", 80, Protocol.HTTP),),
            endpoints=(),
            resolution=Resolution.DNS,
            mesh_external=True,
        ),
    )
    policies = (
        DestinationPolicy(
            host=REVIEWS,
            namespace="default",
            name="reviews",
            traffic_policy=TrafficPolicy(
                load_balancer=LoadBalancer(LoadBalancerKind.LEAST_REQUEST),
                outlier_detection=OutlierDetection(
                    consecutive_5xx_errors=3,
                    interval=timedelta(seconds=5),
                    base_ejection_time=timedelta(seconds=30),
                    max_ejection_percent=50,
                ),
            ),
            subsets=(
                *_subsets("v1", "v2"),
                Subset(
                    "v3",
                    (("version", "v3"),),
                    TrafficPolicy(
                        load_balancer=LoadBalancer(
                            LoadBalancerKind.CONSISTENT_HASH,
                            ConsistentHash(http_header_name="x-user", minimum_ring_size=1024),
                        )
                    ),
                ),
            ),
        ),
        DestinationPolicy(
            host=RATINGS, namespace="default", name="ratings", subsets=_subsets("v1", "v2")
        ),
    )
    virtual_services = (
        VirtualService(
            namespace="default",
            name="bookinfo",
            hosts=("*",),
            gateways=("default/bookinfo-gateway",),
            http=(
                HttpRoute(
                    matches=(
                        HttpMatch(uri=exact("/productpage")),
                        HttpMatch(uri=prefix("/static")),
                        HttpMatch(uri=exact("/login")),
                        HttpMatch(uri=prefix("/api/v1/products")),
                    ),
                    destinations=(RouteDestination(PRODUCTPAGE, port=9080),),
                ),
            ),
        ),
        VirtualService(
            namespace="default",
            name="mongodb",
            hosts=(MONGODB,),
            tcp=(TcpRoute(destinations=(RouteDestination(MONGODB),)),),
        ),
        VirtualService(
            namespace="default",
            name="ratings",
            hosts=(RATINGS,),
            http=(
                HttpRoute(
                    destinations=(RouteDestination(RATINGS, subset="v1"),),
                    fault=Fault(delay=Delay(timedelta(seconds=7), percentage=10.0)),
                ),
            ),
        ),
        VirtualService(
            namespace="default",
            name="reviews",
            hosts=(REVIEWS,),
            http=(
                HttpRoute(
                    name="jason",
                    matches=(HttpMatch(headers=(("end-user", exact("jason")),)),),
                    destinations=(RouteDestination(REVIEWS, subset="v2"),),
                ),
                HttpRoute(
                    name="split",
                    destinations=(
                        RouteDestination(REVIEWS, subset="v1", weight=50),
                        RouteDestination(REVIEWS, subset="v3", weight=50),
                    ),
                ),
            ),
        ),
    )
    gateways = (
        Gateway(
            namespace="default",
            name="bookinfo-gateway",
            selector=(("istio", "ingressgateway"),),
            servers=(GatewayServer(8080, "http", Protocol.HTTP, ("*",)),),
        ),
    )
    return Mesh(
        services=tuple(sorted(services, key=lambda s: s.host)),
        destination_policies=policies,
        virtual_services=virtual_services,
        gateways=gateways,
    )


SHOP = "shop"
WEB = "web.shop.svc.cluster.local"
OTHER_WEB = "web.other.svc.cluster.local"
LEGACY = "legacy.shop.svc.cluster.local"
VAULT = "vault.example.com"
CACHE = "cache.shop.svc.cluster.local"
EDGE_KEY = "shop/edge"


def kitchen_sink_mesh() -> Mesh:
    """A mesh using every feature translation supports, for the Envoy acceptance check."""
    web_endpoints = (
        Endpoint("10.1.0.1", 8080, (("track", "stable"),), weight=3, locality=ZONE_A),
        Endpoint("10.1.0.2", 8080, (("track", "canary"),), weight=0, locality=ZONE_B),
        Endpoint("10.1.0.3", 8080, (("track", "stable"),), locality=Locality()),
    )
    grpc_endpoints = tuple(Endpoint(e.address, 9090, e.labels) for e in web_endpoints)
    services = (
        Service(
            host=WEB,
            namespace=SHOP,
            name="web",
            ports=(
                ServicePort("http", 80, Protocol.HTTP, 8080),
                ServicePort("grpc", 9090, Protocol.GRPC),
            ),
            endpoints=((80, web_endpoints), (9090, grpc_endpoints)),
        ),
        http_service("web", (Endpoint("10.2.0.1", 80),), port=80, namespace="other"),
        Service(
            host=LEGACY,
            namespace=SHOP,
            name="legacy",
            ports=(ServicePort("http", 8080, Protocol.HTTP2),),
            endpoints=(
                (
                    8080,
                    (
                        Endpoint("legacy-a.example.com", 8080),
                        Endpoint("legacy-b.example.com", 8080),
                    ),
                ),
            ),
            resolution=Resolution.DNS_ROUND_ROBIN,
        ),
        Service(
            host=VAULT,
            namespace=SHOP,
            name="vault",
            ports=(ServicePort("tls", 443, Protocol.TLS),),
            endpoints=(),
            resolution=Resolution.NONE,
            mesh_external=True,
        ),
        Service(
            host=CACHE,
            namespace=SHOP,
            name="cache",
            ports=(ServicePort("redis", 6379, Protocol.REDIS),),
            endpoints=(
                (
                    6379,
                    (
                        Endpoint("10.3.0.1", 6379, (("role", "primary"),)),
                        Endpoint("10.3.0.2", 6379, (("role", "replica"),)),
                    ),
                ),
            ),
        ),
    )
    policies = (
        DestinationPolicy(
            host=WEB,
            namespace=SHOP,
            name="web",
            traffic_policy=TrafficPolicy(
                load_balancer=LoadBalancer(LoadBalancerKind.ROUND_ROBIN),
                connection_pool=ConnectionPool(
                    tcp=TcpConnectionPool(
                        max_connections=100, connect_timeout=timedelta(seconds=3)
                    ),
                    http=HttpConnectionPool(
                        http1_max_pending_requests=10,
                        http2_max_requests=1000,
                        max_requests_per_connection=5,
                        max_retries=3,
                        idle_timeout=timedelta(minutes=1),
                    ),
                ),
                outlier_detection=OutlierDetection(
                    consecutive_5xx_errors=0,
                    consecutive_gateway_errors=4,
                    interval=timedelta(seconds=10),
                ),
                port_level=(PortTrafficPolicy(9090, LoadBalancer(LoadBalancerKind.RANDOM)),),
            ),
            subsets=(
                Subset(
                    "canary",
                    (("track", "canary"),),
                    TrafficPolicy(
                        load_balancer=LoadBalancer(
                            LoadBalancerKind.CONSISTENT_HASH,
                            ConsistentHash(
                                http_cookie_name="session",
                                http_cookie_path="/",
                                http_cookie_ttl=timedelta(hours=1),
                            ),
                        )
                    ),
                ),
                Subset(
                    "stable",
                    (("track", "stable"),),
                    TrafficPolicy(
                        load_balancer=LoadBalancer(
                            LoadBalancerKind.CONSISTENT_HASH, ConsistentHash(use_source_ip=True)
                        )
                    ),
                ),
            ),
        ),
        DestinationPolicy(
            host=LEGACY,
            namespace=SHOP,
            name="legacy",
            traffic_policy=TrafficPolicy(
                load_balancer=LoadBalancer(
                    LoadBalancerKind.CONSISTENT_HASH,
                    ConsistentHash(http_query_parameter_name="user"),
                )
            ),
            subsets=(Subset("none", (("track", "nowhere"),)),),
        ),
        DestinationPolicy(
            host=CACHE,
            namespace=SHOP,
            name="cache",
            traffic_policy=TrafficPolicy(load_balancer=LoadBalancer(LoadBalancerKind.PASSTHROUGH)),
            subsets=(
                Subset("primary", (("role", "primary"),)),
                Subset(
                    "replica",
                    (("role", "replica"),),
                    TrafficPolicy(load_balancer=LoadBalancer(LoadBalancerKind.LEAST_REQUEST)),
                ),
            ),
        ),
    )
    web_rules = (
        HttpRoute(
            name="moved",
            matches=(HttpMatch(name="old", uri=exact("/old")),),
            redirect=Redirect(
                uri="/new",
                authority="new.example.com",
                port=8443,
                scheme="https",
                redirect_code=308,
            ),
        ),
        HttpRoute(
            name="api",
            matches=(
                HttpMatch(
                    uri=prefix("/api"),
                    ignore_uri_case=True,
                    method=exact("GET"),
                    query_params=(("version", exact("v2")),),
                    scheme=exact("http"),
                    authority=prefix("web"),
                ),
            ),
            destinations=(
                RouteDestination(
                    WEB,
                    subset="canary",
                    weight=90,
                    request_headers=HeaderOperations(set=(("x-track", "canary"),)),
                ),
                RouteDestination(
                    WEB,
                    subset="stable",
                    weight=10,
                    response_headers=HeaderOperations(remove=("x-internal",)),
                ),
                RouteDestination(WEB, subset="retired", weight=0),
            ),
            rewrite=Rewrite(uri="/", authority="api.internal"),
            timeout=timedelta(seconds=5),
            retries=Retries(3, timedelta(seconds=2), ("5xx", "503", "reset")),
            mirror=RouteDestination(LEGACY),
            mirror_percentage=25.0,
        ),
        HttpRoute(
            name="items",
            matches=(
                HttpMatch(
                    uri=regex("/items/[0-9]+"),
                    headers=(("x-env", regex("prod|staging")),),
                    without_headers=(("x-debug", None), ("x-canary", exact("true"))),
                ),
            ),
            destinations=(RouteDestination(WEB, port=80, subset="stable"),),
            rewrite=Rewrite(uri="/item"),
            fault=Fault(abort=Abort(http_status=503, percentage=50.0)),
        ),
        HttpRoute(
            name="grpc",
            matches=(HttpMatch(port=9090),),
            destinations=(RouteDestination(WEB),),
            fault=Fault(
                delay=Delay(timedelta(milliseconds=500), 0.5),
                abort=Abort(grpc_status="UNAVAILABLE", percentage=1.5),
            ),
        ),
        HttpRoute(
            name="ghost",
            matches=(HttpMatch(uri=prefix("/ghost")),),
            destinations=(RouteDestination("ghost.shop.svc.cluster.local"),),
        ),
        HttpRoute(
            name="rest",
            destinations=(
                RouteDestination(
                    WEB, response_headers=HeaderOperations(add=(("x-served-by", "web"),))
                ),
            ),
            retries=Retries(0),
            request_headers=HeaderOperations(
                set=(("x-mesh", "pilotfish"),), add=(("x-hop", "1"),), remove=("x-secret",)
            ),
        ),
    )
    virtual_services = (
        VirtualService(
            namespace=SHOP,
            name="cache",
            hosts=(CACHE,),
            tcp=(
                TcpRoute(
                    matches=(TcpMatch(port=6379),),
                    destinations=(
                        RouteDestination(CACHE, subset="primary", weight=80),
                        RouteDestination(CACHE, subset="replica", weight=20),
                    ),
                ),
            ),
        ),
        VirtualService(
            namespace=SHOP,
            name="edge",
            hosts=("www.example.com", "shop.example.com"),
            gateways=(EDGE_KEY,),
            http=(
                HttpRoute(
                    matches=(HttpMatch(uri=prefix("/"), gateways=(EDGE_KEY,)),),
                    destinations=(RouteDestination(WEB, port=80),),
                ),
            ),
        ),
        VirtualService(
            namespace=SHOP,
            name="edge-tcp",
            hosts=("*",),
            gateways=(EDGE_KEY,),
            tcp=(
                TcpRoute(
                    matches=(TcpMatch(port=443),),
                    destinations=(RouteDestination(VAULT, port=443),),
                ),
                TcpRoute(
                    matches=(TcpMatch(port=9000),),
                    destinations=(RouteDestination(CACHE, subset="replica"),),
                ),
            ),
        ),
        VirtualService(namespace=SHOP, name="web", hosts=(WEB,), http=web_rules),
    )
    gateways = (
        Gateway(
            namespace=SHOP,
            name="edge",
            selector=(("app", "edge"),),
            servers=(
                GatewayServer(80, "http", Protocol.HTTP, ("shop/*.example.com",)),
                GatewayServer(443, "tls", Protocol.TLS, ("*",)),
                GatewayServer(9000, "tcp", Protocol.TCP, ("*",)),
                GatewayServer(9001, "tcp-unrouted", Protocol.TCP, ("*",)),
                GatewayServer(
                    8081,
                    "http-redirect",
                    Protocol.HTTP,
                    ("secure.example.com",),
                    https_redirect=True,
                ),
            ),
        ),
    )
    return Mesh(
        services=tuple(sorted(services, key=lambda s: s.host)),
        destination_policies=tuple(sorted(policies, key=lambda p: p.host)),
        virtual_services=virtual_services,
        gateways=gateways,
    )


def named(resources: list[Any]) -> dict[str, Any]:
    """Resources by xDS name."""
    return {resource_name(r): r for r in resources}


def unpack(packed: Any, message_type: Any) -> Any:
    message = message_type()
    assert packed.Unpack(message), f"{packed.type_url} is not {message_type.DESCRIPTOR.full_name}"
    return message


def mesh_of(*services: Service, **rest: Any) -> Mesh:
    return Mesh(services=tuple(sorted(services, key=lambda s: s.host)), **rest)


def reweighted(mesh: Mesh, host: str) -> Mesh:
    """``mesh`` with the first endpoint of ``host`` given another weight (a new Service)."""

    def change(service: Service) -> Service:
        if service.host != host:
            return service
        port, endpoints = service.endpoints[0]
        first = dataclasses.replace(endpoints[0], weight=endpoints[0].weight + 7)
        return dataclasses.replace(
            service, endpoints=((port, (first, *endpoints[1:])), *service.endpoints[1:])
        )

    return dataclasses.replace(mesh, services=tuple(change(s) for s in mesh.services))
