"""Route configurations: virtual hosts and their routes, per listening port.

Sidecar: one ``RouteConfiguration`` per HTTP port, named by the port number
(``"9080"``), with one virtual host per HTTP service on that port
(``reviews.default.svc.cluster.local:9080``). Its domains are every name a
client may use for the service (:func:`~controlplane.model.host_aliases`),
each bare and with ``:port``; the short name is left out when two services
of the mesh share it, since it would then name neither. Its routes are the
rules of the mesh VirtualServices for the host, in order; a host without
applicable rules gets a single catch-all route to its own cluster. A
VirtualService host that is no service of the mesh gets no virtual host:
there would be no cluster behind it to default to.

Gateway: one ``RouteConfiguration`` per HTTP server port, ``http.<port>``,
with one virtual host per host of the VirtualServices bound to a Gateway
serving that port, narrowed to the server's hosts (a ``*`` VirtualService on
a ``shop.example.com`` server serves ``shop.example.com``); several
VirtualServices for one host are merged in mesh order. Domains are the host
bare and with ``:port`` (``*`` stays ``*``). A host of a server with
``tls.httpsRedirect`` gets a single route that answers every request with a
301 to the same URL over ``https`` (Istio sets ``require_tls: ALL``, which
does the same; a route redirect is also understood by Pilotfish's agent),
and the server's hosts get it even when no VirtualService is bound to them.

Envoy rejects a route configuration in which two virtual hosts claim the
same domain, so a domain already claimed by a virtual host earlier in name
order is not repeated; a virtual host left with no domain is left out.

Route configurations are written straight to bytes: the routes of each
virtual host are built as messages and serialized on their own (a
``VirtualHost`` holding only its routes serializes to exactly its ``routes``
field), then each virtual host (name, domains, routes) and each
configuration (name, virtual hosts) is assembled around them with
:mod:`~controlplane.translate.wire`, as protobuf's deterministic
serialization would write it. The routes of a sidecar's virtual hosts, most
of the work at a large mesh, are computed through a :class:`Mapper` the
caller gives: one that computes part of them in another process (a cold
start) only needs :func:`host_routes` and bytes to come back. The message
forms (:func:`sidecar_route_configs`, :func:`gateway_route_configs`) are
these bytes parsed back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from envoy.config.route.v3 import route_components_pb2, route_pb2

from controlplane.model import Labels, Mesh, Service, VirtualService, host_aliases
from controlplane.translate.binding import (
    MESH_GATEWAY,
    gateway_bindings,
    host_matches,
    mesh_virtual_services,
    server_host,
)
from controlplane.translate.names import (
    gateway_route_config_name,
    route_config_name,
    virtual_host_name,
)
from controlplane.translate.ports import gateway_ports, sidecar_ports
from controlplane.translate.protos import Message
from controlplane.translate.routes import (
    RouteContext,
    add_default_route,
    add_routes,
    build_routes,
)
from controlplane.translate.wire import length_delimited

A = TypeVar("A")
R = TypeVar("R")
H = TypeVar("H")


class Mapper(Protocol):
    """``[fn(item) for item in items]``, computed wherever the caller likes."""

    def __call__(self, fn: Callable[[A], R], items: Sequence[A], /) -> list[R]: ...


def plain_map(fn: Callable[[A], R], items: Sequence[A]) -> list[R]:
    """The :class:`Mapper` that computes everything here."""
    return list(map(fn, items))


EncodedRouteConfig = tuple[str, bytes]
"""A route configuration's name and its serialization."""

HostRoutes = tuple[RouteContext, Service, tuple[VirtualService, ...]]
"""Where the routes of one sidecar virtual host come from: its port, its service and the
VirtualServices routing it."""


def sidecar_route_configs(mesh: Mesh) -> list[Message]:
    """The sidecar route configurations as messages (:func:`encoded_sidecar_route_configs`)."""
    return [_parsed(data) for _, data in encoded_sidecar_route_configs(mesh)]


