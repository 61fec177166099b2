"""Responses encoded once per content and shared by every stream that sends it.

Thousands of streams of one proxy class are sent the same resources at the same
version; only their nonces differ. Building a ``DiscoveryResponse`` per stream
copies every resource into it and serializes it again: for a full CDS state of
3,000 clusters that is a megabyte of copying per stream, minutes of CPU for
10,000 streams. Protobuf decodes a message from the concatenation of its
fields in any order, so a response here is a shared *body* (version, resources,
type URL, and for delta the removed names) followed by the stream's own nonce
field, and encoding it for a stream is one concatenation.

A body frames each resource's serialization as a response entry
(:func:`sotw_entry`, :func:`delta_entry`) as it is built; the entries are not
kept, since the bodies are. Bodies are memoized per snapshot (in
``Snapshot.selections``, within :data:`BODY_BUDGET` bytes, least recently used
first out) under the identity of the shared list of resources they encode
(SotW: the selection or change list every stream of a class shares) or, for
delta, the identities of the resources and the removed names; an entry keeps
that list or those resources alive, so an identity is never reused while its
entry exists.

The memo pays during a burst (an initial sync or a push wave: thousands of
streams sent the same bodies within seconds); once the server is quiet it only
holds copies of the snapshot's resources (5 MB at 1,000 services), which
:func:`release_bodies` drops (the server's housekeeping calls it). A stream
that connects later has its bodies built again, a few milliseconds each.

An :class:`EncodedResponse` is what the stream cores return. The driver writes
:meth:`EncodedResponse.SerializeToString`; ``type_url``, ``nonce`` and
``version`` are plain attributes for logs; every other field of the message
(``resources``, ``version_info``, ...) reads from a message decoded on first
use, for tests and in-memory clients.
"""

from __future__ import annotations

import collections
import weakref
from collections.abc import Sequence
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from controlplane.translate.wire import length_delimited, string_field
from controlplane.xds.interning import names_cost
from controlplane.xds.snapshot import Resource

_NONCE_TAG = b"\x2a"  # field 5, length-delimited, in both response messages


class EncodedResponse:
    """A response as its shared body plus this stream's nonce."""

    __slots__ = (
        "_message",
        "body",
        "count",
        "message_type",
        "nonce",
        "removed",
        "removed_names",
        "sent",
        "type_url",
        "version",
    )

    def __init__(
        self,
        message_type: Any,
        body: bytes,
        *,
        type_url: str,
        version: str,
        nonce: str,
        count: int,
        removed: int = 0,
        sent: Sequence[Resource] = (),
        removed_names: Sequence[str] = (),
    ) -> None:
        self.message_type = message_type
        self.body = body
        self.type_url = type_url
        self.version = version
        self.nonce = nonce
        self.count = count
        """How many resources the response carries."""
        self.removed = removed
        """How many names it removes (delta)."""
        self.sent = sent
        """The resources it carries (shared, do not modify)."""
        self.removed_names = removed_names
        """The names it removes (delta)."""
        self._message: Any = None

    def SerializeToString(self, *, deterministic: bool = False) -> bytes:
        """The response's bytes (always the same for the same content and nonce)."""
        return self.body + string_field(_NONCE_TAG, self.nonce)

    @property
    def message(self) -> Any:
        """The response decoded (made on first use)."""
        if self._message is None:
            self._message = self.message_type.FromString(self.SerializeToString())
        return self._message

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.message, name)

    def __repr__(self) -> str:
        kind = self.message_type.DESCRIPTOR.name
        return f"<Encoded{kind} {self.type_url} v{self.version} nonce {self.nonce}: {self.count}>"


BODY_BUDGET = 256 * 1024 * 1024
"""Bytes of encoded bodies kept per snapshot; least recently used go first."""


