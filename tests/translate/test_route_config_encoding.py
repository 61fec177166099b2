"""Route configurations written as bytes: exactly protobuf's deterministic serialization.

The oracle builds every route configuration the way the translator built
them as messages (virtual hosts added into one ``RouteConfiguration``, the
claimed-domain rule applied in name order) and serializes it; the bytes the
translator assembles from per-host parts must be the same, on meshes with
several ports, short names two namespaces share, hosts whose domains another
host claims, hosts without rules and gateway servers.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from envoy.config.route.v3 import route_components_pb2, route_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.forked_map import forked_map
from controlplane.model import (
    DestinationPolicy,
    Gateway,
    GatewayServer,
    HttpMatch,
    HttpRoute,
    Mesh,
    Protocol,
    RouteDestination,
    Service,
    ServicePort,
    Subset,
    VirtualService,
    host_aliases,
)
from controlplane.translate import ROUTE_TYPE, ProxyClass, ProxyRole, translate
from controlplane.translate.binding import MESH_GATEWAY, mesh_virtual_services
from controlplane.translate.names import route_config_name, virtual_host_name
from controlplane.translate.ports import sidecar_ports
from controlplane.translate.route_configs import (
    HostRoutesMemory,
    encoded_gateway_route_configs,
    encoded_sidecar_route_configs,
    gateway_route_configs,
    host_routes,
    sidecar_route_configs,
)
from controlplane.translate.routes import RouteContext, add_default_route, add_routes
from tests.fresh_interpreter import in_fresh_interpreter
from tests.translate.support import http_service, kitchen_sink_mesh, mesh_of, prefix

A = TypeVar("A")
R = TypeVar("R")

EDGE = (("app", "edge"),)
NAMES = ("a", "b", "reviews")
NAMESPACES = ("x", "y")


def oracle_sidecar_route_configs(mesh: Mesh) -> list[bytes]:
    """The sidecar route configurations built as one message each, then serialized."""
    shorts = Counter(
        aliases[-1] for aliases in (host_aliases(s.host) for s in mesh.services) if len(aliases) > 1
    )
    configs = []
    for port in sidecar_ports(mesh):
        if not port.is_http:
            continue
        context = RouteContext(mesh, port.port, (MESH_GATEWAY,), infer_port=True)
        config = route_pb2.RouteConfiguration(name=route_config_name(port.port))
        claimed: set[str] = set()
        for service in sorted(
            port.http_services, key=lambda s: virtual_host_name(s.host, port.port)
        ):
            aliases = host_aliases(service.host)
            if len(aliases) > 1 and shorts[aliases[-1]] > 1:
                aliases = aliases[:-1]
            domains = [d for a in aliases for d in (a, f"{a}:{port.port}") if d not in claimed]
            if not domains:
                continue
            claimed.update(domains)
            host = config.virtual_hosts.add(
                name=virtual_host_name(service.host, port.port), domains=domains
            )
            added = 0
            for vs in mesh_virtual_services(mesh, service.host):
                for rule in vs.http:
                    added += add_routes(context, rule, host.routes)
            if not added:
                add_default_route(context, service, host.routes)
        configs.append(config.SerializeToString(deterministic=True))
    return configs


def counting(calls: list[int]) -> Callable[[Callable[[A], R], Sequence[A]], list[R]]:
    def mapper(fn: Callable[[A], R], items: Sequence[A]) -> list[R]:
        calls.append(len(items))
        return [fn(item) for item in items]

    return mapper


def canonical(data: bytes) -> bytes:
    return bytes(
        route_pb2.RouteConfiguration.FromString(data).SerializeToString(deterministic=True)
    )


def reversed_map(fn: Callable[[A], R], items: Sequence[A]) -> list[R]:
    """Computes from the back, as a forked child does."""
    return [fn(item) for item in reversed(items)][::-1]


# Meshes: few names in two namespaces, so short names collide; hosts outside the
# cluster domain that equal another service's alias, so domains are claimed twice.
hosts = st.sampled_from(
    [f"{n}.{ns}.svc.cluster.local" for n in NAMES for ns in NAMESPACES]
    + ["a.x", "b.y.svc", "reviews", "api.example.com"]
)
ports = st.sampled_from([80, 9080, 9090])
protocols = st.sampled_from([Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC, Protocol.TCP])


@st.composite
def services(draw: st.DrawFn) -> Service:
    host = draw(hosts)
    parts = host.split(".")
    namespace = parts[1] if len(parts) > 1 else "x"
    service_ports = draw(st.lists(st.tuples(ports, protocols), min_size=1, max_size=3))
    unique = dict(service_ports)
    return Service(
        host=host,
        namespace=namespace,
        name=parts[0],
        ports=tuple(ServicePort(f"p{p}", p, proto) for p, proto in sorted(unique.items())),
        endpoints=(),
    )


@st.composite
def destinations(draw: st.DrawFn) -> RouteDestination:
    return RouteDestination(
        draw(hosts | st.just("ghost.x.svc.cluster.local")),
        subset=draw(st.sampled_from([None, None, "v1", "v2"])),
        port=draw(st.sampled_from([None, None, None, 80, 9080])),
        weight=draw(st.integers(0, 100)),
    )


@st.composite
def rules(draw: st.DrawFn) -> HttpRoute:
    matches = draw(
        st.lists(
            st.builds(
                HttpMatch,
                name=st.sampled_from(["", "m"]),
                uri=st.none() | st.builds(prefix, st.sampled_from(["/", "/api"])),
                port=st.none() | ports,
                gateways=st.sampled_from([(), (MESH_GATEWAY,), ("x/edge",)]),
            ),
            max_size=2,
        )
    )
    return HttpRoute(
        name=draw(st.sampled_from(["", "r"])),
        matches=tuple(matches),
        destinations=tuple(draw(st.lists(destinations(), max_size=3))),
        timeout=draw(st.none() | st.just(timedelta(seconds=2))),
    )


@st.composite
def virtual_services(draw: st.DrawFn, name: str) -> VirtualService:
    return VirtualService(
        "x",
        name,
        tuple(
            draw(
                st.lists(
                    hosts | st.sampled_from(["*.x.svc.cluster.local", "*"]),
                    min_size=1,
                    max_size=2,
                    unique=True,
                )
            )
        ),
        gateways=draw(st.sampled_from([(MESH_GATEWAY,), ("x/edge",), (MESH_GATEWAY, "x/edge")])),
        http=tuple(draw(st.lists(rules(), max_size=3))),
    )


@st.composite
def policies(draw: st.DrawFn, name: str) -> DestinationPolicy:
    subsets = draw(st.lists(st.sampled_from(["v1", "v2"]), min_size=1, max_size=2, unique=True))
    return DestinationPolicy(
        host=draw(hosts),
        namespace="x",
        name=name,
        subsets=tuple(Subset(s, (("v", s),)) for s in subsets),
    )


@st.composite
def meshes(draw: st.DrawFn) -> Mesh:
    by_host = {s.host: s for s in draw(st.lists(services(), max_size=8))}
    vss = [draw(virtual_services(f"vs{i}")) for i in range(draw(st.integers(0, 4)))]
    by_policy_host = {p.host: p for p in draw(st.lists(policies("dr"), max_size=5))}
    servers = draw(
        st.lists(
            st.builds(
                GatewayServer,
                port=st.sampled_from([80, 81]),
                port_name=st.just("http"),
                protocol=st.just(Protocol.HTTP),
                hosts=st.lists(
                    st.sampled_from(["x/*", "*/api.example.com", "*"]), min_size=1, max_size=2
                ).map(tuple),
                https_redirect=st.booleans(),
            ),
            max_size=3,
        )
    )
    return Mesh(
        services=tuple(sorted(by_host.values(), key=lambda s: s.host)),
        destination_policies=tuple(sorted(by_policy_host.values(), key=lambda p: p.host)),
        virtual_services=tuple(vss),
        gateways=(Gateway("x", "edge", EDGE, tuple(servers)),) if servers else (),
    )


EDITS = (
    "virtual service",
    "new virtual service",
    "dropped virtual service",
    "service",
    "dropped service",
    "policy",
    "dropped policy",
    "equal copies",
)


@st.composite
def edited(draw: st.DrawFn, mesh: Mesh) -> Mesh:
    """``mesh`` with one thing changed; what did not change is the same object."""
    vss = list(mesh.virtual_services)
    svcs = list(mesh.services)
    pols = list(mesh.destination_policies)
    kind = draw(st.sampled_from(EDITS))
    # Mostly the services some route sends to: what they resolve to is what may change.
    routed = [
        cluster.rsplit("|", 1)[-1]
        for config in sidecar_route_configs(mesh)
        for virtual_host in config.virtual_hosts
        for route in virtual_host.routes
        for cluster in [
            route.route.cluster,
            *(w.name for w in route.route.weighted_clusters.clusters),
        ]
        if cluster.startswith("outbound|") and route.name != "default"
    ]
    if kind == "virtual service" and vss:
        at = draw(st.integers(0, len(vss) - 1))
        vss[at] = draw(virtual_services(vss[at].name))
    elif kind == "new virtual service":
        vss.insert(draw(st.integers(0, len(vss))), draw(virtual_services("new")))
    elif kind == "dropped virtual service" and vss:
        del vss[draw(st.integers(0, len(vss) - 1))]
    elif kind == "service" and svcs:
        at = draw(st.sampled_from([i for i, s in enumerate(svcs) if s.host in routed] or [0]))
        svcs[at] = replace(draw(services()), host=svcs[at].host)
        if svcs[at].ports == mesh.services[at].ports:
            svcs[at] = replace(
                svcs[at], ports=svcs[at].ports[1:] or (ServicePort("p", 1, Protocol.HTTP),)
            )
    elif kind == "dropped service" and svcs:
        del svcs[draw(st.integers(0, len(svcs) - 1))]
    elif kind == "policy":
        # Subsets where it had none, none where it had some: what destinations resolve to.
        host = draw(st.sampled_from(routed or ["a.x"]))
        subsets = () if mesh.policy(host) else tuple(Subset(s, ()) for s in ("v1", "v2"))
        pols = [p for p in pols if p.host != host] + [
            DestinationPolicy(host, "x", "dr", subsets=subsets)
        ]
    elif kind == "dropped policy" and pols:
        del pols[draw(st.integers(0, len(pols) - 1))]
    elif kind == "equal copies":
        vss = [replace(vs) for vs in vss]
        svcs = [replace(s, ports=tuple(replace(p) for p in s.ports)) for s in svcs]
        pols = [replace(p) for p in pols]
    return replace(
        mesh,
        services=tuple(sorted(svcs, key=lambda s: s.host)),
        destination_policies=tuple(sorted(pols, key=lambda p: p.host)),
        virtual_services=tuple(vss),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meshes())
def test_sidecar_route_configs_are_the_serialization_of_the_messages_built_whole(
    mesh: Mesh,
) -> None:
    assert [data for _, data in encoded_sidecar_route_configs(mesh)] == (
        oracle_sidecar_route_configs(mesh)
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(meshes())
def test_route_configs_are_canonical_and_do_not_depend_on_the_order_hosts_are_computed(
    mesh: Mesh,
) -> None:
    sidecar = encoded_sidecar_route_configs(mesh)
    assert encoded_sidecar_route_configs(mesh, reversed_map) == sidecar
    for _, data in [*sidecar, *encoded_gateway_route_configs(mesh, EDGE)]:
        assert canonical(data) == data


def test_a_host_whose_domains_another_host_claimed_gets_no_virtual_host() -> None:
    reviews = http_service("reviews")
    # A name outside the cluster domain equal to one of reviews' aliases.
    alias = Service(
        host="reviews.default",
        namespace="default",
        name="alias",
        ports=(ServicePort("http", 9080, Protocol.HTTP),),
        endpoints=(),
    )
    [config] = sidecar_route_configs(mesh_of(reviews, alias))
    assert [(v.name, list(v.domains)) for v in config.virtual_hosts] == [
        (
            "reviews.default.svc.cluster.local:9080",
            [
                "reviews.default.svc.cluster.local",
                "reviews.default.svc.cluster.local:9080",
                "reviews.default.svc",
                "reviews.default.svc:9080",
                "reviews.default",
                "reviews.default:9080",
                "reviews",
                "reviews:9080",
            ],
        )
    ]


def test_a_virtual_host_s_routes_are_its_routes_field_serialized() -> None:
    mesh = kitchen_sink_mesh()
    for config in sidecar_route_configs(mesh):
        context = RouteContext(mesh, int(config.name), (MESH_GATEWAY,), infer_port=True)
        for virtual_host in config.virtual_hosts:
            service = mesh.service(virtual_host.name.rsplit(":", 1)[0])
            assert service is not None
            routes_only = route_components_pb2.VirtualHost(routes=virtual_host.routes)
            virtual_services = mesh_virtual_services(mesh, service.host)
            assert host_routes(
                (context, service, virtual_services)
            ) == routes_only.SerializeToString(deterministic=True)


def test_translate_returns_the_route_configs_as_messages(bookinfo: Mesh) -> None:
    sidecar = translate(bookinfo, ProxyClass())[ROUTE_TYPE]
    assert [r.SerializeToString(deterministic=True) for r in sidecar] == [
        data for _, data in sorted(encoded_sidecar_route_configs(bookinfo))
    ]
    mesh = kitchen_sink_mesh()
    gateway = translate(mesh, ProxyClass(role=ProxyRole.GATEWAY, labels=EDGE))[ROUTE_TYPE]
    assert [r.SerializeToString(deterministic=True) for r in gateway] == [
        data for _, data in sorted(encoded_gateway_route_configs(mesh, EDGE))
    ]
    assert [r.name for r in gateway] == [r.name for r in gateway_route_configs(mesh, EDGE)]


def many_services_mesh(count: int) -> Mesh:
    services = [http_service(f"s{i:03}", port=80 + i % 3) for i in range(count)]
    rules = tuple(
        VirtualService(
            "default",
            f"s{i:03}",
            (services[i].host,),
            http=(
                HttpRoute(
                    name="to-next",
                    destinations=(
                        RouteDestination(services[(i + 1) % count].host, weight=90),
                        RouteDestination(services[i].host, weight=10),
                    ),
                ),
            ),
        )
        for i in range(0, count, 2)
    )
    return mesh_of(*services, virtual_services=rules)


def test_route_configs_computed_partly_by_a_forked_child_are_those_computed_here(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if not in_fresh_interpreter(request):
        return
    mesh = many_services_mesh(120)
    parent = os.getpid()
    mark = tmp_path / "child-began"
    answered_by: set[int] = set()

    def forked(fn: Callable[[Any], bytes], items: Sequence[Any]) -> list[bytes]:
        def marked(item: Any) -> tuple[int, bytes]:
            if os.getpid() != parent:
                mark.touch()
            elif not answered_by:
                # The child (from the back) has begun before this process computes any.
                deadline = time.monotonic() + 10
                while not mark.exists() and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(0.2)
                answered_by.add(parent)
            return os.getpid(), fn(item)

        results = forked_map(marked, items, 1)
        answered_by.update(pid for pid, _ in results)
        return [data for _, data in results]

    assert encoded_sidecar_route_configs(mesh, forked) == encoded_sidecar_route_configs(mesh)
    assert len(answered_by) == 2


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_routes_remembered_from_one_mesh_give_the_next_mesh_s_route_configs(
    data: st.DataObject,
) -> None:
    first = data.draw(meshes())
    second = data.draw(edited(first))
    memory = HostRoutesMemory()
    encoded_sidecar_route_configs(first, memory=memory)
    assert encoded_sidecar_route_configs(second, memory=memory) == (
        encoded_sidecar_route_configs(second)
    )


def test_a_virtual_service_edit_computes_only_the_virtual_hosts_it_routes() -> None:
    mesh = many_services_mesh(30)
    memory = HostRoutesMemory()
    calls: list[int] = []
    encoded_sidecar_route_configs(mesh, counting(calls), memory)
    first = mesh.virtual_services[0]
    rule = HttpRoute(name="edited", destinations=(RouteDestination(first.hosts[0]),))
    edit = replace(
        mesh, virtual_services=(replace(first, http=(rule,)), *mesh.virtual_services[1:])
    )
    assert encoded_sidecar_route_configs(edit, counting(calls), memory) == (
        encoded_sidecar_route_configs(edit)
    )
    encoded_sidecar_route_configs(edit, counting(calls), memory)
    assert calls == [30, 1, 0]


def test_a_destination_rule_or_port_edit_computes_every_virtual_host_again() -> None:
    mesh = many_services_mesh(30)
    memory = HostRoutesMemory()
    calls: list[int] = []
    encoded_sidecar_route_configs(mesh, counting(calls), memory)
    policy = DestinationPolicy(
        host=mesh.services[5].host, namespace="default", name="dr", subsets=(Subset("v1", ()),)
    )
    with_policy = replace(mesh, destination_policies=(policy,))
    assert encoded_sidecar_route_configs(with_policy, counting(calls), memory) == (
        encoded_sidecar_route_configs(with_policy)
    )
    moved = replace(mesh.services[7], ports=(ServicePort("http", 9999, Protocol.HTTP),))
    with_port = replace(
        with_policy, services=tuple(moved if s.host == moved.host else s for s in mesh.services)
    )
    assert encoded_sidecar_route_configs(with_port, counting(calls), memory) == (
        encoded_sidecar_route_configs(with_port)
    )
    assert calls == [30, 30, 30]
