"""Translation with memory: :func:`translate`'s results, reusing what did not change.

A control plane translates the whole mesh again after every change, but a
typical change touches one service. :class:`Translator` returns exactly what
:func:`~controlplane.translate.resources.translate` returns, each message
passed through an *encoder* (by default none: the messages themselves), and
reuses the encoded outputs whose inputs are unchanged:

* clusters and load assignments are built per service and remembered per
  ``(Service, DestinationPolicy)`` pair, by identity (the config layer keeps
  the model objects of untouched services, see
  :class:`~controlplane.config.build.MeshBuilder`); the sorted lists of a
  view are assembled once per mesh, for every class that shares the view;
* route configurations and listeners do not depend on endpoints, so they are
  remembered per proxy class together with a *routing view* of the mesh (the
  model without endpoints) and rebuilt only when that view changes; the
  routes of a sidecar's virtual hosts are remembered per host, so a
  VirtualService edit computes only the hosts it routes
  (:class:`~controlplane.translate.route_configs.HostRoutesMemory`).

Each class sees the mesh from its namespace (:meth:`Mesh.seen_from`, Istio's
``exportTo``). Namespaces that see the same share one translation of routes
and listeners (they differ only in their snapshot key), and the per-service
outputs are shared by every class whatever its namespace, so namespaces cost
a translation only where ``exportTo`` makes their views differ.

The server encodes each message into its serialized, hashed xDS resource
(``Translator(encode=Resource.from_message)``, from the xds layer) the moment
it is built and keeps only that: a message is encoded once however many
classes send it, an unchanged service costs nothing after an edit, and the
protobuf objects, several times the size of their bytes, are dropped at once.
Reused outputs are the same Python objects as before and must be treated as
immutable. Proxyless gRPC classes are not memoized: translated afresh each
time, then encoded likewise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from operator import attrgetter
from typing import Any, Generic, Protocol, TypeVar, overload

from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2

from controlplane.forked_map import forked_map
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
from controlplane.translate.route_configs import HostRoutesMemory
from controlplane.translate.upstreams import Discovery, service_upstreams
from controlplane.translate.wire import Serialized

FORK_MIN_SERVICES = 2000
"""Services to translate anew from which a server with a second core forks for it: the
cold start of a large mesh (at 10,000 services it saves about a quarter of translation)."""
FORK_CHUNK = 128
"""Services per chunk of a forked translation (about 0.3 MB of answer at most)."""


class Named(Protocol):
    """What an encoder makes of a message: it keeps the resource's xDS name."""

    @property
    def name(self) -> str: ...


T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R")
N = TypeVar("N", bound=Named)


@dataclass(frozen=True, slots=True)
class _ServiceOutput(Generic[T]):
    service: Service
    policy: DestinationPolicy | None
    clusters: tuple[T, ...]
    assignments: tuple[T, ...]


_name = attrgetter("name")
_cluster_name = attrgetter("cluster_name")


_MESSAGE_CLASSES: dict[str, Any] = {
    ENDPOINT_TYPE: endpoint_pb2.ClusterLoadAssignment,
    ROUTE_TYPE: route_pb2.RouteConfiguration,
}


def _parsed(serialized: Serialized) -> Message:
    """The message whose serialization ``serialized`` holds (a translator without encoder)."""
    return _MESSAGE_CLASSES[serialized.type_url].FromString(serialized.data)


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


