"""Sans-IO core of one incremental (delta) xDS server stream.

:class:`DeltaStream` is the incremental sibling of
:class:`controlplane.xds.sotw.SotwStream`: it turns ``DeltaDiscoveryRequest``
messages and snapshot changes into the ``DeltaDiscoveryResponse`` messages to
send, and touches neither sockets nor gRPC nor the event loop. One instance
serves an incremental ADS stream (every request names its ``type_url``, and
each type is its own logical stream) or, given ``type_url``, a single-type
stream.

The version of one resource is its content hash from the snapshot, so the
server never needs to remember what it sent beyond ``{name: hash}``. Per type
the stream keeps:

* the subscription: explicit names plus a wildcard flag. ``"*"`` in
  ``resource_names_subscribe`` is the wildcard; for LDS and CDS a first
  request with both lists empty is the legacy wildcard. Unsubscribing ``"*"``
  leaves it. Subscribe and unsubscribe lists are deltas: empty lists change
  nothing, and unsubscribing a name that is not subscribed is ignored.
* ``sent``: ``{name: version}`` of what the client holds, as far as this
  stream knows: every resource sent (accepted or not), and on a type's first
  request the ``initial_resource_versions`` a reconnecting client reports
  (only for names it subscribes to).
* ``absent``: explicit names already reported as not existing, so that the
  report is not repeated on every snapshot.
* ``answer``: names that must be answered in the next response whatever
  ``sent`` says: every name of ``resource_names_subscribe`` after the first
  request (the client may have forgotten it), and an explicit name
  unsubscribed while on wildcard (the client cannot tell whether the wildcard
  still covers it, so it gets the resource or a removal).

From these, one plan per type: a subscribed resource whose hash differs from
``sent`` (or that must be answered) goes into ``resources``; a name in
``sent`` that left the snapshot, an explicit name that does not exist and was
not reported yet, and an answered name that does not exist go into
``removed_resources``. Nothing is sent when the plan is empty, except that the
first wildcard request of a type without ``initial_resource_versions`` is
always answered, so a new client learns that nothing exists. A pure
unsubscribe therefore produces no response, and a NACK never causes a resend:
``sent`` already holds the rejected versions, and the resources go out again
only when they change.

ACK and NACK are matched by nonce: every response's nonce is remembered per
type until acknowledged (the newest :data:`PENDING_LIMIT`), a request echoing
one of them is an ACK, or a NACK when it carries ``error_detail``, and it also
settles the older nonces of that type. A nonce this type never sent is
reported as :class:`StaleRequest`, but the request's subscription changes are
applied all the same. ``system_version_info`` is the snapshot's version of the
type and purely informational.

When one event yields several responses they go out make-before-break: first
every type's additions and updates in CDS, EDS, LDS, RDS order, then the
removals, parents before children (LDS, RDS, CDS, EDS); adjacent responses of
one type are merged. After a CDS response carrying clusters, the load
assignments those clusters use are resent even when unchanged, because a
cluster that was added or modified only finishes warming when its
ClusterLoadAssignment arrives. The stream remembers those names until they
have gone out on EDS, so the rule also holds when EDS subscribes to them only
later (after a reconnect, CDS is answered before the EDS request that would
otherwise suppress them with ``initial_resource_versions`` arrives).

A stream is not thread-safe: exactly one driver owns it and calls it in order.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.xds.encoding import EncodedResponse, delta_response
from controlplane.xds.selection import changes_between, select
from controlplane.xds.snapshot import Resource, Snapshot
from controlplane.xds.stream import Ack, Nack, StaleRequest, StreamCore, TypeStatus
from controlplane.xds.subscription import intern_key, intern_names
from controlplane.xds.types import (
    CLUSTER,
    ENDPOINT,
    FULL_STATE_TYPES,
    LISTENER,
    ROUTE,
    WILDCARD,
    push_rank,
)

REMOVE_ORDER: tuple[str, ...] = (LISTENER, ROUTE, CLUSTER, ENDPOINT)
"""Order of removal responses: a parent goes before the children it references."""

LEGACY_WILDCARD_TYPES: frozenset[str] = FULL_STATE_TYPES
"""Types whose first request with empty lists subscribes to the wildcard."""

PENDING_LIMIT = 64
"""Unacknowledged nonces remembered per type; older ones count as stale."""

_NONE: frozenset[str] = frozenset()
"""The one empty name set that idle streams share (an empty ``set`` costs 216 bytes)."""


def _frozen(names: Iterable[str]) -> frozenset[str]:
    frozen = frozenset(names)
    return frozen if frozen else _NONE


def remove_rank(type_url: str) -> int:
    """Sort key placing removals in :data:`REMOVE_ORDER` and unknown types last."""
    try:
        return REMOVE_ORDER.index(type_url)
    except ValueError:
        return len(REMOVE_ORDER)


@dataclass(slots=True)
class _DeltaType:
    names: frozenset[str] = frozenset()
    """Explicit names, interned (see :func:`intern_names`)."""
    wildcard: bool = False
    sent: Mapping[str, str] = field(default_factory=dict)
    """``{name: hash}`` the client holds. After every plan it is exactly what the
    subscription selects in the snapshot, so it is the shared :class:`Selection`
    mapping, not a copy: a stream costs memory only while it differs."""
    absent: frozenset[str] = frozenset()
    """Immutable and interned, so that streams in the same state share it."""
    answer: frozenset[str] = field(default_factory=lambda: _NONE)
    """Replaced, never changed in place: most streams owe nothing, and share :data:`_NONE`."""
    reply: bool = False
    """Answer the next plan even when it is empty (a new wildcard subscriber)."""
    version: str = ""
    nonce: str = ""
    acked_version: str = ""
    nacked_version: str = ""
    pending: dict[str, str] | None = None
    """Unacknowledged ``{nonce: system version}``, oldest first; ``None`` when every
    response is acknowledged (what most streams are, most of the time)."""

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names


@dataclass(slots=True)
class _Delta:
    type_url: str
    version: str
    resources: list[Resource]
    removed: list[str]


class DeltaStream(StreamCore):
    __slots__ = ("_types", "_warming")

    request_type = discovery_pb2.DeltaDiscoveryRequest

    def __init__(
        self,
        snapshot_lookup: Callable[[base_pb2.Node], Snapshot],
        *,
        type_url: str | None = None,
    ) -> None:
        super().__init__(snapshot_lookup, type_url=type_url)
        self._types: dict[str, _DeltaType] = {}
        self._warming: frozenset[str] = _NONE
        """Load assignments of clusters sent in CDS and not yet sent since in EDS."""

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

    def resource_versions(self, type_url: str) -> dict[str, str]:
        """``{name: version}`` the client holds of ``type_url``, as far as this stream knows."""
        state = self._types.get(type_url)
        return dict(state.sent) if state else {}

    def held(self, type_url: str) -> Mapping[str, Resource]:
        """``{name: resource}`` last sent of ``type_url`` (for admin pages)."""
        state = self._types.get(type_url)
        snapshot = self._snapshot
        if state is None or snapshot is None or type_url not in snapshot.versions:
            return {}
        current = snapshot.resources(type_url)
        return {
            name: current[name]
            for name, digest in state.sent.items()
            if name in current and current[name].hash == digest
        }

    def on_request(self, request: Any) -> list[Any]:
        """Consume one ``DeltaDiscoveryRequest``; return the responses to send, in order.

        Raises :class:`ProtocolError` (culprit ``"client"``) for a request without
        a ``type_url`` on ADS, a foreign ``type_url`` on a single-type stream, or
        a first request without ``node``.
        """
        type_url, snapshot = self._begin(request)

        state = self._types.get(type_url)
        first = state is None
        if state is None:
            state = self._types[type_url] = _DeltaType()
        self._acknowledge(type_url, state, request)
        if (
            not first
            and not request.resource_names_subscribe
            and not request.resource_names_unsubscribe
        ):
            # A pure ACK or NACK changes no subscription: nothing can be owed.
            return []
        self._subscribe(type_url, state, request, first)
        return self._respond(snapshot, {type_url})

    def on_snapshot(self, snapshot: Snapshot) -> list[Any]:
        """Adopt a new snapshot; return the responses it makes necessary, in order."""
        previous, self._snapshot = self._snapshot, snapshot
        if self._node is None or snapshot is previous:
            return []
        types = self._types
        settled = not self._warming and not any(
            state.answer or state.reply for state in types.values()
        )
        if previous is None or not settled:
            return self._respond(snapshot, set(types), previous)
        # Settled streams of a class differ only in nonces: streams that hold the same
        # subscriptions and the same (shared) sent versions get the same deltas and
        # end in the same state, worked out once per snapshot by the first of them.
        sents = tuple(state.sent for state in types.values())
        key = (
            "delta-plan",
            id(previous),
            tuple(
                (type_url, state.wildcard, state.names, state.absent)
                for type_url, state in types.items()
            ),
            tuple(map(id, sents)),
        )
        memo = snapshot.selections
        found = memo.get(key)
        if found is not None and found[0]() is previous and found[1] == sents:
            deltas, after = found[2]
            for type_url, (sent, absent) in after.items():
                state = types[type_url]
                state.sent, state.absent = sent, absent
        else:
            deltas = self._deltas(snapshot, set(types), previous)
            if not self._warming:  # settled afterwards too: the plan can be shared
                after = {t: (state.sent, state.absent) for t, state in types.items()}
                # A weak reference: a snapshot must not keep its predecessors alive.
                memo[key] = (weakref.ref(previous), sents, (deltas, after))
        return [self._response(snapshot, delta) for delta in deltas]

    def _acknowledge(self, type_url: str, state: _DeltaType, request: Any) -> None:
        nonce: str = request.response_nonce
        if not nonce:
            return
        pending = state.pending
        version = None if pending is None else pending.get(nonce)
        if pending is None or version is None:
            self._event(StaleRequest(type_url, nonce, state.nonce))
            return
        for settled in list(pending):
            del pending[settled]
            if settled == nonce:
                break
        if not pending:
            state.pending = None
        if request.HasField("error_detail"):
            state.nacked_version = version
            self._event(
                Nack(
                    type_url,
                    rejected_version=version,
                    kept_version=state.acked_version,
                    nonce=nonce,
                    message=request.error_detail.message,
                )
            )
        else:
            state.acked_version = version
            self._event(Ack(type_url, version, nonce))

    def _subscribe(self, type_url: str, state: _DeltaType, request: Any, first: bool) -> None:
        subscribe = list(request.resource_names_subscribe)
        unsubscribe = list(request.resource_names_unsubscribe)
        known = request.initial_resource_versions if first else {}
        self._check_names(type_url, len(known))
        if first and not subscribe and not unsubscribe and type_url in LEGACY_WILDCARD_TYPES:
            state.wildcard = True
        if not subscribe and not unsubscribe and not known:
            if first:
                state.reply = state.wildcard
            return
        names = set(state.names)
        sent = dict(state.sent)
        answer = set(state.answer)
        for name in subscribe:
            if name == WILDCARD:
                state.wildcard = True
                continue
            names.add(name)
            if not first:
                answer.add(name)
        for name in unsubscribe:
            if name == WILDCARD:
                state.wildcard = False
            elif name in names:
                names.discard(name)
                if name in state.absent:
                    state.absent = state.absent - {name}
                if state.wildcard:
                    answer.add(name)
                else:
                    answer.discard(name)
                    sent.pop(name, None)
        self._check_names(type_url, len(names))
        state.names = intern_names(frozenset(names))
        if not state.wildcard:
            sent = {n: v for n, v in sent.items() if n in names}
            answer &= names
        state.answer = _frozen(answer)
        if first:
            sent.update((n, v) for n, v in known.items() if state.wants(n))
            state.reply = state.wildcard and not known
        state.sent = sent

    def withdraw(self, response: Any) -> None:
        """``response`` was not sent: every name it carried or removed is answered in
        the type's next response (see :meth:`StreamCore.withdraw`)."""
        state = self._types.get(response.type_url)
        if state is None:
            return
        if state.pending is not None:
            state.pending.pop(response.nonce, None)
            if not state.pending:
                state.pending = None
        names = {r.name for r in response.sent}
        state.answer = state.answer.union(names, response.removed_names)
        if response.type_url == ENDPOINT:
            self._warming = self._warming | names

    def _respond(
        self, snapshot: Snapshot, asked: set[str], previous: Snapshot | None = None
    ) -> list[Any]:
        return [self._response(snapshot, d) for d in self._deltas(snapshot, asked, previous)]

    def _deltas(
        self, snapshot: Snapshot, asked: set[str], previous: Snapshot | None
    ) -> list[_Delta]:
        """What to send, in order; updates what the stream holds accordingly."""
        upserts: list[_Delta] = []
        removals: list[_Delta] = []
        warming = set(self._warming)
        for type_url in sorted(self._types, key=push_rank):
            forced = warming if type_url == ENDPOINT else _NONE
            if type_url not in asked and not forced:
                continue
            if type_url not in snapshot.versions:
                continue
            state = self._types[type_url]
            changes = (
                changes_between(previous, snapshot, type_url)
                if previous is not None and type_url in previous.versions
                else None
            )
            resources, removed = self._plan(snapshot, type_url, state, forced, changes)
            version = snapshot.version(type_url)
            if resources or (state.reply and not removed):
                upserts.append(_Delta(type_url, version, resources, []))
            if removed:
                removals.append(_Delta(type_url, version, [], removed))
            state.reply = False
            if type_url == CLUSTER:
                warming.update(
                    name for r in resources for url, name in r.references if url == ENDPOINT
                )
            elif type_url == ENDPOINT:
                warming -= {r.name for r in resources}
        endpoints = snapshot.resources(ENDPOINT)
        self._warming = _frozen(name for name in warming if name in endpoints)
        removals.sort(key=lambda d: remove_rank(d.type_url))
        return _merge_adjacent([*upserts, *removals])

    def _plan(
        self,
        snapshot: Snapshot,
        type_url: str,
        state: _DeltaType,
        forced: AbstractSet[str],
        changes: tuple[frozenset[str], frozenset[str]] | None = None,
    ) -> tuple[list[Resource], list[str]]:
        """What to send for one type. With ``changes`` (what differs from the snapshot
        this stream last settled on) only those names, the forced ones and the ones
        owed an answer are looked at: everything else is already as the client has it."""
        available = snapshot.resources(type_url)
        if changes is None:
            candidates: Iterable[str] = available
            gone = {n for n in state.sent if n not in available}
            unreported = {n for n in state.names - state.absent if n not in available}
        else:
            changed, dropped = changes
            candidates = changed | forced | state.answer
            gone = {n for n in dropped if n in state.sent}
            unreported = {n for n in dropped if n in state.names and n not in state.absent}
        resources = [
            available[name]
            for name in sorted(candidates)
            if name in available
            and state.wants(name)
            and (
                name in state.answer
                or name in forced
                or state.sent.get(name) != available[name].hash
            )
        ]
        unanswered = {n for n in state.answer if n not in available}
        removed = gone | unreported | unanswered
        state.sent = select(snapshot, type_url, intern_key(state.wildcard, state.names)).hashes
        if removed or state.absent:
            # Interned like the names: every stream of a class subscribed to a name that
            # is gone reports the same ones, and would otherwise hold a set of its own.
            state.absent = intern_names(_frozen((state.absent | removed) & state.names))
        state.answer = _NONE
        return resources, sorted(removed)

    def _response(self, snapshot: Snapshot, delta: _Delta) -> EncodedResponse:
        nonce = self._next_nonce()
        state = self._types[delta.type_url]
        state.version = delta.version
        state.nonce = nonce
        pending = state.pending
        if pending is None:
            pending = state.pending = {}
        pending[nonce] = delta.version
        while len(pending) > PENDING_LIMIT:
            del pending[next(iter(pending))]
        return delta_response(
            snapshot.selections,
            delta.type_url,
            delta.version,
            delta.resources,
            delta.removed,
            nonce,
        )


def _merge_adjacent(deltas: Iterable[_Delta]) -> list[_Delta]:
    merged: list[_Delta] = []
    for delta in deltas:
        if merged and merged[-1].type_url == delta.type_url:
            last = merged[-1]
            merged[-1] = _Delta(
                last.type_url,
                delta.version,
                [*last.resources, *delta.resources],
                sorted({*last.removed, *delta.removed}),
            )
        else:
            merged.append(delta)
    return merged
