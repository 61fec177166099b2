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
order is not repeated.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable

from envoy.config.route.v3 import route_components_pb2, route_pb2

from controlplane.model import Labels, Mesh, Service, host_aliases
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


def sidecar_route_configs(mesh: Mesh) -> list[Message]:
    ambiguous = _ambiguous_short_names(mesh)
    configs = []
    for port in sidecar_ports(mesh):
        if not port.is_http:
            continue
        context = RouteContext(mesh, port.port, (MESH_GATEWAY,), infer_port=True)
        hosts: list[_Host] = [
            (
                virtual_host_name(service.host, port.port),
                _service_domains(service, port.port, ambiguous),
                functools.partial(_add_service_routes, context, service),
            )
            for service in port.http_services
        ]
        configs.append(_route_configuration(route_config_name(port.port), hosts))
    return configs


def gateway_route_configs(mesh: Mesh, labels: Labels) -> list[Message]:
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
        hosts: list[_Host] = []
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
                    (virtual_host_name(host, port.port), _domains(host, port.port), _copies(routes))
                )
        served = {name for name, _, _ in hosts}
        for pattern in dict.fromkeys(redirected):
            name = virtual_host_name(pattern, port.port)
            if name not in served:
                hosts.append((name, _domains(pattern, port.port), _copies([_https_redirect()])))
        configs.append(_route_configuration(gateway_route_config_name(port.port), hosts))
    return configs


def _https_redirect() -> Message:
    """Every request answered with a 301 to the same URL over ``https``."""
    return route_components_pb2.Route(
        name="https-redirect",
        match=route_components_pb2.RouteMatch(prefix="/"),
        redirect=route_components_pb2.RedirectAction(https_redirect=True),
    )


def _domains(host: str, port: int) -> list[str]:
    return [host] if host == "*" else [host, f"{host}:{port}"]


def _add_service_routes(context: RouteContext, service: Service, into: Message) -> None:
    added = 0
    for vs in mesh_virtual_services(context.mesh, service.host):
        for rule in vs.http:
            added += add_routes(context, rule, into)
    if not added:
        add_default_route(context, service, into)


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


_Host = tuple[str, list[str], Callable[[Message], None]]
"""A virtual host to be: its name, its domains, and what adds its routes to a repeated field."""


def _copies(routes: list[Message]) -> Callable[[Message], None]:
    return lambda into: into.extend(routes)


def _route_configuration(name: str, hosts: Iterable[_Host]) -> Message:
    config = route_pb2.RouteConfiguration(name=name)
    claimed: set[str] = set()
    for host_name, domains, fill in sorted(hosts, key=lambda h: h[0]):
        fresh = [d for d in dict.fromkeys(domains) if d not in claimed]
        if not fresh:
            # Built all the same, as when every route was built before its host was known.
            fill(route_components_pb2.VirtualHost().routes)
            continue
        claimed.update(fresh)
        # Routes are added in place: built apart, they would be copied in.
        fill(config.virtual_hosts.add(name=host_name, domains=fresh).routes)
    return config