class Translator(Generic[T]):
    """Memoizing :func:`translate`; not thread-safe (one per snapshot cache).

    ``encode``, if given, turns each message into what is returned and remembered
    instead (its results name the resource as ``name``); without it the
    messages themselves are. Resources the translator writes straight to bytes
    reach ``encode`` as :class:`~controlplane.translate.wire.Serialized`
    instead of a message (without ``encode``, they are parsed back). With
    ``fork_from``, a mesh with that many services or more to translate anew (a
    cold start) is translated on two cores
    (:func:`~controlplane.forked_map.forked_map`: encoded outputs must pickle),
    and so are the routes of a sidecar's virtual hosts from that many hosts
    (written as bytes); the caller says whether a second core is there to use.
    """

    @overload
    def __init__(self: Translator[Message], *, fork_from: int | None = None) -> None: ...

    @overload
    def __init__(
        self: Translator[N], encode: Callable[[Message], N], *, fork_from: int | None = None
    ) -> None: ...

    def __init__(
        self, encode: Callable[[Message], Any] | None = None, *, fork_from: int | None = None
    ) -> None:
        self._encode: Callable[[Message], T] | None = encode
        self.fork_from = fork_from
        """Services to translate anew from which to fork (None: never); settable."""
        # Sort keys of encoded outputs: a load assignment message names its resource
        # ``cluster_name``, what an encoder makes of it ``name``.
        self._assignment_name = _cluster_name if encode is None else _name
        # Per-service outputs of the current mesh and of the one before it, by the
        # identity of (service, policy): a new mesh starts a new generation, so what
        # no class of two meshes in a row used is dropped.
        self._mesh: Mesh | None = None
        self._services: dict[tuple[int, int], _ServiceOutput[T]] = {}
        self._previous: dict[tuple[int, int], _ServiceOutput[T]] = {}
        self._blackhole: T = self._encoded(blackhole_cluster())
        # Per view of the current mesh (classes of namespaces that see the same share
        # one), its sorted clusters and assignments, held with the view they belong to.
        self._upstreams: dict[int, tuple[Mesh, tuple[T, ...], tuple[T, ...]]] = {}
        self._routing: dict[str, tuple[tuple[Any, ...], list[T], list[T]]] = {}
        # Per shared view (the class with its namespace replaced by its view name), the
        # class whose routes and listeners others of that view may reuse.
        self._donors: dict[str, str] = {}
        # Per shared view, the routes of its sidecar virtual hosts, for the next translation.
        self._host_routes: dict[str, HostRoutesMemory] = {}

    def _encoded(self, message: Message | Serialized) -> T:
        encode = self._encode
        if encode is None:
            return _parsed(message) if type(message) is Serialized else message  # type: ignore[return-value]
        return encode(message)

    def _all_encoded(self, messages: list[Message | Serialized]) -> list[T]:
        encode = self._encode
        if encode is None:
            return [_parsed(m) if type(m) is Serialized else m for m in messages]  # type: ignore[misc]
        return list(map(encode, messages))

    def forget(self, key: str) -> None:
        """Drop what is remembered for the proxy class ``key`` (its proxies are gone)."""
        self._routing.pop(key, None)
        for shared in [s for s, donor in self._donors.items() if donor == key]:
            del self._donors[shared]
            self._host_routes.pop(shared, None)

    def translate(self, mesh: Mesh, proxy: ProxyClass) -> dict[str, list[T]]:
        if proxy.role is ProxyRole.GRPC:
            return {url: self._all_encoded(ms) for url, ms in translate(mesh, proxy).items()}
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

    def _upstream_outputs(self, view: Mesh) -> tuple[tuple[T, ...], tuple[T, ...]]:
        """The clusters and load assignments of ``view``, each sorted by name."""
        outputs: list[_ServiceOutput[T] | None] = []
        missing: list[tuple[Service, DestinationPolicy | None]] = []
        for service in view.services:
            policy = view.policy(service.host)
            key = (id(service), id(policy))
            output = self._services.get(key) or self._previous.get(key)
            if output is None or output.service is not service or output.policy is not policy:
                missing.append((service, policy))
                output = None
            else:
                self._services[key] = output
            outputs.append(output)
        made = iter(self._upstreams_of(missing))
        clusters: list[T] = [self._blackhole]
        assignments: list[T] = []
        for output in outputs:
            if output is None:
                output = next(made)
                self._services[(id(output.service), id(output.policy))] = output
            clusters.extend(output.clusters)
            assignments.extend(output.assignments)
        clusters.sort(key=_name)
        assignments.sort(key=self._assignment_name)
        return tuple(clusters), tuple(assignments)

    def _upstreams_of(
        self, services: list[tuple[Service, DestinationPolicy | None]]
    ) -> list[_ServiceOutput[T]]:
        made = self._map(self._encoded_upstreams, services)
        return [
            _ServiceOutput(service, policy, clusters, assignments)
            for (service, policy), (clusters, assignments) in zip(services, made, strict=True)
        ]

    def _encoded_upstreams(
        self, service_and_policy: tuple[Service, DestinationPolicy | None]
    ) -> tuple[tuple[T, ...], tuple[T, ...]]:
        """The encoded clusters and load assignments of one service."""
        clusters: list[Message | Serialized] = []
        assignments: list[Message | Serialized] = []
        for upstream in service_upstreams(*service_and_policy):
            clusters.append(build_cluster(upstream))
            if upstream.discovery is Discovery.EDS:
                assignments.append(upstream_assignment(upstream))
        return tuple(self._all_encoded(clusters)), tuple(self._all_encoded(assignments))

    def _map(self, fn: Callable[[A], R], items: Sequence[A]) -> list[R]:
        """``[fn(item) for item in items]``, forked onto two cores from ``fork_from`` items
        (results must pickle)."""
        fork_from = self.fork_from
        if fork_from is not None and len(items) >= fork_from:
            return forked_map(fn, items, FORK_CHUNK)
        return list(map(fn, items))

    def _routes_and_listeners(
        self, mesh: Mesh, proxy: ProxyClass, shared: str
    ) -> tuple[list[T], list[T]]:
        view = _routing_view(mesh)
        cached = self._routing.get(proxy.key)
        if cached is None or cached[0] != view:
            donor = self._donors.get(shared)
            cached = self._routing.get(donor) if donor is not None else None
            if cached is None or cached[0] != view:
                memory = self._host_routes.setdefault(shared, HostRoutesMemory())
                routes, listeners = routes_and_listeners(mesh, proxy, self._map, memory)
                cached = (view, self._all_encoded(routes), self._all_encoded(listeners))
                self._donors[shared] = proxy.key
            self._routing[proxy.key] = cached
        return cached[1], cached[2]
