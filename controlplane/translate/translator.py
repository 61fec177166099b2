"""Translation with memory: :func:`translate`'s results, reusing what did not change.

A control plane translates the whole mesh again after every change, but a
typical change touches one service. :class:`Translator` returns exactly what
:func:`~controlplane.translate.resources.translate` returns, and reuses
message objects whose inputs are unchanged:

* clusters and load assignments are built per service and remembered per
  ``(Service, DestinationPolicy)`` pair, by identity (the config layer keeps
  the model objects of untouched services, see
  :class:`~controlplane.config.build.MeshBuilder`); the sorted lists of a
  view are assembled once per mesh, for every class that shares the view;
* route configurations and listeners do not depend on endpoints, so they are
  remembered per proxy class together with a *routing view* of the mesh (the
  model without endpoints) and rebuilt only when that view changes.

Each class sees the mesh from its namespace (:meth:`Mesh.seen_from`, Istio's
``exportTo``). Namespaces that see the same share one translation of routes
and listeners (they differ only in their snapshot key), and the per-service
outputs are shared by every class whatever its namespace, so namespaces cost
a translation only where ``exportTo`` makes their views differ.

Reused messages are the same Python objects as before, so
:class:`~controlplane.xds.snapshot.ResourceCache` can skip serializing and
hashing them too: one endpoint change costs one load assignment. Messages
handed out must be treated as immutable.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from operator import attrgetter
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


_name = attrgetter("name")
_cluster_name = attrgetter("cluster_name")


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
        # Per-service outputs of the current mesh and of the one before it, by the
        # identity of (service, policy): a new mesh starts a new generation, so what
        # no class of two meshes in a row used is dropped.
        self._mesh: Mesh | None = None
        self._services: dict[tuple[int, int], _ServiceOutput] = {}
        self._previous: dict[tuple[int, int], _ServiceOutput] = {}
        self._blackhole = blackhole_cluster()
        # Per view of the current mesh (classes of namespaces that see the same share
        # one), its sorted clusters and assignments, held with the view they belong to.
        self._upstreams: dict[int, tuple[Mesh, tuple[Message, ...], tuple[Message, ...]]] = {}
        self._routing: dict[str, tuple[tuple[Any, ...], list[Message], list[Message]]] = {}
        # Per shared view (the class with its namespace replaced by its view name), the
        # class whose routes and listeners others of that view may reuse.
        self._donors: dict[str, str] = {}

    def forget(self, key: str) -> None:
        """Drop what is remembered for the proxy class ``key`` (its proxies are gone)."""
        self._routing.pop(key, None)
        for shared in [s for s, donor in self._donors.items() if donor == key]:
            del self._donors[shared]

    def translate(self, mesh: Mesh, proxy: ProxyClass) -> dict[str, list[Message]]:
        if proxy.role is ProxyRole.GRPC:
            return translate(mesh, proxy)
        if mesh is not self._mesh:
            self._mesh = mesh
            self._previous, self._services = self._services, {}
            self._upstreams = {}
        view = mesh.seen_from(proxy.namespace)
        upstreams = self._upstreams.get(id(view))
        if upstreams is None or upstreams[0] is not view:
            upstreams = self._upstreams[id(view)] = (view, *self._upstream_outputs(view))
        clusters, assignments = list(upstreams[1]), list(upstreams[2])
        shared = replace(proxy, namespace=mesh.view_name(proxy.namespace)).key
        routes, listeners = self._routes_and_listeners(view, proxy, shared)
        return {
            CLUSTER_TYPE: clusters,
            ENDPOINT_TYPE: assignments,
            ROUTE_TYPE: routes,
            LISTENER_TYPE: listeners,
        }

    def _upstream_outputs(self, view: Mesh) -> tuple[tuple[Message, ...], tuple[Message, ...]]:
        """The clusters and load assignments of ``view``, each sorted by name."""
        clusters: list[Message] = [self._blackhole]
        assignments: list[Message] = []
        for service in view.services:
            policy = view.policy(service.host)
            key = (id(service), id(policy))
            output = self._services.get(key) or self._previous.get(key)
            if output is None or output.service is not service or output.policy is not policy:
                output = _service_output(service, policy)
            self._services[key] = output
            clusters.extend(output.clusters)
            assignments.extend(output.assignments)
        clusters.sort(key=_name)
        assignments.sort(key=_cluster_name)
        return tuple(clusters), tuple(assignments)

    def _routes_and_listeners(
        self, mesh: Mesh, proxy: ProxyClass, shared: str
    ) -> tuple[list[Message], list[Message]]:
        view = _routing_view(mesh)
        cached = self._routing.get(proxy.key)
        if cached is None or cached[0] != view:
            donor = self._donors.get(shared)
            cached = self._routing.get(donor) if donor is not None else None
            if cached is None or cached[0] != view:
                routes, listeners = routes_and_listeners(mesh, proxy)
                cached = (view, routes, listeners)
                self._donors[shared] = proxy.key
            self._routing[proxy.key] = cached
        return cached[1], cached[2]


def _service_output(service: Service, policy: DestinationPolicy | None) -> _ServiceOutput:
    clusters: list[Message] = []
    assignments: list[Message] = []
    for upstream in service_upstreams(service, policy):
        clusters.append(build_cluster(upstream))
        if upstream.discovery is Discovery.EDS:
            assignments.append(upstream_assignment(upstream))
    return _ServiceOutput(service, policy, tuple(clusters), tuple(assignments))
