"""TCP routing: which clusters a TCP listener proxies to.

A TCP listener has no request to look at, so it runs exactly one
``tcp_proxy``: the first TCP rule (in mesh order, then rule order) whose
matches hold for the port and gateways at hand, or the service's own
cluster when no rule applies. A rule's destinations become weighted
clusters (those with weight 0 dropped); destinations resolve as HTTP ones do
(:mod:`~controlplane.translate.destinations`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from controlplane.model import Mesh, TcpRoute, VirtualService
from controlplane.translate.binding import match_applies
from controlplane.translate.destinations import destination_cluster


def select_tcp_route(
    candidates: Iterable[tuple[VirtualService, Sequence[str]]], port: int
) -> TcpRoute | None:
    """The first rule of the ``(VirtualService, gateways)`` candidates holding on ``port``."""
    for vs, gateways in candidates:
        for rule in vs.tcp:
            if not rule.matches or any(match_applies(m, port, gateways) for m in rule.matches):
                return rule
    return None


def tcp_clusters(mesh: Mesh, rule: TcpRoute, listener_port: int | None) -> list[tuple[str, int]]:
    """``(cluster, weight)`` pairs for ``rule``; an empty list when it has no destinations."""
    destinations = rule.destinations
    if len(destinations) > 1:
        destinations = tuple(d for d in destinations if d.weight > 0) or destinations[:1]
    return [(destination_cluster(mesh, d, listener_port), max(d.weight, 1)) for d in destinations]
