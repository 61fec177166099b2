"""Upstreams: the clusters a mesh defines, before they become protobufs.

Every port of every service but its UDP ports is one upstream, and so is every (port, subset)
pair of a host with a DestinationRule. An :class:`Upstream` carries what the
cluster and load-assignment builders both need: the effective traffic policy
(subset over host, port level over both, as :meth:`DestinationPolicy.effective`
resolves it), the endpoints the subset selects, and how Envoy discovers the
hosts:

* ``STATIC`` resolution -> EDS over ADS, the endpoints in a separate
  ``ClusterLoadAssignment``;
* ``DNS`` -> ``STRICT_DNS`` and ``DNS_ROUND_ROBIN`` -> ``LOGICAL_DNS``, the
  endpoints inline; a DNS service without endpoints resolves its own host;
* ``NONE`` resolution or a ``PASSTHROUGH`` load balancer -> ``ORIGINAL_DST``.

``LOGICAL_DNS`` accepts exactly one host, so it uses the first endpoint; a
subset that selects no endpoint at all becomes a ``STATIC`` cluster with no
hosts, which Envoy accepts and answers with 503s.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from operator import attrgetter

from controlplane.model import (
    DestinationPolicy,
    Endpoint,
    LoadBalancerKind,
    Mesh,
    Protocol,
    Resolution,
    Service,
    ServicePort,
    Subset,
    TrafficPolicy,
    labels_match,
)
from controlplane.translate.names import cluster_name


class Discovery(enum.Enum):
    EDS = "EDS"
    STATIC = "STATIC"
    STRICT_DNS = "STRICT_DNS"
    LOGICAL_DNS = "LOGICAL_DNS"
    ORIGINAL_DST = "ORIGINAL_DST"


@dataclass(frozen=True, slots=True)
class Upstream:
    service: Service
    port: ServicePort
    subset: Subset | None
    policy: TrafficPolicy

    @property
    def name(self) -> str:
        return cluster_name(self.port.port, self.service.host, self.subset_name)

    @property
    def subset_name(self) -> str | None:
        return self.subset.name if self.subset is not None else None

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        """The port's endpoints this upstream selects, sorted by address then port."""
        return tuple(sorted(self.selected_endpoints, key=_address_and_port))

    @property
    def selected_endpoints(self) -> tuple[Endpoint, ...]:
        """The port's endpoints this upstream selects, in the service's order."""
        selected = self.service.endpoints_for(self.port.port)
        if self.subset is not None:
            selector = self.subset.labels
            selected = tuple([e for e in selected if _selects(selector, e.labels)])
        return selected

    @property
    def dns_endpoints(self) -> tuple[Endpoint, ...]:
        """The hosts a DNS cluster resolves: its endpoints, or the service host itself."""
        if not self.service.endpoints_for(self.port.port):
            return (Endpoint(address=self.service.host, port=self.port.port),)
        endpoints = self.endpoints
        if self.discovery is Discovery.LOGICAL_DNS:
            return endpoints[:1]
        return endpoints

    @property
    def discovery(self) -> Discovery:
        balancer = self.policy.load_balancer
        resolution = self.service.resolution
        if resolution is Resolution.NONE or (
            balancer is not None and balancer.kind is LoadBalancerKind.PASSTHROUGH
        ):
            return Discovery.ORIGINAL_DST
        if resolution is Resolution.DNS:
            return Discovery.STRICT_DNS
        if resolution is Resolution.DNS_ROUND_ROBIN:
            if self.service.endpoints_for(self.port.port) and not self.endpoints:
                return Discovery.STATIC
            return Discovery.LOGICAL_DNS
        return Discovery.EDS


_address_and_port = attrgetter("address", "port")

# The endpoints of a service mostly repeat a few label sets (one per version).
_selects = functools.lru_cache(maxsize=4096)(labels_match)


def forget_selections() -> None:
    """Empty the cache of label selections (see :func:`~.resources.forget_lookups`)."""
    _selects.cache_clear()


def upstreams(mesh: Mesh) -> tuple[Upstream, ...]:
    """Every upstream of ``mesh``, sorted by cluster name."""
    found: list[Upstream] = []
    for service in mesh.services:
        found.extend(service_upstreams(service, mesh.policy(service.host)))
    return tuple(sorted(found, key=lambda u: u.name))


def service_upstreams(service: Service, destination: DestinationPolicy | None) -> list[Upstream]:
    """The upstreams of one service: one per port, and per port and subset."""
    subsets: tuple[Subset | None, ...] = (None,)
    if destination is not None:
        subsets += destination.subsets
    found: list[Upstream] = []
    for port in service.ports:
        if port.protocol is Protocol.UDP:
            continue  # proxies carry no UDP: no listener, so no cluster either
        for subset in subsets:
            if destination is None:
                policy = TrafficPolicy()
            else:
                policy = destination.effective(port.port, subset.name if subset else None)
            found.append(Upstream(service, port, subset, policy))
    return found


def find_upstream(mesh: Mesh, host: str, port: int, subset: str | None) -> Upstream | None:
    """The upstream for ``host``/``port``/``subset``, or None when the mesh has no such cluster."""
    service = mesh.service(host)
    if service is None:
        return None
    service_port = service.port(port)
    if service_port is None or service_port.protocol is Protocol.UDP:
        return None
    destination = mesh.policy(host)
    if subset is None:
        policy = destination.effective(port) if destination is not None else TrafficPolicy()
        return Upstream(service, service_port, None, policy)
    found = destination.subset(subset) if destination is not None else None
    if destination is None or found is None:
        return None
    return Upstream(service, service_port, found, destination.effective(port, subset))
