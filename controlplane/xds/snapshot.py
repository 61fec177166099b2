"""Immutable, content-addressed sets of xDS resources.

A :class:`Resource` is one Envoy message serialized exactly once, wrapped in
the ``Any`` that goes on the wire, and identified by its name and a SHA-256 of
the deterministic serialization. Every stream that sends the resource reuses
that ``Any``; nothing is serialized per stream.

A :class:`Snapshot` holds, per type URL, the resources by name, and derives
each type's ``version_info`` from content alone: the first 16 hex digits of a
SHA-256 over the sorted ``(name, hash)`` pairs. Two servers given the same
resources therefore announce the same versions, which lets a client that
reconnects to another replica skip a resend, and a version changes exactly
when some resource of its type changes. Per-resource hashes are kept so that
delta xDS can reuse them as resource versions.

:meth:`Snapshot.check_consistency` guards against translation bugs: every EDS
cluster's load assignment and every RDS route configuration named by a
listener must be present, and no load assignment or route configuration may
be orphaned. An inconsistent snapshot must never reach a client, because Envoy
would leave clusters warming or listeners without routes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from operator import is_
from types import MappingProxyType
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from google.protobuf import any_pb2

from controlplane.errors import InconsistentSnapshotError
from controlplane.translate.wire import Serialized
from controlplane.xds.types import (
    CLUSTER,
    ENDPOINT,
    HTTP_CONNECTION_MANAGER,
    LISTENER,
    PUSH_ORDER,
    RESOURCE_TYPES,
    ROUTE,
    type_url_of,
)

Reference = tuple[str, str]
"""``(type_url, name)`` of a resource another resource depends on."""

_NO_REFERENCES: tuple[Reference, ...] = ()
_WITHOUT_REFERENCES = frozenset({ENDPOINT, ROUTE})
"""Types whose resources never depend on another (see :func:`resource_references`)."""


def resource_references(message: Any) -> frozenset[Reference]:
    """The resources ``message`` needs before it can be used.

    Only warming dependencies count: a Cluster of type EDS needs its
    ClusterLoadAssignment, and a Listener whose HttpConnectionManager uses RDS
    needs that RouteConfiguration. Route-to-cluster links are not included:
    a route to a missing cluster is valid configuration (it answers 503).
    """
    url = type_url_of(message)
    return frozenset(_references(message, url, message.name if url == CLUSTER else ""))


def _references(message: Any, url: str, name: str) -> tuple[Reference, ...]:
    """The references of :func:`resource_references`, sorted, without repeats.

    A tuple, not a set: a mesh holds one per cluster, and a one-element
    ``frozenset`` costs 216 bytes where the tuple costs 48. A cluster's load
    assignment is nearly always named after the cluster: its reference then
    holds ``name`` itself rather than another copy of the string.
    """
    if url == CLUSTER:
        if message.type == cluster_pb2.Cluster.EDS:
            service = message.eds_cluster_config.service_name
            if not service or service == name:
                service = name
            return ((ENDPOINT, service),)
        return _NO_REFERENCES
    if url == LISTENER:
        return tuple(sorted({(ROUTE, route) for route in _listener_route_names(message)}))
    return _NO_REFERENCES


def _listener_route_names(listener: Any) -> Iterator[str]:
    configs: list[any_pb2.Any] = []
    chains = list(listener.filter_chains)
    if listener.HasField("default_filter_chain"):
        chains.append(listener.default_filter_chain)
    for chain in chains:
        configs.extend(f.typed_config for f in chain.filters if f.HasField("typed_config"))
    if listener.HasField("api_listener"):
        configs.append(listener.api_listener.api_listener)
    for config in configs:
        if config.type_url != HTTP_CONNECTION_MANAGER:
            continue
        hcm = http_connection_manager_pb2.HttpConnectionManager()
        config.Unpack(hcm)
        if hcm.WhichOneof("route_specifier") == "rds":
            yield hcm.rds.route_config_name


@dataclass(frozen=True, slots=True, eq=False)
class Resource:
    """One named resource, serialized once.

    Holds the serialization as bytes (``value``), not as a protobuf ``Any``: a
    message object costs about 1.2 KiB of its own beyond its bytes, and a mesh
    holds one resource per cluster, endpoint set, listener and route per proxy
    class. :attr:`body` builds the ``Any`` when something needs the message.
    """

    name: str
    type_url: str
    hash: str
    value: bytes
    references: tuple[Reference, ...]
    """What this resource needs (see :func:`resource_references`), sorted, without repeats."""

    @property
    def body(self) -> any_pb2.Any:
        """A new ``Any`` holding this resource, as it goes on the wire."""
        return any_pb2.Any(type_url=self.type_url, value=self.value)

    @classmethod
    def from_message(cls, message: Any) -> Resource:
        """The resource of ``message``, or of a resource the translator wrote as bytes."""
        kind = _KINDS.get(type(message))
        if kind is None:
            if type(message) is Serialized:
                return cls._from_serialized(message)
            url = type_url_of(message)
            kind = RESOURCE_TYPES.get(url)
            if kind is None:
                raise InconsistentSnapshotError(f"unsupported resource type {url}")
        data = message.SerializeToString(deterministic=True)
        url = kind.type_url
        name = kind.name_of(message)
        return cls(
            name, url, hashlib.sha256(data).hexdigest(), data, _references(message, url, name)
        )

    @classmethod
    def _from_serialized(cls, serialized: Serialized) -> Resource:
        url = serialized.type_url
        if url not in _WITHOUT_REFERENCES:
            kind = RESOURCE_TYPES.get(url)
            if kind is None:
                raise InconsistentSnapshotError(f"unsupported resource type {url}")
            # Its references are read from the message (not written as bytes today).
            return cls.from_message(kind.message_class.FromString(serialized.data))
        data = serialized.data
        return cls(serialized.name, url, hashlib.sha256(data).hexdigest(), data, _NO_REFERENCES)

    def __reduce__(self) -> tuple[Any, ...]:
        # Its fields, not the dataclass's state dictionary: a forked translation sends
        # thousands back (controlplane.forked_map), and this unpickles in half the time.
        return (Resource, (self.name, self.type_url, self.hash, self.value, self.references))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Resource):
            return NotImplemented
        return (self.type_url, self.name, self.hash) == (other.type_url, other.name, other.hash)

    def __hash__(self) -> int:
        return hash((self.type_url, self.name, self.hash))


_KINDS = {kind.message_class: kind for kind in RESOURCE_TYPES.values()}
"""The resource types by generated class: a dictionary lookup instead of a type URL."""


def content_version(resources: Mapping[str, Resource]) -> str:
    """The version of one type: a digest of its sorted ``(name, hash)`` pairs."""
    # One update over the joined lines hashes the same bytes as an update per part.
    lines = "".join([f"{name}\x00{resources[name].hash}\n" for name in sorted(resources)])
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


class Snapshot:
    """Resources per type URL plus content-derived versions; immutable once built.

    The four types of :data:`PUSH_ORDER` are always present, possibly empty.

    Snapshots given as ``share`` lend this one their table of a type (the
    resources by name, the version, and the links :meth:`check_consistency`
    follows) when this one's resources of that type are the very same objects
    in the same order: the proxy classes of a view send the same clusters and
    load assignments, and an edit of routes leaves them as they were. Such a
    type is indexed, hashed and checked once however many snapshots carry it.
    """

    __slots__ = ("__weakref__", "_consistent", "_links", "_resources", "_versions", "selections")

    def __init__(
        self, resources: Mapping[str, Iterable[Resource]], share: Iterable[Snapshot] = ()
    ) -> None:
        lenders = tuple(share)
        by_type: dict[str, Mapping[str, Resource]] = {}
        versions: dict[str, str] = {}
        self._links: dict[str, Mapping[str, frozenset[str]]] = {}
        for url in (*PUSH_ORDER, *sorted(set(resources) - set(PUSH_ORDER))):
            items = list(resources.get(url, ()))
            for lender in lenders:
                named = lender._resources.get(url)
                if named is not None and _same(items, named):
                    by_type[url] = named
                    versions[url] = lender._versions[url]
                    links = lender._links.get(url)
                    if links is not None:
                        self._links[url] = links
                    break
            else:
                table = {resource.name: resource for resource in items}
                if len(table) != len(items) or any(r.type_url != url for r in items):
                    _reject(url, items)
                by_type[url] = MappingProxyType(table)
                versions[url] = content_version(table)
        self._resources: Mapping[str, Mapping[str, Resource]] = MappingProxyType(by_type)
        self._versions: Mapping[str, str] = MappingProxyType(versions)
        self._consistent = False
        self.selections: dict[Any, Any] = {}
        """Memo of :func:`controlplane.xds.selection.select`, shared by every stream."""

    @classmethod
    def from_resources(cls, resources: Mapping[str, Iterable[Any]]) -> Snapshot:
        """Serialize and hash every message of ``{type_url: messages}``."""
        return cls(
            {
                url: [Resource.from_message(message) for message in messages]
                for url, messages in resources.items()
            }
        )

    @classmethod
    def empty(cls) -> Snapshot:
        return cls({})

    @property
    def type_urls(self) -> tuple[str, ...]:
        return tuple(self._resources)

    @property
    def versions(self) -> Mapping[str, str]:
        return self._versions

    def version(self, type_url: str) -> str:
        """The version of ``type_url``; ``KeyError`` for a type the snapshot lacks."""
        return self._versions[type_url]

    def resources(self, type_url: str) -> Mapping[str, Resource]:
        """Resources of ``type_url`` by name; empty for a type the snapshot lacks."""
        return self._resources.get(type_url, MappingProxyType({}))

    def name_hashes(self, type_url: str) -> dict[str, str]:
        """``{name: hash}`` of one type: the resource versions delta xDS will use."""
        return {name: r.hash for name, r in self.resources(type_url).items()}

    def check_consistency(self) -> None:
        """Raise :class:`InconsistentSnapshotError` listing every dangling or orphan link.

        A snapshot found consistent is not checked again (it cannot change).
        """
        if self._consistent:
            return
        referenced: dict[str, set[str]] = {ENDPOINT: set(), ROUTE: set()}
        for parent_url in (CLUSTER, LISTENER):
            for url, names in self._links_of(parent_url).items():
                referenced.setdefault(url, set()).update(names)
        if all(names <= self.resources(url).keys() for url, names in referenced.items()) and all(
            self.resources(url).keys() <= referenced[url] for url in (ENDPOINT, ROUTE)
        ):
            self._consistent = True
            return
        self._report_inconsistency()

    def _links_of(self, parent_url: str) -> Mapping[str, frozenset[str]]:
        """``{type_url: names}`` the resources of ``parent_url`` need (remembered)."""
        links = self._links.get(parent_url)
        if links is None:
            needed = set().union(*[r.references for r in self.resources(parent_url).values()])
            by_url: dict[str, set[str]] = {}
            for url, name in needed:
                by_url.setdefault(url, set()).add(name)
            links = {url: frozenset(names) for url, names in by_url.items()}
            self._links[parent_url] = links
        return links

    def _report_inconsistency(self) -> None:
        referenced: dict[str, set[str]] = {ENDPOINT: set(), ROUTE: set()}
        problems: list[str] = []
        for parent_url in (CLUSTER, LISTENER):
            for parent in self.resources(parent_url).values():
                for url, name in parent.references:
                    referenced.setdefault(url, set()).add(name)
                    if name not in self.resources(url):
                        problems.append(
                            f"{_kind(parent_url)} {parent.name!r} needs missing "
                            f"{_kind(url)} {name!r}"
                        )
        for url in (ENDPOINT, ROUTE):
            for name in sorted(set(self.resources(url)) - referenced[url]):
                problems.append(f"{_kind(url)} {name!r} is referenced by nothing")
        if problems:
            raise InconsistentSnapshotError("; ".join(problems))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Snapshot):
            return NotImplemented
        return self._versions == other._versions

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._versions.items())))

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{_kind(url)}={self._versions[url]}({len(named)})"
            for url, named in self._resources.items()
        )
        return f"Snapshot({parts})"


def _same(items: list[Resource], held: Mapping[str, Resource]) -> bool:
    """True when the resources of ``held`` are ``items``: the same objects in the same order."""
    return len(held) == len(items) and all(map(is_, items, held.values()))


def _reject(url: str, resources: Iterable[Resource]) -> None:
    """Raise for the first resource of ``url`` filed under the wrong type or named twice."""
    names: set[str] = set()
    for resource in resources:
        if resource.type_url != url:
            raise InconsistentSnapshotError(
                f"{resource.type_url} resource {resource.name!r} filed under {url}"
            )
        if resource.name in names:
            raise InconsistentSnapshotError(f"duplicate {url} resource name {resource.name!r}")
        names.add(resource.name)


def _kind(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]