def encoded_sidecar_route_configs(
    mesh: Mesh, mapper: Mapper = plain_map, memory: HostRoutesMemory | None = None
) -> list[EncodedRouteConfig]:
    """The sidecar route configurations, serialized.

    The routes of the virtual hosts are computed by ``mapper`` (:func:`host_routes`
    over the hosts: it may run elsewhere), only for those ``memory`` does not hold.
    """
    ambiguous = _ambiguous_short_names(mesh)
    plans: list[tuple[str, list[tuple[str, list[str], Service]]]] = []
    sources: list[HostRoutes] = []
    for port in sidecar_ports(mesh):
        if not port.is_http:
            continue
        context = RouteContext(mesh, port.port, (MESH_GATEWAY,), infer_port=True)
        hosts = _claimed(
            (
                virtual_host_name(service.host, port.port),
                _service_domains(service, port.port, ambiguous),
                service,
            )
            for service in port.http_services
        )
        plans.append((route_config_name(port.port), hosts))
        sources.extend([(context, s, mesh_virtual_services(mesh, s.host)) for _, _, s in hosts])
    if memory is None:
        routes = iter(mapper(host_routes, sources))
    else:
        routes = iter(memory.routes(mesh, sources, mapper))
    return [
        (name, _route_configuration(name, [(h, domains, next(routes)) for h, domains, _ in hosts]))
        for name, hosts in plans
    ]


def host_routes(source: HostRoutes) -> bytes:
    """The routes of a sidecar virtual host, serialized as its ``routes`` field.

    That is a ``VirtualHost`` holding nothing else, serialized: its entries of
    field 3, each as the virtual host holds them.
    """
    context, service, virtual_services = source
    host = route_components_pb2.VirtualHost()
    into = host.routes
    added = 0
    for vs in virtual_services:
        for rule in vs.http:
            added += add_routes(context, rule, into)
    if not added:
        add_default_route(context, service, into)
    return bytes(host.SerializeToString(deterministic=True))


class HostRoutesMemory:
    """The routes of a sidecar's virtual hosts, kept from one translation of a view to the next.

    :func:`host_routes` reads the port, the service's host, the VirtualServices
    routing it, and, to resolve the destinations of their rules and the default
    route to the host itself, ``Mesh.service`` and ``Mesh.policy`` of the
    hosts they name: of a service only its host and ports (cluster names and
    which port a destination without one takes), of a DestinationRule its
    subsets and traffic policies (hashing). So routes are reused while the
    port, host and VirtualServices of the virtual host are equal and the
    ``(host, ports)`` of every service and every DestinationRule of the mesh
    are too; any change to the latter drops them all. A VirtualService edit
    thus computes only the hosts it routes. Endpoints are not read.

    Holds what the last translation used, nothing older; not thread-safe.
    """

    __slots__ = ("_resolution", "_routes")

    def __init__(self) -> None:
        self._resolution: tuple[object, ...] | None = None
        self._routes: dict[tuple[int, str], tuple[tuple[VirtualService, ...], bytes]] = {}

    def routes(self, mesh: Mesh, sources: list[HostRoutes], mapper: Mapper) -> list[bytes]:
        """``mapper(host_routes, sources)``, computing only the routes not held."""
        resolution = (tuple([(s.host, s.ports) for s in mesh.services]), mesh.destination_policies)
        known = self._routes if resolution == self._resolution else {}
        keys = [(context.port, service.host) for context, service, _ in sources]
        held: list[bytes | None] = []
        for key, (_, _, virtual_services) in zip(keys, sources, strict=True):
            found = known.get(key)
            held.append(found[1] if found is not None and found[0] == virtual_services else None)
        made = iter(
            mapper(host_routes, [s for s, h in zip(sources, held, strict=True) if h is None])
        )
        routes = [next(made) if data is None else data for data in held]
        self._resolution = resolution
        self._routes = {
            key: (source[2], data) for key, source, data in zip(keys, sources, routes, strict=True)
        }
        return routes


def gateway_route_configs(mesh: Mesh, labels: Labels) -> list[Message]:
    """The gateway route configurations as messages (:func:`encoded_gateway_route_configs`)."""
    return [_parsed(data) for _, data in encoded_gateway_route_configs(mesh, labels)]


