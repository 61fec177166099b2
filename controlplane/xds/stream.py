"""What every sans-IO xDS server stream core shares, whatever its variant.

A stream learns its node from the first request (only that one is sure to
carry it) and looks its snapshot up then; on ADS every request must name its
``type_url``, on a single-type stream a request may omit it but may not name
another; nonces count up per stream, so they are unique within it and never
survive a reconnect; ACKs, NACKs and stale requests are collected as events
for the driver to log. A request may subscribe to at most ``max_names`` names
of one type (:class:`TooManyNames`; 0: no limit). A driver may hand requests over as received bytes
(:meth:`StreamCore.on_wire`, after :meth:`StreamCore.shrink` when they must
wait); a request that does not decode is the client's protocol error.
:class:`~controlplane.xds.sotw.SotwStream` and
:class:`~controlplane.xds.delta.DeltaStream` add the protocol itself.

The node is kept as its encoding, split in two (:func:`split_node`): the
fields every proxy of one build sends alike (its user agent, ``extensions``
and ``client_features``: nearly all of an Envoy's 20 KB) as one bytes object
interned in a byte-bounded table shared by all streams, and the node's own
fields per stream. The parts hold disjoint fields, so decoding one after the
other gives the node back. A node too small to be worth it, or whose shared
part the table has since dropped, simply costs its stream all its bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf.message import DecodeError

from controlplane.errors import ProtocolError
from controlplane.translate.wire import read_varint
from controlplane.xds.interning import Interner, MiB
from controlplane.xds.repeated_names import ShrunkRequest
from controlplane.xds.snapshot import Snapshot
from controlplane.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE

_TYPE_URLS = {type_url: type_url for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE)}

_SHARED_FIELDS = frozenset(
    base_pb2.Node.DESCRIPTOR.fields_by_name[name].number
    for name in (
        "user_agent_name",
        "user_agent_version",
        "user_agent_build_version",
        "extensions",
        "client_features",
    )
)
"""The Node fields alike for every proxy of one build."""
_SHARED_ABOVE = max(_SHARED_FIELDS)
# split_node finds them as one run between the own fields: no own field may be numbered amid them.
assert frozenset(range(min(_SHARED_FIELDS), _SHARED_ABOVE + 1)) == _SHARED_FIELDS

_SPLIT_FROM = 512
"""Nodes shorter than this (bytes) are kept whole: splitting would save next to nothing."""

_SHARED_PARTS: Interner[bytes] = Interner(16 * MiB, len)
"""The shared parts of nodes. Distinct builds are few; a client inventing new ones
only pushes older parts out (their streams keep them, as they would whole nodes)."""


def split_node(node: base_pb2.Node) -> tuple[bytes, bytes | None]:
    """``node``'s encoding as (its own fields, its :data:`_SHARED_FIELDS` interned), or
    ``(encoding, None)`` when it is kept whole.

    The shared fields are not walked one by one (an Envoy lists 200 extensions): the
    own fields are encoded apart, and the serializer writes fields in number order,
    so the shared ones (numbers 6 to 10) are what lies between the own fields below
    and above them (both encodings deterministic: map entries, as in ``metadata``,
    in one order). Should that order not hold, the node is kept whole.
    """
    wire = node.SerializeToString(deterministic=True)
    if len(wire) < _SPLIT_FROM:
        return wire, None
    own = base_pb2.Node(
        **{
            field.name: value
            for field, value in node.ListFields()
            if field.number not in _SHARED_FIELDS
        }
    ).SerializeToString(deterministic=True)
    below = _fields_below(own, _SHARED_ABOVE)
    above = len(wire) - (len(own) - below)
    if above <= below or not (wire.startswith(own[:below]) and wire.endswith(own[below:])):
        return wire, None
    return own, _SHARED_PARTS.intern(wire[below:above])


def _fields_below(wire: bytes, number: int) -> int:
    """Where the first top-level field numbered above ``number`` starts in ``wire``."""
    at = 0
    while at < len(wire):
        tag, after = read_varint(wire, at)
        if tag >> 3 > number:
            return at
        kind = tag & 7
        if kind == 2:
            size, after = read_varint(wire, after)
            after += size
        elif kind == 0:
            _, after = read_varint(wire, after)
        else:  # fixed64 or fixed32: Node has neither, but skip them all the same
            after += 8 if kind == 1 else 4
        at = after
    return at


_NONCES = tuple(str(counter) for counter in range(4096))
"""The texts of the first nonces, shared by every stream: a stream keeps its newest
nonce per type, and its counter stays low (one step per response it sends)."""


class TooManyNames(ProtocolError):
    """A request subscribes to more names of one type than the stream allows."""

    def __init__(self, type_url: str, count: int, limit: int) -> None:
        super().__init__("client", f"{count} resource names of {type_url}, more than {limit}")
        self.type_url = type_url
        self.count = count
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Ack:
    type_url: str
    version: str
    nonce: str


@dataclass(frozen=True, slots=True)
class Nack:
    type_url: str
    rejected_version: str
    """The version the client refused; ``version_info`` of the NACK is ``kept_version``."""
    kept_version: str
    nonce: str
    message: str


@dataclass(frozen=True, slots=True)
class StaleRequest:
    type_url: str
    nonce: str
    expected_nonce: str


StreamEvent = Ack | Nack | StaleRequest


@dataclass(frozen=True, slots=True)
class TypeStatus:
    """What one stream knows about one type, for logs and admin pages."""

    type_url: str
    wildcard: bool
    names: frozenset[str]
    version: str
    nonce: str
    acked_version: str
    nacked_version: str


class StreamCore:
    """The node, the type URL rules, nonces and events of one stream.

    Slotted, and the node is kept as its encoding: a server holds one core per
    connected proxy, and a decoded ``Node`` costs over a kilobyte (its own
    protobuf arena) where its own bytes cost what the client sent about itself
    (its build's bytes are shared, see :func:`split_node`). Events are held
    in a list only between a request that makes some and :meth:`pop_events`.
    """

    __slots__ = (
        "_counter",
        "_events",
        "_fixed_type",
        "_lookup",
        "_node",
        "_node_shared",
        "_snapshot",
        "max_names",
    )

    def __init__(
        self,
        snapshot_lookup: Callable[[base_pb2.Node], Snapshot],
        *,
        type_url: str | None = None,
    ) -> None:
        self._lookup: Callable[[base_pb2.Node], Snapshot] | None = snapshot_lookup
        self._fixed_type = type_url
        self._node: bytes | None = None
        """The node's own fields (or all of it, see :func:`split_node`)."""
        self._node_shared: bytes | None = None
        """The node's interned shared fields, if split."""
        self._snapshot: Snapshot | None = None
        self._counter = 0
        self._events: list[StreamEvent] | None = None
        self.max_names = 0
        """Names of one type a subscription may hold (0: no limit); set by the driver."""

    @property
    def node(self) -> base_pb2.Node | None:
        """The node of the stream's first request (``None`` before it arrives), decoded
        anew on each access (for logs and admin pages, not for the push path)."""
        if self._node is None:
            return None
        node = base_pb2.Node.FromString(self._node)
        if self._node_shared is not None:
            node.MergeFromString(self._node_shared)
        return node

    @property
    def has_node(self) -> bool:
        """The stream's first request has arrived (cheaper than decoding :attr:`node`)."""
        return self._node is not None

    @property
    def node_id(self) -> str | None:
        """The node's ``id``, read from its encoding without decoding the rest (an
        Envoy's node lists its extensions: 20 KB, 13 µs to decode)."""
        wire = self._node
        if wire is None:
            return None
        at = 0
        while at < len(wire):
            tag, at = read_varint(wire, at)
            kind = tag & 7
            if kind == 2:
                size, at = read_varint(wire, at)
                if tag >> 3 == 1:
                    return wire[at : at + size].decode()
                at += size
            elif kind == 0:
                _, at = read_varint(wire, at)
            else:  # fixed64 or fixed32: Node has neither, but skip them all the same
                at += 8 if kind == 1 else 4
        return ""

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    request_type: Any = None
    """The request message class of the protocol variant."""

    def on_request(self, request: Any) -> list[Any]:
        raise NotImplementedError

    def withdraw(self, response: Any) -> None:
        """The driver did not send ``response`` (one this core returned, the newest of
        its type): the client still holds what it held before."""
        raise NotImplementedError

    def _check_names(self, type_url: str, count: int) -> None:
        if self.max_names and count > self.max_names:
            raise TooManyNames(type_url, count, self.max_names)

    def shrink(self, wire: bytes) -> bytes | ShrunkRequest:
        """A request's bytes in the form to keep until :meth:`on_wire` (here: as is)."""
        return wire

    @property
    def ack_weight(self) -> int:
        """Roughly how many bytes the client's ACKs carry beyond a fixed header (here:
        none; a delta ACK names no resources)."""
        return 0

    def on_wire(self, data: bytes | ShrunkRequest) -> list[Any]:
        """:meth:`on_request` for a request as received on the wire."""
        assert isinstance(data, bytes)
        return self.on_request(self._decode(data))

    def _decode(self, wire: bytes) -> Any:
        try:
            return self.request_type.FromString(wire)
        except DecodeError as exc:
            name = self.request_type.DESCRIPTOR.name
            raise ProtocolError("client", f"undecodable {name}: {exc}") from None

    def pop_events(self) -> list[StreamEvent]:
        """ACKs, NACKs and stale requests seen since the last call."""
        events, self._events = self._events, None
        return [] if events is None else events

    def _event(self, event: StreamEvent) -> None:
        if self._events is None:
            self._events = [event]
        else:
            self._events.append(event)

    def _begin(self, request: Any) -> tuple[str, Snapshot]:
        """The request's type URL and the stream's snapshot, learning the node if new.

        Raises :class:`ProtocolError` (culprit ``"client"``) for a request without
        a ``type_url`` on ADS, a foreign ``type_url`` on a single-type stream, or
        a first request without ``node``.
        """
        type_url = self._type_url_of(request)
        if self._node is None:
            if not request.HasField("node"):
                raise ProtocolError("client", "the first request of a stream must carry node")
            node = base_pb2.Node()
            node.CopyFrom(request.node)
            self._node, self._node_shared = split_node(node)
            assert self._lookup is not None
            self._snapshot = self._lookup(node)
            # Used once. A driver's lookup is usually its own bound method, and holding
            # it would tie driver and core in a cycle only the cyclic collector frees.
            self._lookup = None
        assert self._snapshot is not None
        return type_url, self._snapshot

    def _next_nonce(self) -> str:
        counter = self._counter = self._counter + 1
        return _NONCES[counter] if counter < len(_NONCES) else str(counter)

    def _type_url_of(self, request: Any) -> str:
        given: str = request.type_url
        if self._fixed_type is None:
            if not given:
                raise ProtocolError("client", "type_url is required on an aggregated stream")
            # The shared constant rather than the request's copy: the stream keeps
            # its type URLs as keys for as long as it lives.
            return _TYPE_URLS.get(given, given)
        if given and given != self._fixed_type:
            raise ProtocolError("client", f"type_url {given} on a stream for {self._fixed_type}")
        return self._fixed_type
