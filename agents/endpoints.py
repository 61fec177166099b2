"""Upstream endpoints as the forwarding table holds them.

An :class:`Endpoint` is one address of a cluster, from its
``ClusterLoadAssignment`` (or inline in the ``Cluster``): frozen, compared by
value, so a balancer can carry its per-endpoint state (outstanding requests,
latency estimate, ejection) over to the next table for every endpoint that
did not change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    sub_zone: str = ""


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int
    weight: int = 1
    """``load_balancing_weight`` of the LbEndpoint (1 when unset)."""
    locality: Locality = Locality()
    locality_weight: int = 0
    """The locality's ``load_balancing_weight`` (0 when unset: no locality weighting)."""
    priority: int = 0
    healthy: bool = True
    """False for endpoints EDS reports UNHEALTHY, DRAINING or TIMEOUT."""

    @property
    def key(self) -> tuple[str, int]:
        return self.address, self.port
