"""Traffic policy: what a ``DestinationRule`` says about a host.

A :class:`DestinationPolicy` holds the host-wide :class:`TrafficPolicy` and
the named :class:`Subset` s. Policies are resolved the way Istio resolves them:
a subset's policy overrides the host's, and a port-level setting overrides
the policy it sits in, field by field (see :meth:`TrafficPolicy.for_port` and
:meth:`DestinationPolicy.effective`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import timedelta

from controlplane.model.service import Labels
from controlplane.model.visibility import EXPORTED_EVERYWHERE, ExportTo


class LoadBalancerKind(enum.Enum):
    ROUND_ROBIN = "ROUND_ROBIN"
    RANDOM = "RANDOM"
    LEAST_REQUEST = "LEAST_REQUEST"
    PASSTHROUGH = "PASSTHROUGH"
    CONSISTENT_HASH = "CONSISTENT_HASH"
    LATENCY_AWARE = "LATENCY_AWARE"
    """Pilotfish's own, selected by a DestinationRule annotation (see config/policies.py)."""


@dataclass(frozen=True, slots=True)
class ConsistentHash:
    """Exactly one of the hash keys is set."""

    http_header_name: str | None = None
    http_cookie_name: str | None = None
    http_cookie_path: str | None = None
    http_cookie_ttl: timedelta | None = None
    use_source_ip: bool = False
    http_query_parameter_name: str | None = None
    minimum_ring_size: int | None = None
    maglev: bool = False
    """Maglev instead of a ring (``consistentHash.maglev``)."""
    maglev_table_size: int | None = None


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    kind: LoadBalancerKind
    consistent_hash: ConsistentHash | None = None
    latency_decay: timedelta | None = None
    """LATENCY_AWARE: time constant of the response time average (None: the agent's 10 s)."""


@dataclass(frozen=True, slots=True)
class TcpConnectionPool:
    max_connections: int | None = None
    connect_timeout: timedelta | None = None


@dataclass(frozen=True, slots=True)
class HttpConnectionPool:
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: timedelta | None = None


@dataclass(frozen=True, slots=True)
class ConnectionPool:
    tcp: TcpConnectionPool | None = None
    http: HttpConnectionPool | None = None


@dataclass(frozen=True, slots=True)
class OutlierDetection:
    consecutive_5xx_errors: int | None = None
    consecutive_gateway_errors: int | None = None
    interval: timedelta | None = None
    base_ejection_time: timedelta | None = None
    max_ejection_percent: int | None = None


@dataclass(frozen=True, slots=True)
class PortTrafficPolicy:
    port: int
    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None


@dataclass(frozen=True, slots=True)
class TrafficPolicy:
    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    port_level: tuple[PortTrafficPolicy, ...] = ()

    def for_port(self, port: int) -> TrafficPolicy:
        """This policy with the port-level settings for ``port`` applied on top."""
        for level in self.port_level:
            if level.port == port:
                return TrafficPolicy(
                    load_balancer=level.load_balancer or self.load_balancer,
                    connection_pool=level.connection_pool or self.connection_pool,
                    outlier_detection=level.outlier_detection or self.outlier_detection,
                )
        return replace(self, port_level=()) if self.port_level else self

    def merged_over(self, base: TrafficPolicy) -> TrafficPolicy:
        """``self`` where it sets a field, ``base`` elsewhere (subset over host policy)."""
        return TrafficPolicy(
            load_balancer=self.load_balancer or base.load_balancer,
            connection_pool=self.connection_pool or base.connection_pool,
            outlier_detection=self.outlier_detection or base.outlier_detection,
            port_level=self.port_level or base.port_level,
        )


@dataclass(frozen=True, slots=True)
class Subset:
    name: str
    labels: Labels
    traffic_policy: TrafficPolicy | None = None


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """A ``DestinationRule`` resolved to its host."""

    host: str
    namespace: str
    name: str
    traffic_policy: TrafficPolicy = TrafficPolicy()
    subsets: tuple[Subset, ...] = ()
    export_to: ExportTo = EXPORTED_EVERYWHERE

    def subset(self, name: str) -> Subset | None:
        for subset in self.subsets:
            if subset.name == name:
                return subset
        return None

    def effective(self, port: int, subset: str | None = None) -> TrafficPolicy:
        """The policy that applies to traffic for ``port`` (and ``subset``, if any).

        As in Istio, the host's and the subset's policies are each resolved for
        the port first; then the subset's overrides the host's.
        """
        policy = self.traffic_policy.for_port(port)
        found = self.subset(subset) if subset else None
        if found is not None and found.traffic_policy is not None:
            policy = found.traffic_policy.for_port(port).merged_over(policy)
        return policy
