"""Route configurations: virtual hosts and domains, for sidecars and gateways."""

from __future__ import annotations

from typing import Any

from controlplane.model import (
    Endpoint,
    Gateway,
    GatewayServer,
    HttpMatch,
    HttpRoute,
    Mesh,
    Protocol,
    RouteDestination,
    Service,
    ServicePort,
    VirtualService,
)
from controlplane.translate import ROUTE_TYPE, ProxyClass, ProxyRole, translate
from controlplane.translate.route_configs import gateway_route_configs, sidecar_route_configs
from tests.translate.support import (
    DETAILS,
    PRODUCTPAGE,
    RATINGS,
    REVIEWS,
    exact,
    http_service,
    mesh_of,
    named,
    prefix,
)

INGRESS = (("istio", "ingressgateway"),)


def vhosts(config: object) -> dict[str, object]:
    return {v.name: v for v in config.virtual_hosts}  # type: ignore[attr-defined]


def test_sidecars_get_one_route_config_per_http_port_named_by_the_port(bookinfo: Mesh) -> None:
    assert [r.name for r in translate(bookinfo, ProxyClass())[ROUTE_TYPE]] == ["80", "9080"]


def test_each_http_service_on_the_port_gets_a_virtual_host(bookinfo: Mesh) -> None:
    config = named(sidecar_route_configs(bookinfo))["9080"]
    assert [v.name for v in config.virtual_hosts] == [
        f"{DETAILS}:9080",
        f"{PRODUCTPAGE}:9080",
        f"{RATINGS}:9080",
        f"{REVIEWS}:9080",
    ]


def test_domains_cover_every_alias_with_and_without_the_port(bookinfo: Mesh) -> None:
    config = named(sidecar_route_configs(bookinfo))["9080"]
    assert list(config.virtual_hosts[3].domains) == [
        "reviews.default.svc.cluster.local",
        "reviews.default.svc.cluster.local:9080",
        "reviews.default.svc",
        "reviews.default.svc:9080",
        "reviews.default",
        "reviews.default:9080",
        "reviews",
        "reviews:9080",
    ]


def test_an_external_host_has_only_its_own_name(bookinfo: Mesh) -> None:
    config = named(sidecar_route_configs(bookinfo))["80"]
    assert [(v.name, list(v.domains)) for v in config.virtual_hosts] == [
        ("httpbin.org:80", ["httpbin.org", "httpbin.org:80"])
    ]


def test_a_short_name_shared_by_two_namespaces_is_left_out_of_both() -> None:
    mesh = mesh_of(
        http_service("web", namespace="shop"),
        http_service("web", namespace="blog"),
        http_service("api", namespace="shop"),
    )
    config = named(sidecar_route_configs(mesh))["9080"]
    domains = {v.name: list(v.domains) for v in config.virtual_hosts}
    assert domains == {
        "api.shop.svc.cluster.local:9080": [
            "api.shop.svc.cluster.local",
            "api.shop.svc.cluster.local:9080",
            "api.shop.svc",
            "api.shop.svc:9080",
            "api.shop",
            "api.shop:9080",
            "api",
            "api:9080",
        ],
        "web.blog.svc.cluster.local:9080": [
            "web.blog.svc.cluster.local",
            "web.blog.svc.cluster.local:9080",
            "web.blog.svc",
            "web.blog.svc:9080",
            "web.blog",
            "web.blog:9080",
        ],
        "web.shop.svc.cluster.local:9080": [
            "web.shop.svc.cluster.local",
            "web.shop.svc.cluster.local:9080",
            "web.shop.svc",
            "web.shop.svc:9080",
            "web.shop",
            "web.shop:9080",
        ],
    }


def test_a_host_without_rules_gets_one_default_route_to_its_cluster(bookinfo: Mesh) -> None:
    config = named(sidecar_route_configs(bookinfo))["9080"]
    [route] = config.virtual_hosts[0].routes
    assert route.name == "default"
    assert route.match.prefix == "/"
    assert route.route.cluster == f"outbound|9080||{DETAILS}"


