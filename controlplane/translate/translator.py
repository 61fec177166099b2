"""Translation with memory: :func:`translate`'s results, reusing what did not change.

A control plane translates the whole mesh again after every change, but a
typical change touches one service. :class:`Translator` returns exactly what
:func:`~controlplane.translate.resources.translate` returns, and reuses
message objects whose inputs are unchanged:

* clusters and load assignments are built per service and remembered per
  ``(Service, DestinationPolicy)`` pair, by identity (the config layer keeps
  the model objects of untouched services, see
  :class:`~controlplane.config.build.MeshBuilder`);
* route configurations and listeners do not depend on endpoints, so they are
  remembered per proxy class together with a *routing view* of the mesh (the
  model without endpoints) and rebuilt only when that view changes.

Reused messages are the same Python objects as before, so
:class:`~controlplane.xds.snapshot.ResourceCache` can skip serializing and
hashing them too: one endpoint change costs one load assignment. Messages
handed out must be treated as immutable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controlplane.model import DestinationPolicy, Mesh, Service
from controlplane.translate.clusters import blackhole_cluster, build_cluster
from controlplane.translate.endpoints import upstream_assignment
from controlplane.translate.protos import Message
from controlplane.translate.proxy import ProxyClass, ProxyRole
from controlplane.translate.resources import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    routes_and_listeners,
    translate,
)
from controlplane.translate.upstreams import Discovery, service_upstreams


@dataclass(frozen=True, slots=True)
class _ServiceOutput:
    service: Service
    policy: DestinationPolicy | None
    clusters: tuple[Message, ...]
    assignments: tuple[Message, ...]


def _routing_view(mesh: Mesh) -> tuple[Any, ...]:
    """What routes and listeners depend on: the mesh minus endpoints, compared by value."""
    return (
        tuple(
            (s.host, s.namespace, s.name, s.ports, s.resolution, s.addresses, s.mesh_external)
            for s in mesh.services
        ),
        mesh.destination_policies,
        mesh.virtual_services,
        mesh.gateways,
    )


class Translator:
    """Memoizing :func:`translate`; not thread-safe (one per snapshot cache)."""

    def __init__(self) -> None:
        self._services: dict[int, _ServiceOutput] = {}
        self._blackhole = blackhole_cluster()
        self._routing: dict[str, tuple[tuple[Any, ...], list[Message], list[Message]]] = {}

    def forget(self, key: str) -> None:
        """Drop what is remembered for the proxy class ``key`` (its proxies are gone)."""
        self._routing.pop(key, None)

    def translate(self, mesh: Mesh, proxy: ProxyClass) -> dict[str, list[Message]]:
        if proxy.role is ProxyRole.GRPC:
            return translate(mesh, proxy)
        clusters: list[Message] = [self._blackhole]
        assignments: list[Message] = []
        kept: dict[int, _ServiceOutput] = {}
        for service in mesh.services:
            policy = mesh.policy(service.host)
            output = self._services.get(id(service))
            if output is None or output.service is not service or output.policy is not policy:
                output = _service_output(service, policy)
            kept[id(service)] = output
            clusters.extend(output.clusters)
            assignments.extend(output.assignments)
        self._services = kept
        clusters.sort(key=lambda c: str(c.name))
        assignments.sort(key=lambda a: str(a.cluster_name))
        routes, listeners = self._routes_and_listeners(mesh, proxy)
        return {
            CLUSTER_TYPE: clusters,
            ENDPOINT_TYPE: assignments,
            ROUTE_TYPE: routes,
            LISTENER_TYPE: listeners,
        }

    def _routes_and_listeners(
        self, mesh: Mesh, proxy: ProxyClass
    ) -> tuple[list[Message], list[Message]]:
        view = _routing_view(mesh)
        cached = self._routing.get(proxy.key)
        if cached is not None and cached[0] == view:
            return cached[1], cached[2]
        routes, listeners = routes_and_listeners(mesh, proxy)
        self._routing[proxy.key] = (view, routes, listeners)
        return routes, listeners


def _service_output(service: Service, policy: DestinationPolicy | None) -> _ServiceOutput:
    clusters: list[Message] = []
    assignments: list[Message] = []
    for upstream in service_upstreams(service, policy):
        clusters.append(build_cluster(upstream))
        if upstream.discovery is Discovery.EDS:
            assignments.append(upstream_assignment(upstream))
    return _ServiceOutput(service, policy, tuple(clusters), tuple(assignments))