class _Bodies:
    """Encoded bodies of one snapshot, by key, within :data:`BODY_BUDGET`."""

    def __init__(self) -> None:
        self._entries: collections.OrderedDict[Any, tuple[Any, bytes, int]] = (
            collections.OrderedDict()
        )
        self._size = 0
        _LIVE.add(self)

    def get(self, key: Any) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        return found[1]

    def put(self, key: Any, keep: Any, body: bytes, key_cost: int = 0) -> None:
        """Store ``body``; ``keep`` (what the ``id`` values in ``key`` belong to) stays
        alive with it, so those identities cannot be reused while it is stored.
        ``key_cost``: bytes the key holds beyond ids (names a client chose)."""
        old = self._entries.pop(key, None)
        if old is not None:
            self._size -= old[2]
        cost = len(body) + key_cost
        self._entries[key] = (keep, body, cost)
        self._size += cost
        while self._size > BODY_BUDGET and len(self._entries) > 1:
            _, (_, _, dropped) = self._entries.popitem(last=False)
            self._size -= dropped

    def clear(self) -> int:
        """Drop every body; returns the bytes they held."""
        size = self._size
        self._entries.clear()
        self._size = 0
        return size


_LIVE: weakref.WeakSet[_Bodies] = weakref.WeakSet()
"""The body memos of the snapshots alive (a memo dies with its snapshot)."""


def release_bodies() -> int:
    """Drop the bodies every snapshot's memo holds; returns the bytes they held.

    For quiet moments (see the module docstring): a body is built again when a
    stream next needs it."""
    return sum(bodies.clear() for bodies in list(_LIVE))


def sotw_entry(resource: Resource) -> bytes:
    """``resource`` encoded as one entry of ``DiscoveryResponse.resources`` (an ``Any``)."""
    return length_delimited(b"\x12", _any_bytes(resource))


def delta_entry(resource: Resource) -> bytes:
    """``resource`` encoded as one entry of ``DeltaDiscoveryResponse.resources``: a
    ``Resource`` with ``version`` = its hash, the body and the name."""
    item = b"".join(
        (
            string_field(b"\x0a", resource.hash),
            length_delimited(b"\x12", _any_bytes(resource)),
            string_field(b"\x1a", resource.name),
        )
    )
    return length_delimited(b"\x12", item)


def _any_bytes(resource: Resource) -> bytes:
    # The serialization of ``resource.body``: field 1 (type_url), then field 2
    # (value), each left out when empty, as protobuf writes them.
    value = resource.value
    return string_field(b"\x0a", resource.type_url) + (
        length_delimited(b"\x12", value) if value else b""
    )


def _bodies(memo: dict[Any, Any]) -> _Bodies:
    found = memo.get(_Bodies)
    if found is None:
        found = memo[_Bodies] = _Bodies()
    return found  # type: ignore[no-any-return]


def sotw_response(
    memo: dict[Any, Any],
    type_url: str,
    version: str,
    resources: Sequence[Resource],
    nonce: str,
) -> EncodedResponse:
    """A ``DiscoveryResponse`` carrying ``resources``; its body is shared through
    ``memo`` (a snapshot's) by every stream passing the same ``resources`` object."""
    bodies = _bodies(memo)
    key = ("sotw", type_url, version, id(resources))
    body = bodies.get(key)
    if body is None:
        body = b"".join(
            (
                string_field(b"\x0a", version),
                *map(sotw_entry, resources),
                string_field(b"\x22", type_url),
            )
        )
        bodies.put(key, resources, body)
    return EncodedResponse(
        discovery_pb2.DiscoveryResponse,
        body,
        type_url=type_url,
        version=version,
        nonce=nonce,
        count=len(resources),
        sent=resources,
    )


def delta_response(
    memo: dict[Any, Any],
    type_url: str,
    version: str,
    resources: Sequence[Resource],
    removed: Sequence[str],
    nonce: str,
) -> EncodedResponse:
    """A ``DeltaDiscoveryResponse``; its body is shared through ``memo`` (a
    snapshot's) by every stream sending the same resources and removals."""
    bodies = _bodies(memo)
    kept = tuple(resources)
    key = ("delta", type_url, version, tuple(map(id, kept)), tuple(removed))
    body = bodies.get(key)
    if body is None:
        body = b"".join(
            (
                string_field(b"\x0a", version),
                *map(delta_entry, kept),
                string_field(b"\x22", type_url),
                *(length_delimited(b"\x32", name.encode()) for name in removed),
            )
        )
        bodies.put(key, kept, body, names_cost(removed) if removed else 0)
    return EncodedResponse(
        discovery_pb2.DeltaDiscoveryResponse,
        body,
        type_url=type_url,
        version=version,
        nonce=nonce,
        count=len(kept),
        removed=len(removed),
        sent=kept,
        removed_names=removed,
    )