def test_a_host_with_rules_gets_them_in_order_and_no_default(bookinfo: Mesh) -> None:
    config = named(sidecar_route_configs(bookinfo))["9080"]
    reviews = config.virtual_hosts[3]
    assert [
        (r.name, r.match.prefix, [h.name for h in r.match.headers]) for r in reviews.routes
    ] == [
        ("jason", "/", ["end-user"]),
        ("split", "/", []),
    ]
    assert reviews.routes[0].route.cluster == f"outbound|9080|v2|{REVIEWS}"
    assert [
        (c.name, c.weight.value) for c in reviews.routes[1].route.weighted_clusters.clusters
    ] == [(f"outbound|9080|v1|{REVIEWS}", 50), (f"outbound|9080|v3|{REVIEWS}", 50)]


def test_virtual_services_bound_only_to_gateways_do_not_shape_sidecar_routes(
    bookinfo: Mesh,
) -> None:
    config = named(sidecar_route_configs(bookinfo))["9080"]
    productpage = config.virtual_hosts[1]
    assert [r.name for r in productpage.routes] == ["default"]


def test_rules_for_another_port_fall_back_to_the_default_route() -> None:
    service = Service(
        host="web.default.svc.cluster.local",
        namespace="default",
        name="web",
        ports=(ServicePort("http", 80, Protocol.HTTP), ServicePort("admin", 8080, Protocol.HTTP)),
        endpoints=(),
    )
    vs = VirtualService(
        "default",
        "web",
        (service.host,),
        http=(
            HttpRoute(
                name="admin-only",
                matches=(HttpMatch(port=8080),),
                destinations=(RouteDestination(service.host, port=8080),),
            ),
        ),
    )
    configs = named(sidecar_route_configs(mesh_of(service, virtual_services=(vs,))))
    assert [r.name for r in configs["80"].virtual_hosts[0].routes] == ["default"]
    assert configs["80"].virtual_hosts[0].routes[0].route.cluster == (
        "outbound|80||web.default.svc.cluster.local"
    )
    assert [r.name for r in configs["8080"].virtual_hosts[0].routes] == ["admin-only"]


def test_a_route_without_a_port_applies_per_listener_port_of_a_multi_port_service() -> None:
    service = Service(
        host="web.default.svc.cluster.local",
        namespace="default",
        name="web",
        ports=(ServicePort("http", 80, Protocol.HTTP), ServicePort("admin", 8080, Protocol.HTTP)),
        endpoints=(),
    )
    rule = HttpRoute(name="all", destinations=(RouteDestination(service.host),))
    vs = VirtualService("default", "web", (service.host,), http=(rule,))
    configs = named(sidecar_route_configs(mesh_of(service, virtual_services=(vs,))))
    assert {
        port: [(r.name, r.route.cluster) for r in configs[port].virtual_hosts[0].routes]
        for port in ("80", "8080")
    } == {
        "80": [("all", "outbound|80||web.default.svc.cluster.local")],
        "8080": [("all", "outbound|8080||web.default.svc.cluster.local")],
    }


def test_of_several_virtual_services_for_one_host_the_first_in_mesh_order_wins() -> None:
    service = http_service("web")

    def vs(name: str, path: str) -> VirtualService:
        rule = HttpRoute(
            name=name,
            matches=(HttpMatch(uri=prefix(path)),),
            destinations=(RouteDestination(service.host),),
        )
        return VirtualService("default", name, (service.host,), http=(rule,))

    mesh = mesh_of(service, virtual_services=(vs("a", "/a"), vs("b", "/b")))
    [config] = sidecar_route_configs(mesh)
    assert [r.name for r in config.virtual_hosts[0].routes] == ["a"]


def test_an_exact_host_virtual_service_takes_precedence_over_a_wildcard_one() -> None:
    web, api = http_service("web"), http_service("api")

    def vs(name: str, host: str) -> VirtualService:
        rule = HttpRoute(name=name, destinations=(RouteDestination(web.host),))
        return VirtualService("default", name, (host,), http=(rule,))

    mesh = mesh_of(
        web, api, virtual_services=(vs("wild", "*.default.svc.cluster.local"), vs("web", web.host))
    )
    [config] = sidecar_route_configs(mesh)
    assert {v.name: [r.name for r in v.routes] for v in config.virtual_hosts} == {
        "api.default.svc.cluster.local:9080": ["wild"],
        "web.default.svc.cluster.local:9080": ["web"],
    }


def test_tcp_services_get_no_route_config(bookinfo: Mesh) -> None:
    assert "27017" not in named(sidecar_route_configs(bookinfo))


# Gateways


def test_a_gateway_gets_an_http_port_route_config_named_http_port(bookinfo: Mesh) -> None:
    proxy = ProxyClass(ProxyRole.GATEWAY, INGRESS)
    assert [r.name for r in translate(bookinfo, proxy)[ROUTE_TYPE]] == ["http.8080"]


