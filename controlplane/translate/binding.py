"""Binding: which VirtualServices and rules apply where.

A VirtualService applies to the sidecars when it is bound to the ``mesh``
gateway, and to a gateway proxy when it is bound (as ``namespace/name``) to
a Gateway that selects the proxy and one of whose servers exposes a host the
VirtualService names. Hosts match the way Istio matches them: ``*`` matches
every host and ``*.example.com`` every host under ``example.com``. For a
sidecar, VirtualServices naming a service host exactly take precedence over
those reaching it through a wildcard; of several naming the same host the
first in mesh order wins, as in Istio; VirtualServices reaching it through
different wildcards are merged in mesh order (their rules concatenated).

Within a VirtualService a match may narrow itself to a port or to some of
the gateways; :func:`match_applies` decides whether it holds for the
listener port and gateways at hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controlplane.model import Gateway, GatewayServer, HttpMatch, Mesh, TcpMatch, VirtualService

MESH_GATEWAY = "mesh"


def host_matches(pattern: str, host: str) -> bool:
    """True when ``pattern`` (possibly a wildcard) covers ``host``."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return pattern == host


def hosts_intersect(a: str, b: str) -> bool:
    return host_matches(a, b) or host_matches(b, a)


def server_host(host: str) -> str:
    """A Gateway server host without its ``namespace/`` part (namespaces are not enforced)."""
    return host.split("/", 1)[1] if "/" in host else host


def mesh_virtual_services(mesh: Mesh, host: str) -> tuple[VirtualService, ...]:
    """The sidecar VirtualServices routing ``host``, in mesh order.

    As in Istio, of several naming the same host (or the same wildcard) the
    first wins (mesh order is file order, standing in for creation time).
    """
    exact = mesh.virtual_services_naming(MESH_GATEWAY, host)
    if exact:
        return exact[:1]
    bound = mesh.virtual_services_for_gateway(MESH_GATEWAY)
    first: dict[str, VirtualService] = {}
    for vs in bound:
        for pattern in vs.hosts:
            if pattern.startswith("*") and host_matches(pattern, host):
                first.setdefault(pattern, vs)
    return tuple(dict.fromkeys(first.values()))


@dataclass(frozen=True, slots=True)
class GatewayBinding:
    """A VirtualService bound, for one host, through ``gateways`` (keys) on one port."""

    virtual_service: VirtualService
    gateways: tuple[str, ...]


def gateway_bindings(
    mesh: Mesh, servers: Sequence[tuple[Gateway, GatewayServer]]
) -> tuple[tuple[str, tuple[GatewayBinding, ...]], ...]:
    """Per exposed host (in first-seen order), the bindings serving it on ``servers``.

    A VirtualService host and a server host that intersect expose the narrower
    of the two, as in Istio: ``*`` bound through a server for
    ``shop.example.com`` serves ``shop.example.com`` only.
    """
    by_host: dict[str, list[GatewayBinding]] = {}
    for vs in mesh.virtual_services:
        exposed: dict[str, set[str]] = {}
        for host in vs.hosts:
            for gateway, server in servers:
                if gateway.key not in vs.gateways:
                    continue
                for pattern in (server_host(h) for h in server.hosts):
                    if hosts_intersect(pattern, host):
                        narrower = host if host_matches(pattern, host) else pattern
                        exposed.setdefault(narrower, set()).add(gateway.key)
        for host, keys in exposed.items():
            by_host.setdefault(host, []).append(GatewayBinding(vs, tuple(sorted(keys))))
    return tuple((host, tuple(bindings)) for host, bindings in by_host.items())


def gateway_virtual_services(
    mesh: Mesh, servers: Sequence[tuple[Gateway, GatewayServer]]
) -> tuple[GatewayBinding, ...]:
    """The VirtualServices bound on ``servers`` for any of their hosts, in mesh order."""
    found = []
    for vs in mesh.virtual_services:
        through = sorted({g for host in vs.hosts for g in _bound_through(vs, host, servers)})
        if through:
            found.append(GatewayBinding(vs, tuple(through)))
    return tuple(found)


def _bound_through(
    vs: VirtualService, host: str, servers: Sequence[tuple[Gateway, GatewayServer]]
) -> tuple[str, ...]:
    """Keys of the Gateways through which ``vs`` serves ``host`` on ``servers``."""
    return tuple(
        sorted(
            {
                gateway.key
                for gateway, server in servers
                if gateway.key in vs.gateways
                and any(hosts_intersect(server_host(h), host) for h in server.hosts)
            }
        )
    )


def match_applies(match: HttpMatch | TcpMatch, port: int, gateways: Sequence[str]) -> bool:
    if match.port is not None and match.port != port:
        return False
    return not match.gateways or any(g in gateways for g in match.gateways)
