"""exportTo: a proxy sees only what is exported to its namespace, translated once per view."""

from __future__ import annotations

import dataclasses

from envoy.config.core.v3 import base_pb2

from controlplane.model import (
    DestinationPolicy,
    Endpoint,
    HttpRoute,
    Mesh,
    RouteDestination,
    Subset,
    VirtualService,
)
from controlplane.translate import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ProxyClass,
    ProxyRole,
    translate,
)
from controlplane.translate.translator import Translator
from tests.translate.support import http_service, mesh_of, named

WEB = "web.shop.svc.cluster.local"
DB = "db.shop.svc.cluster.local"
API = "api.default.svc.cluster.local"


def sidecar(namespace: str) -> ProxyClass:
    return ProxyClass(namespace=namespace)


def exported_mesh() -> Mesh:
    web = http_service("web", (Endpoint("10.0.0.1", 9080, (("v", "1"),)),), namespace="shop")
    db = dataclasses.replace(
        http_service("db", (Endpoint("10.0.0.2", 9080),), namespace="shop"), export_to=("shop",)
    )
    api = http_service("api", (Endpoint("10.0.0.3", 9080),))
    policy = DestinationPolicy(
        WEB, "shop", "web", subsets=(Subset("v1", (("v", "1"),)),), export_to=("shop",)
    )
    shop_route = VirtualService(
        "shop",
        "web-shop",
        (WEB,),
        http=(HttpRoute(name="shop-only", destinations=(RouteDestination(WEB, subset="v1"),)),),
        export_to=("shop",),
    )
    everyone_route = VirtualService(
        "shop",
        "web-all",
        (WEB,),
        http=(HttpRoute(name="everyone", destinations=(RouteDestination(WEB),)),),
    )
    return mesh_of(
        web,
        db,
        api,
        destination_policies=(policy,),
        virtual_services=(shop_route, everyone_route),
    )


def clusters(resources: dict[str, list[object]]) -> list[str]:
    return sorted(named(resources[CLUSTER_TYPE]))  # type: ignore[arg-type]


def web_routes(resources: dict[str, list[object]]) -> list[str]:
    [config] = [r for r in resources[ROUTE_TYPE] if r.name == "9080"]  # type: ignore[attr-defined]
    [vhost] = [v for v in config.virtual_hosts if v.name == f"{WEB}:9080"]  # type: ignore[attr-defined]
    return [r.name for r in vhost.routes]


def test_a_proxy_sees_the_services_rules_and_routes_exported_to_its_namespace() -> None:
    mesh = exported_mesh()
    shop = translate(mesh, sidecar("shop"))
    other = translate(mesh, sidecar("other"))
    assert clusters(shop) == sorted(
        [
            "BlackHoleCluster",
            f"outbound|9080||{API}",
            f"outbound|9080||{DB}",
            f"outbound|9080||{WEB}",
            f"outbound|9080|v1|{WEB}",
        ]
    )
    assert clusters(other) == sorted(
        ["BlackHoleCluster", f"outbound|9080||{API}", f"outbound|9080||{WEB}"]
    )
    # In shop the first VirtualService wins; elsewhere it is not seen and the other routes.
    assert web_routes(shop) == ["shop-only"]
    assert web_routes(other) == ["everyone"]


def test_without_export_restrictions_every_namespace_sees_the_whole_mesh() -> None:
    mesh = mesh_of(http_service("web", (Endpoint("10.0.0.1", 9080),), namespace="shop"))
    assert mesh.seen_from("shop") is mesh
    assert mesh.seen_from("anything") is mesh


def test_namespaces_named_by_no_export_share_one_view() -> None:
    mesh = exported_mesh()
    assert mesh.seen_from("a") is mesh.seen_from("b")
    assert mesh.seen_from("shop") is not mesh.seen_from("a")
    assert [s.host for s in mesh.seen_from("a").services] == [API, WEB]


def test_the_translator_gives_what_translate_gives_per_namespace_and_shares_equal_views() -> None:
    mesh = exported_mesh()
    translator = Translator()
    classes = [
        sidecar("shop"),
        sidecar("a"),
        sidecar("b"),
        ProxyClass(role=ProxyRole.GATEWAY, namespace="shop"),
        ProxyClass(role=ProxyRole.GRPC, namespace="a"),
    ]
    got = {proxy.key: translator.translate(mesh, proxy) for proxy in classes}
    for proxy in classes:
        expected = translate(mesh, proxy)
        assert {
            url: [m.SerializeToString(deterministic=True) for m in messages]  # type: ignore[attr-defined]
            for url, messages in got[proxy.key].items()
        } == {
            url: [m.SerializeToString(deterministic=True) for m in messages]  # type: ignore[attr-defined]
            for url, messages in expected.items()
        }
    a, b, shop = got[sidecar("a").key], got[sidecar("b").key], got[sidecar("shop").key]
    # Namespaces that see the same share the translated messages themselves.
    assert a[ROUTE_TYPE] is b[ROUTE_TYPE] and a[LISTENER_TYPE] is b[LISTENER_TYPE]
    assert a[ROUTE_TYPE] is not shop[ROUTE_TYPE]
    # A service seen the same way is translated once for every namespace.
    api = f"outbound|9080||{API}"
    assert named(a[CLUSTER_TYPE])[api] is named(shop[CLUSTER_TYPE])[api]
    assert named(a[ENDPOINT_TYPE])[api] is named(shop[ENDPOINT_TYPE])[api]


def test_forgetting_every_class_of_a_shared_view_drops_its_routes() -> None:
    mesh = exported_mesh()
    translator = Translator()
    first = translator.translate(mesh, sidecar("a"))
    translator.translate(mesh, sidecar("b"))
    translator.forget(sidecar("a").key)
    assert translator.translate(mesh, sidecar("b"))[ROUTE_TYPE] is first[ROUTE_TYPE]
    translator.forget(sidecar("b").key)
    assert translator.translate(mesh, sidecar("b"))[ROUTE_TYPE] is not first[ROUTE_TYPE]


def test_an_envoy_bootstrapped_by_istio_gets_what_its_namespace_sees() -> None:
    node = base_pb2.Node(id="sidecar~10.0.0.9~web-1.shop~shop.svc.cluster.local")
    node.metadata.update({"NAMESPACE": "shop"})
    elsewhere = base_pb2.Node(id="sidecar~10.0.0.8~web-1.other~other.svc.cluster.local")
    mesh = exported_mesh()
    translator = Translator()
    db = f"outbound|9080||{DB}"
    assert db in named(translator.translate(mesh, ProxyClass.from_node(node))[CLUSTER_TYPE])
    assert db not in named(
        translator.translate(mesh, ProxyClass.from_node(elsewhere))[CLUSTER_TYPE]
    )