def test_a_wildcard_gateway_host_is_a_star_domain_with_the_bound_routes(bookinfo: Mesh) -> None:
    [config] = gateway_route_configs(bookinfo, INGRESS)
    [vhost] = config.virtual_hosts
    assert vhost.name == "*:8080"
    assert list(vhost.domains) == ["*"]
    assert [(r.match.path, r.match.prefix) for r in vhost.routes] == [
        ("/productpage", ""),
        ("", "/static"),
        ("/login", ""),
        ("", "/api/v1/products"),
    ]
    assert {r.route.cluster for r in vhost.routes} == {f"outbound|9080||{PRODUCTPAGE}"}


def test_a_gateway_not_selecting_the_proxy_gives_it_nothing(bookinfo: Mesh) -> None:
    assert gateway_route_configs(bookinfo, (("istio", "egressgateway"),)) == []
    assert gateway_route_configs(bookinfo, ()) == []


def edge_mesh(*virtual_services: VirtualService) -> Mesh:
    web = http_service("web", (Endpoint("10.0.0.1", 9080),))
    gateway = Gateway(
        "edge",
        "public",
        (("app", "edge"),),
        (
            GatewayServer(80, "http", Protocol.HTTP, ("edge/*.example.com", "api.example.org")),
            GatewayServer(8443, "http-alt", Protocol.HTTP, ("*",)),
        ),
    )
    other = Gateway(
        "edge", "private", (("app", "other"),), (GatewayServer(80, "http", Protocol.HTTP, ("*",)),)
    )
    return mesh_of(web, virtual_services=virtual_services, gateways=(gateway, other))


def web_vs(
    name: str,
    hosts: tuple[str, ...],
    gateways: tuple[str, ...],
    matches: tuple[HttpMatch, ...] = (),
) -> VirtualService:
    destination = RouteDestination("web.default.svc.cluster.local")
    route = HttpRoute(name=name, matches=matches, destinations=(destination,))
    return VirtualService("edge", name, hosts, gateways, http=(route,))


def test_gateway_virtual_hosts_are_the_bound_hosts_the_servers_expose() -> None:
    mesh = edge_mesh(
        web_vs("shop", ("shop.example.com", "shop.example.net"), ("edge/public",)),
        web_vs("api", ("api.example.org",), ("edge/public",)),
        web_vs("hidden", ("hidden.example.com",), ("edge/private",)),
    )
    configs = named(gateway_route_configs(mesh, (("app", "edge"),)))
    assert {v.name: list(v.domains) for v in configs["http.80"].virtual_hosts} == {
        "api.example.org:80": ["api.example.org", "api.example.org:80"],
        "shop.example.com:80": ["shop.example.com", "shop.example.com:80"],
    }
    assert {v.name: list(v.domains) for v in configs["http.8443"].virtual_hosts} == {
        "api.example.org:8443": ["api.example.org", "api.example.org:8443"],
        "shop.example.com:8443": ["shop.example.com", "shop.example.com:8443"],
        "shop.example.net:8443": ["shop.example.net", "shop.example.net:8443"],
    }


def test_a_wildcard_virtual_service_serves_only_the_hosts_its_servers_expose() -> None:
    mesh = edge_mesh(
        web_vs("any", ("*",), ("edge/public",)),
        web_vs("api", ("api.example.org",), ("edge/public",)),
    )
    configs = named(gateway_route_configs(mesh, (("app", "edge"),)))
    assert {
        v.name: (list(v.domains), [r.name for r in v.routes])
        for v in configs["http.80"].virtual_hosts
    } == {
        "*.example.com:80": (["*.example.com", "*.example.com:80"], ["any"]),
        "api.example.org:80": (["api.example.org", "api.example.org:80"], ["any", "api"]),
    }
    assert {v.name: list(v.domains) for v in configs["http.8443"].virtual_hosts} == {
        "*:8443": ["*"],
        "api.example.org:8443": ["api.example.org", "api.example.org:8443"],
    }


def test_gateway_virtual_services_for_one_host_are_merged_in_mesh_order() -> None:
    mesh = edge_mesh(
        web_vs(
            "first", ("shop.example.com",), ("edge/public",), matches=(HttpMatch(uri=prefix("/a")),)
        ),
        web_vs("second", ("shop.example.com",), ("edge/public",)),
    )
    configs = named(gateway_route_configs(mesh, (("app", "edge"),)))
    [vhost] = configs["http.80"].virtual_hosts
    assert [r.name for r in vhost.routes] == ["first", "second"]