def encoded_gateway_route_configs(mesh: Mesh, labels: Labels) -> list[EncodedRouteConfig]:
    configs = []
    for port in gateway_ports(mesh, labels):
        if not port.is_http:
            continue
        redirected = [
            server_host(h)
            for _, server in port.servers
            if server.https_redirect
            for h in server.hosts
        ]
        hosts: list[tuple[str, list[str], list[Message]]] = []
        for host, bindings in gateway_bindings(mesh, port.servers):
            if any(host_matches(p, host) for p in redirected):
                routes = [_https_redirect()]
            else:
                routes = [
                    route
                    for binding in bindings
                    for rule in binding.virtual_service.http
                    for route in build_routes(
                        RouteContext(mesh, port.port, binding.gateways, infer_port=False), rule
                    )
                ]
            if routes:
                hosts.append(
                    (virtual_host_name(host, port.port), _domains(host, port.port), routes)
                )
        served = {name for name, _, _ in hosts}
        for pattern in dict.fromkeys(redirected):
            name = virtual_host_name(pattern, port.port)
            if name not in served:
                hosts.append((name, _domains(pattern, port.port), [_https_redirect()]))
        name = gateway_route_config_name(port.port)
        data = _route_configuration(
            name, [(h, domains, _routes_field(routes)) for h, domains, routes in _claimed(hosts)]
        )
        configs.append((name, data))
    return configs


def _https_redirect() -> Message:
    """Every request answered with a 301 to the same URL over ``https``."""
    return route_components_pb2.Route(
        name="https-redirect",
        match=route_components_pb2.RouteMatch(prefix="/"),
        redirect=route_components_pb2.RedirectAction(https_redirect=True),
    )


def _routes_field(routes: list[Message]) -> bytes:
    return bytes(
        route_components_pb2.VirtualHost(routes=routes).SerializeToString(deterministic=True)
    )


def _domains(host: str, port: int) -> list[str]:
    return [host] if host == "*" else [host, f"{host}:{port}"]


def _service_domains(service: Service, port: int, ambiguous: set[str]) -> list[str]:
    aliases = host_aliases(service.host)
    if len(aliases) > 1 and aliases[-1] in ambiguous:
        aliases = aliases[:-1]
    return [domain for alias in aliases for domain in (alias, f"{alias}:{port}")]


def _ambiguous_short_names(mesh: Mesh) -> set[str]:
    shorts = Counter(
        aliases[-1] for aliases in (host_aliases(s.host) for s in mesh.services) if len(aliases) > 1
    )
    return {name for name, count in shorts.items() if count > 1}


def _claimed(hosts: Iterable[tuple[str, list[str], H]]) -> list[tuple[str, list[str], H]]:
    """The virtual hosts in name order, each with the domains no earlier one claimed;
    those left with none are dropped (their routes are never built)."""
    claimed: set[str] = set()
    kept = []
    for name, domains, routes in sorted(hosts, key=lambda h: h[0]):
        fresh = [d for d in dict.fromkeys(domains) if d not in claimed]
        if fresh:
            claimed.update(fresh)
            kept.append((name, fresh, routes))
    return kept


_VIRTUAL_HOSTS = b"\x12"  # RouteConfiguration.virtual_hosts


def _route_configuration(name: str, hosts: Iterable[tuple[str, list[str], bytes]]) -> bytes:
    """A ``RouteConfiguration`` serialized as protobuf's deterministic serialization would.

    Only its name (field 1) and virtual hosts (2) are set, and of each virtual
    host its name (1), domains (2) and routes (3): a message holding only the
    fields before 3, serialized, then the routes, is the virtual host's
    serialization (fields in number order).
    """
    head = route_components_pb2.VirtualHost
    parts = [route_pb2.RouteConfiguration(name=name).SerializeToString(deterministic=True)]
    for host_name, domains, routes in hosts:
        data = head(name=host_name, domains=domains).SerializeToString(deterministic=True)
        parts.append(length_delimited(_VIRTUAL_HOSTS, data + routes))
    return b"".join(parts)


def _parsed(data: bytes) -> Message:
    return route_pb2.RouteConfiguration.FromString(data)
