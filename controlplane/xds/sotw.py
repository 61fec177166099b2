"""Sans-IO core of one state-of-the-world xDS server stream.

:class:`SotwStream` turns ``DiscoveryRequest`` messages and snapshot changes
into the ``DiscoveryResponse`` messages to send, and touches neither sockets
nor gRPC nor the event loop; a driver (``controlplane.server.ads``) feeds it
and writes what it returns, in order. One instance serves an ADS stream (every
request names its ``type_url``) or, given ``type_url``, a single-type stream.

Per type the stream remembers the subscription (:class:`Subscription`), the
version and nonce of the newest response, and ``held``: what the client holds
from this stream, as the :class:`~controlplane.xds.selection.Selection` last
sent (shared with every other stream that was sent the same). Everything
follows from comparing what the subscription selects in the current snapshot
with ``held``:

* Full-state types (LDS, CDS) are answered with every selected resource when
  the selected set differs from ``held`` in any way, including deletions (an
  empty response deletes everything). The first request of a type is always
  answered, even with nothing.
* Partial types (RDS, EDS) are answered with the selected resources whose hash
  differs from ``held``; names that disappeared from the snapshot are dropped
  from ``held`` so that they are sent again if they return.
* Unsubscribing drops names from ``held``, so resubscribing resends them.
* ``held`` is updated when a response is sent, whether or not the client
  accepts it. A NACK therefore never causes a resend: the next response waits
  for content or subscriptions to change. ACK and NACK are told apart by
  ``error_detail`` only.
* A request whose ``response_nonce`` is not the newest nonce of its type is
  stale and ignored entirely; the client repeats its whole subscription when
  it answers the newest response. An empty nonce is a fresh request.
* On a type's first request of a stream, a client that names the version this
  snapshot has and is on wildcard already holds exactly this content (versions
  are derived from content), so nothing is resent. With explicit names every
  name is new to this stream and is sent.

When one event yields several responses they come in make-before-break order:
CDS, EDS, LDS, RDS. Any CDS response is followed by every subscribed EDS
resource, changed or not, because a cluster that was added or modified only
finishes warming when its load assignment arrives. When a snapshot change
removes clusters and also changes listeners or routes, the first CDS response
still carries the removed clusters and a final CDS response after the routes
deletes them, so no route ever points at a cluster that is already gone.
Nonces are a per-stream counter, so they are unique within the stream and
never survive a reconnect.

Requests may come as messages (:meth:`SotwStream.on_request`) or as the bytes
received (:meth:`SotwStream.on_wire`); with bytes, a request that repeats the
name list of its type is recognized without decoding the names
(:mod:`~controlplane.xds.repeated_names`). Responses are
:class:`~controlplane.xds.encoding.EncodedResponse` objects whose bodies are
shared with every stream sent the same resources.

A stream is not thread-safe: exactly one driver owns it and calls it in order.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.xds.encoding import EncodedResponse, sotw_response
from controlplane.xds.repeated_names import ShrunkRequest, names_wire, shrink
from controlplane.xds.selection import Selection, select
from controlplane.xds.snapshot import Resource, Snapshot, content_version
from controlplane.xds.stream import Ack, Nack, StaleRequest, StreamCore, TypeStatus
from controlplane.xds.subscription import Subscription
from controlplane.xds.types import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    is_full_state,
    push_rank,
)


@dataclass(slots=True)
class _TypeState(Subscription):
    """One type's subscription (inherited) and what the stream sent of it.

    One object per type rather than a state holding a :class:`Subscription`:
    a stream has a state per type, and the second object cost 72 bytes each.
    """

    held: Selection | None = None
    version: str = ""
    nonce: str = ""
    acked_version: str = ""
    nacked_version: str = ""
    names_wire: bytes | None = None
    """The last name list, encoded (see :mod:`repeated_names`), when requests
    arrive as bytes (:meth:`SotwStream.on_wire`)."""


@dataclass(slots=True)
class _Send:
    type_url: str
    version: str
    resources: Sequence[Resource]
    """Shared between streams where possible: responses are encoded once per object."""


class SotwStream(StreamCore):
    __slots__ = ("_types",)

    request_type = discovery_pb2.DiscoveryRequest

    def __init__(
        self,
        snapshot_lookup: Callable[[base_pb2.Node], Snapshot],
        *,
        type_url: str | None = None,
    ) -> None:
        super().__init__(snapshot_lookup, type_url=type_url)
        self._types: dict[str, _TypeState] = {}

    def status(self, type_url: str) -> TypeStatus | None:
        state = self._types.get(type_url)
        if state is None:
            return None
        return TypeStatus(
            type_url=type_url,
            wildcard=state.wildcard,
            names=frozenset(state.names),
            version=state.version,
            nonce=state.nonce,
            acked_version=state.acked_version,
            nacked_version=state.nacked_version,
        )

    def held(self, type_url: str) -> Mapping[str, Resource]:
        """``{name: resource}`` last sent of ``type_url`` (for admin pages)."""
        state = self._types.get(type_url)
        if state is None or state.held is None:
            return {}
        return state.held.resources

    def on_request(self, request: Any) -> list[Any]:
        """Consume one ``DiscoveryRequest``; return the responses to send, in order.

        Raises :class:`ProtocolError` (culprit ``"client"``) for a request without
        a ``type_url`` on ADS, a foreign ``type_url`` on a single-type stream, or
        a first request without ``node``.
        """
        return self._on_request(request, repeated=False, track=False)

    def shrink(self, wire: bytes) -> bytes | ShrunkRequest:
        """``wire`` without its name list if that repeats one this stream holds.

        Cheap (a few fields walked, one byte comparison), so a driver can call it
        as each request arrives and keep only the small remainder while the
        request waits. Safe at any time: :meth:`on_wire` checks again.
        """
        known = sorted(
            {s.names_wire for s in self._types.values() if s.names_wire}, key=len, reverse=True
        )
        return shrink(wire, known) if known else wire

    @property
    def ack_weight(self) -> int:
        """A SotW ACK repeats its type's whole name list: the longest one held."""
        return max((len(s.names_wire) for s in self._types.values() if s.names_wire), default=0)

    def on_wire(self, data: bytes | ShrunkRequest) -> list[Any]:
        """:meth:`on_request` for a request as received (bytes, or :meth:`shrink`'s result).

        A request that repeats the name list the stream holds for its type is
        handled without decoding the names (see :mod:`repeated_names`).
        """
        if isinstance(data, bytes):
            data = self.shrink(data)
        if isinstance(data, ShrunkRequest):
            request = self._decode(data.wire)
            state = self._types.get(self._type_url_of(request))
            if state is not None and state.names_wire is data.names:
                return self._on_request(request, repeated=True, track=True)
            data = data.expand()
        return self._on_request(self._decode(data), repeated=False, track=True)

    def _on_request(self, request: Any, *, repeated: bool, track: bool) -> list[Any]:
        type_url, snapshot = self._begin(request)

        state = self._types.get(type_url)
        nonce = request.response_nonce
        if state is not None and nonce and state.nonce and nonce != state.nonce:
            self._event(StaleRequest(type_url, nonce, state.nonce))
            return []
        if state is not None and nonce and nonce == state.nonce:
            if request.HasField("error_detail"):
                state.nacked_version = state.version
                self._event(
                    Nack(
                        type_url,
                        rejected_version=state.version,
                        kept_version=request.version_info,
                        nonce=nonce,
                        message=request.error_detail.message,
                    )
                )
            else:
                state.acked_version = state.version
                self._event(Ack(type_url, state.version, nonce))

        first = state is None
        if state is None:
            state = self._types[type_url] = _TypeState()
        if not repeated:
            self._check_names(type_url, len(request.resource_names))
            state.replace(request.resource_names)
            state.names_wire = names_wire(request.resource_names) if track else None
        if state.held is not None:
            state.held = state.held.restricted(state.key, state.wants)

        if (
            first
            and state.wildcard
            and type_url in snapshot.versions
            and request.version_info == snapshot.version(type_url)
        ):
            state.held = select(snapshot, type_url, state.key)
            state.version = state.acked_version = request.version_info
            return []
        return self._respond(snapshot, None, {type_url})

    def on_snapshot(self, snapshot: Snapshot) -> list[Any]:
        """Adopt a new snapshot; return the responses it makes necessary, in order."""
        previous, self._snapshot = self._snapshot, snapshot
        if self._node is None or snapshot is previous:
            return []
        types = self._types
        if previous is None:
            return self._respond(snapshot, previous, set(types))
        # Thousands of streams of a class hold the same subscriptions and the same
        # (shared) selections, so they need the same plan: it is worked out once per
        # snapshot and state, and each stream only adds its nonces.
        helds = tuple(state.held for state in types.values())
        key = (
            "sotw-plan",
            id(previous),
            tuple((type_url, state.key) for type_url, state in types.items()),
            tuple(map(id, helds)),
        )
        memo = snapshot.selections
        found = memo.get(key)
        if found is None or found[0]() is not previous or found[1] != helds:
            # A weak reference: a snapshot must not keep its predecessors alive.
            plan = self._planned(snapshot, previous, set(types))
            found = memo[key] = (weakref.ref(previous), helds, plan)
        return self._send(snapshot, *found[2])

    def withdraw(self, response: Any) -> None:
        """``response`` was not sent: the type's next response carries everything
        selected, and the client's next request is not stale (see :meth:`StreamCore.withdraw`)."""
        state = self._types.get(response.type_url)
        if state is not None:
            state.held = None
            state.nonce = ""

    def _respond(self, snapshot: Snapshot, previous: Snapshot | None, asked: set[str]) -> list[Any]:
        return self._send(snapshot, *self._planned(snapshot, previous, asked))

    def _send(
        self, snapshot: Snapshot, sends: list[_Send], helds: dict[str, Selection | None]
    ) -> list[Any]:
        for type_url, held in helds.items():
            self._types[type_url].held = held
        return [self._response(snapshot, send) for send in sends]

    def _planned(
        self, snapshot: Snapshot, previous: Snapshot | None, asked: set[str]
    ) -> tuple[list[_Send], dict[str, Selection | None]]:
        """What to send and what each type then holds; changes nothing."""
        sends: list[_Send] = []
        helds: dict[str, Selection | None] = {}
        removed_clusters: list[Resource] = []
        cluster_sent = False
        for type_url in sorted(self._types, key=push_rank):
            forced = type_url == ENDPOINT and cluster_sent
            if type_url not in asked and not forced:
                continue
            send, removed, helds[type_url] = self._plan(
                snapshot, type_url, self._types[type_url], forced
            )
            if send is None:
                continue
            sends.append(send)
            if type_url == CLUSTER:
                cluster_sent = True
                if previous is not None:
                    old = previous.resources(CLUSTER)
                    removed_clusters = [old[n] for n in sorted(removed) if n in old]
        if removed_clusters and any(s.type_url in (LISTENER, ROUTE) for s in sends):
            final = sends[0]
            kept = {r.name: r for r in (*final.resources, *removed_clusters)}
            interim = _Send(CLUSTER, content_version(kept), _by_name(kept.values()))
            sends = [interim, *sends[1:], final]
        return sends, helds

    def _plan(
        self, snapshot: Snapshot, type_url: str, state: _TypeState, forced: bool
    ) -> tuple[_Send | None, set[str], Selection | None]:
        """(what to send, removed names, what the type then holds)."""
        if type_url not in snapshot.versions:
            return None, set(), state.held
        selection = select(snapshot, type_url, state.key)
        held = state.held
        changed, removed = selection.changes_since(held)
        version = snapshot.version(type_url)
        if is_full_state(type_url):
            if held is not None and not changed and not removed:
                return None, set(), held
            return _Send(type_url, version, selection.ordered), set(removed), selection
        if forced:
            changed = selection.ordered
        if not changed:
            return None, set(), selection
        return _Send(type_url, version, changed), set(), selection

    def _response(self, snapshot: Snapshot, send: _Send) -> EncodedResponse:
        nonce = self._next_nonce()
        state = self._types[send.type_url]
        state.version = send.version
        state.nonce = nonce
        return sotw_response(
            snapshot.selections, send.type_url, send.version, send.resources, nonce
        )


def _by_name(resources: Iterable[Resource]) -> list[Resource]:
    return sorted(resources, key=lambda r: r.name)