def test_gateway_routes_keep_only_matches_for_their_gateway_and_port() -> None:
    matches = (
        HttpMatch(uri=exact("/public"), gateways=("edge/public",)),
        HttpMatch(uri=exact("/mesh"), gateways=("mesh",)),
        HttpMatch(uri=exact("/alt"), port=8443),
    )
    mesh = edge_mesh(web_vs("web", ("shop.example.com",), ("edge/public", "mesh"), matches=matches))
    configs = named(gateway_route_configs(mesh, (("app", "edge"),)))
    assert [r.match.path for r in configs["http.80"].virtual_hosts[0].routes] == ["/public"]
    assert [r.match.path for r in configs["http.8443"].virtual_hosts[0].routes] == [
        "/public",
        "/alt",
    ]


def test_gateway_destinations_without_a_port_use_the_service_s_only_port() -> None:
    mesh = edge_mesh(web_vs("web", ("shop.example.com",), ("edge/public",)))
    configs = named(gateway_route_configs(mesh, (("app", "edge"),)))
    [route] = configs["http.80"].virtual_hosts[0].routes
    assert route.route.cluster == "outbound|9080||web.default.svc.cluster.local"


def test_a_gateway_port_with_nothing_bound_has_an_empty_route_config() -> None:
    configs = named(gateway_route_configs(edge_mesh(), (("app", "edge"),)))
    assert sorted(configs) == ["http.80", "http.8443"]
    assert list(configs["http.80"].virtual_hosts) == []


def test_an_https_redirect_server_redirects_every_request_of_its_hosts_with_or_without_routes() -> (
    None
):
    web = http_service("web", (Endpoint("10.0.0.1", 9080),))
    gateway = Gateway(
        "edge",
        "public",
        (("app", "edge"),),
        (
            GatewayServer(80, "http", Protocol.HTTP, ("shop.example.com",), https_redirect=True),
            GatewayServer(80, "http-plain", Protocol.HTTP, ("*.example.org",)),
            GatewayServer(81, "http-empty", Protocol.HTTP, ("*",), https_redirect=True),
        ),
    )
    vs = web_vs("web", ("shop.example.com", "api.example.org"), ("edge/public",))
    mesh = mesh_of(web, virtual_services=(vs,), gateways=(gateway,))
    configs = named(gateway_route_configs(mesh, (("app", "edge"),)))

    def summary(route: Any) -> tuple[str, str, bool, str]:
        return (route.name, route.match.prefix, route.redirect.https_redirect, route.route.cluster)

    assert {
        name: {v.name: [summary(r) for r in v.routes] for v in c.virtual_hosts}
        for name, c in configs.items()
    } == {
        "http.80": {
            "api.example.org:80": [
                ("web", "/", False, "outbound|9080||web.default.svc.cluster.local")
            ],
            "shop.example.com:80": [("https-redirect", "/", True, "")],
        },
        "http.81": {
            "*:81": [("https-redirect", "/", True, "")],
            "api.example.org:81": [("https-redirect", "/", True, "")],
            "shop.example.com:81": [("https-redirect", "/", True, "")],
        },
    }


def test_of_two_sidecar_virtual_services_for_one_host_only_the_first_in_mesh_order_routes() -> None:
    web = http_service("web", (Endpoint("10.0.0.1", 9080),))
    host = "web.default.svc.cluster.local"
    first = web_vs("first", (host,), ("mesh",), matches=(HttpMatch(uri=prefix("/a")),))
    second = web_vs("second", (host, "api.default.svc.cluster.local"), ("mesh",))
    wild_a = web_vs("wild-a", ("*.example.org",), ("mesh",))
    wild_b = web_vs("wild-b", ("*.example.org",), ("mesh",))
    api = http_service("api", (Endpoint("10.0.0.2", 9080),))
    mesh = mesh_of(web, api, virtual_services=(first, second, wild_a, wild_b))
    [config] = sidecar_route_configs(mesh)
    hosts: dict[str, Any] = vhosts(config)
    assert [r.name for r in hosts[f"{host}:9080"].routes] == ["first"]
    assert [r.name for r in hosts["api.default.svc.cluster.local:9080"].routes] == ["second"]
