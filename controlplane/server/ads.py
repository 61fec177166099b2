"""gRPC servicers that drive :class:`SotwStream` and :class:`DeltaStream` cores over grpc.aio.

One servicer object serves both protocol variants: ``StreamAggregatedResources``
and the single-type ``Stream*`` methods run a state-of-the-world core,
``DeltaAggregatedResources`` and the single-type ``Delta*`` methods an
incremental one. Both cores have the same sans-IO surface (``shrink``,
``on_wire``, ``on_snapshot``, ``pop_events``), so everything below is shared;
the ``protocol`` field of every stream log event (``"sotw"`` or ``"delta"``)
tells them apart. The methods are registered with gRPC as bytes in, bytes out:
a core decodes its requests itself (a SotW ACK that repeats thousands of names
is recognized from its bytes) and returns responses already encoded (bodies
shared by every stream of a class).

Each stream has a reader that moves requests from gRPC into a small inbox,
shrunk by the core as they arrive (when the inbox is full the reader stops
reading, so gRPC flow control pushes back on the client), driven by callbacks
rather than run as a task (:class:`_Reader`), and the handler coroutine, which
sleeps on one wake-up event and, when woken, feeds the inbox to the core, then
the newest snapshot if one was published, and writes whatever the core returns.

Pushes come first. A publication starts a *push wave*: every stream it wakes
counts until it has written what the new snapshot makes necessary. While a
wave is under way, a stream that has already pushed leaves its requests (the
ACKs of that very push, mostly) in its inbox; the end of the wave wakes it
again. Thousands of ACKs thus wait until every client has its update instead
of delaying the later pushes. (The reader puts such a stream on the wave's
list itself, rather than waking the handler only to have it wait.) The
cyclic garbage collector is paused for the length of a wave (see
:mod:`controlplane.collector`). A stream whose client does not read cannot hold
requests back for long: a wave ends after :data:`MAX_PUSH_PRIORITY` seconds
whatever is left, and a stream's own push is never held back.

A wave wakes the streams whose clients send light ACKs first (delta clients,
SotW clients following few names) and those whose every ACK repeats a long
name list last, so that the heavy ACKs overlap as few pushes as possible.
Among streams of equal weight, those that share a connection (HTTP/2
multiplexes streams: a client process holding several, or a proxy in front of
the control plane) push one after another. gRPC writes each message to the
socket as it is sent; back to back, they reach the peer together, which then
reads them, and sends their ACKs, in one go rather than once per stream.

Snapshot changes are "latest wins". A publication only marks the streams of
that class dirty and sets their event; the stream then reads the current
snapshot from the cache. However many publications happen while a stream is
busy writing to a slow or stuck client, the stream holds one flag and
processes one snapshot, and it never blocks the publisher or other streams.
Reading the snapshot from the cache rather than passing it along means a
stream can never go back to an older one.

The stream takes its class and first snapshot from the cache and registers for
wake-ups under that class in one step on the event loop, so no publication can
fall between the two. A stream holds its class until it closes; the last one
to close leaves the class idle, and a timer has the cache drop it once its
grace is over (see :mod:`controlplane.xds.cache`). A stream whose node would
need a new class beyond the cache's limit ends with ``RESOURCE_EXHAUSTED``.

:meth:`AggregatedDiscoveryService.close` asks every stream to finish the
responses it is writing and end with ``UNAVAILABLE``, which makes clients
reconnect elsewhere; the gRPC server's grace period bounds how long that takes.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import structlog
from envoy.config.core.v3 import base_pb2

from controlplane import collector
from controlplane.errors import InconsistentSnapshotError, ProtocolError
from controlplane.server import memory
from controlplane.server.admission import Admission, Refusals, StreamLimits, peer_host
from controlplane.server.events import EventHub
from controlplane.server.stats import XdsStats
from controlplane.server.untrusted import EndedRun, RepeatedNacks, clip
from controlplane.xds import encoding
from controlplane.xds.cache import ProxyClassLimitError, SnapshotCache
from controlplane.xds.delta import DeltaStream
from controlplane.xds.encoding import EncodedResponse
from controlplane.xds.repeated_names import ShrunkRequest
from controlplane.xds.snapshot import Snapshot
from controlplane.xds.sotw import SotwStream
from controlplane.xds.stream import Ack, Nack, StaleRequest, TooManyNames
from controlplane.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, short_name

log = structlog.get_logger(__name__)

INBOX_LIMIT = 16
LARGE_RESPONSE = 1024 * 1024
"""Bytes beyond which a response's buffers are worth returning to the system soon."""
MAX_PUSH_PRIORITY = 5.0
"""Seconds a push wave may hold back the handling of requests (see the module docstring)."""

SOTW = "sotw"
DELTA = "delta"


class _Flag:
    """A flag one coroutine waits on: :class:`asyncio.Event` for a single waiter.

    Each stream has two, and an ``Event`` costs about 0.9 KiB (its dict and a
    deque of waiters); this one holds a future only while its waiter waits.
    """

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            waiter, self._waiter = self._waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if not self._set:
            await self.waiter()

    def waiter(self) -> asyncio.Future[None]:
        """A future :meth:`set` completes; await it only while the flag is clear.

        What :meth:`wait` awaits, for a loop that awaits it directly: a stream
        spends its life waiting here, and a coroutine object per waiting stream
        (``wait``'s) is 0.2 KiB more than the future alone.
        """
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        return waiter


_READS = contextvars.Context()
"""The context the readers' steps run in (see :class:`_Reader`)."""


class _Reader:
    """Moves one stream's requests from gRPC into its inbox, driven by callbacks.

    What a task running a read loop would do, without the task: a stream spends
    its life waiting for its client's next request, and a task (with its context
    and its entry in asyncio's task registry) and a coroutine frame come to
    0.7 KiB per stream. The reader steps gRPC's ``context.read()`` coroutine
    itself, resuming it when the future it awaits completes, as a task would.
    Before each read it waits, if need be, for the end of a push wave and for
    room in the inbox (see the module docstring); a request is shrunk by the
    core as it arrives. ``context.read()`` rather than gRPC's request iterator:
    that async generator keeps the last message referenced while it waits for
    the next one, and a SotW ACK can be 150 KB.
    """

    __slots__ = ("_context", "_read", "_stream")

    def __init__(self, stream: _Stream, context: Any) -> None:
        self._stream: _Stream | None = stream
        self._context = context
        self._read: Any = None
        """The ``context.read()`` coroutine under way."""

    def next(self, _: object = None) -> None:
        """Read the next request, or wait until that is due."""
        stream = self._stream
        if stream is None:
            return
        service = stream.service
        if service.pushing and not stream.in_wave:
            # Whatever the client sends now waits for the end of the wave anyway;
            # reading it can too (one gRPC operation less per stream in the wave,
            # and gRPC flow control holds the client meanwhile).
            service.wave_end().add_done_callback(self.next)
            return
        if len(stream.inbox) >= INBOX_LIMIT:
            stream.room.clear()
            stream.room.waiter().add_done_callback(self.next)
            return
        self._read = self._context.read()
        self._step()

    def _step(self, _: object = None) -> None:
        stream = self._stream
        if stream is None:
            return
        try:
            awaited = self._read.send(None)
        except StopIteration as done:
            wire = done.value
        except asyncio.CancelledError:
            self._finish(stream)
            return
        except Exception as exc:
            stream.log.info("xds_stream_read_failed", error=clip(str(exc)))
            self._finish(stream)
            return
        else:
            # In one context for every reader, as a task would run it in its own: a
            # callback otherwise holds a copy of the current one while it waits.
            if awaited is None:  # a bare yield: resume on the next loop iteration
                asyncio.get_running_loop().call_soon(self._step, context=_READS)
            else:
                awaited.add_done_callback(self._step, context=_READS)
            return
        # Out of the except clause: a read started while an exception is being
        # handled would keep it, and with it this request, as its context.
        self._read = None
        self._received(stream, wire)

    def _received(self, stream: _Stream, wire: Any) -> None:
        if wire is grpc.aio.EOF:
            self._finish(stream)
            return
        # A SotW ACK repeating thousands of names waits as a few bytes.
        try:
            stream.inbox.append(stream.core.shrink(wire))
        except Exception as exc:
            stream.log.info("xds_stream_read_failed", error=clip(str(exc)))
            self._finish(stream)
            return
        service = stream.service
        if service.pushing and not stream.in_wave:
            # The end of the wave wakes the handler; waking it now would only
            # have it put the request off (10,000 times per wave).
            service.defer(stream)
        else:
            stream.wakeup.set()
        self.next()

    def _finish(self, stream: _Stream) -> None:
        self._stream = None
        stream.eof = True
        stream.wakeup.set()

    def close(self) -> None:
        """Stop reading (the stream has ended); a read under way is abandoned."""
        self._stream = None
        read, self._read = self._read, None
        if read is not None:
            read.close()


class _Stream:
    """One client stream: its core, inbox and wake-up flags. Loop-confined.

    Slotted and lean: a server holds one per connected proxy, ten thousand and more.
    """

    __slots__ = (
        "__weakref__",
        "closing",
        "connected_at",
        "connection",
        "converged",
        "core",
        "dirty",
        "eof",
        "in_wave",
        "inbox",
        "key",
        "last_nacks",
        "nacks",
        "protocol",
        "room",
        "service",
        "stream_id",
        "type_url",
        "wakeup",
        "wave",
    )

    def __init__(
        self,
        service: AggregatedDiscoveryService,
        stream_id: int,
        type_url: str | None,
        protocol: str = SOTW,
        connection: str = "",
    ) -> None:
        self.service = service
        self.stream_id = stream_id
        self.protocol = protocol
        self.type_url = type_url
        """The single-type service's type, or None for ADS."""
        self.connection = connection
        """The client's address as gRPC reports it: one per connection."""
        self.core: SotwStream | DeltaStream = (
            DeltaStream(self._lookup, type_url=type_url)
            if protocol == DELTA
            else SotwStream(self._lookup, type_url=type_url)
        )
        self.key: str | None = None
        # A list, not a deque: it holds at most INBOX_LIMIT requests, and an empty
        # deque costs 0.7 KiB (one block of 64 slots).
        self.inbox: list[bytes | ShrunkRequest] = []
        self.room = _Flag()
        self.wakeup = _Flag()
        self.dirty = False
        self.in_wave = False
        """Counted among the streams a push wave (number ``wave``) waits for."""
        self.wave = 0
        self.eof = False
        self.closing = False
        self.nacks: RepeatedNacks | None = None
        """Created by the stream's first NACK (see :mod:`~controlplane.server.untrusted`)."""
        self.connected_at = time.time()
        self.last_nacks: dict[str, tuple[str, str, float]] | None = None
        """Per type, the last NACK's rejected version, message (clipped: the client's to
        choose) and time (Unix), for the admin services."""
        self.converged: dict[str, str] | None = None
        """Per type, the version whose ACK last counted towards convergence time."""

    @property
    def log(self) -> Any:
        """A logger bound to this stream's context, made when a line is logged.

        Not kept: a bound logger and its context cost 0.6 KiB, and most streams
        log only when they connect and close. The node's fields and the class key
        join the context once the stream has its class.
        """
        if self.key is None:
            return log.bind(
                stream=self.stream_id,
                peer=self.connection,
                service=short_name(self.type_url or "ADS"),
                protocol=self.protocol,
            )
        node = self.core.node
        return log.bind(
            stream=self.stream_id,
            peer=self.connection,
            service=short_name(self.type_url or "ADS"),
            protocol=self.protocol,
            node_id=clip(node.id) if node is not None else "",
            node_cluster=clip(node.cluster) if node is not None else "",
            key=self.key,
        )

    def wake(self, *, dirty: bool = False, closing: bool = False) -> None:
        if dirty:
            self.dirty = True
            if not self.in_wave:
                self.in_wave = True
                self.wave = self.service.push_started()
        self.closing = self.closing or closing
        self.wakeup.set()

    def _pushed(self, *, final: bool = False) -> None:
        if self.in_wave and (final or not self.dirty or self.closing):
            self.in_wave = False
            self.service.push_done(self.wave)

    def _lookup(self, node: base_pb2.Node) -> Snapshot:
        self.key, snapshot = self.service.cache.acquire(node)
        self.service.register(self.key, self)
        self.log.info("xds_stream_connected", config_version=self.service.cache.config_version)
        if self.service.events.active:
            self._event("connect", "", "")
        return snapshot

    def start_reading(self, context: Any) -> _Reader:
        """Start moving the client's requests into the inbox (see :class:`_Reader`)."""
        reader = _Reader(self, context)
        reader.next()
        return reader

    async def _write(self, context: Any, responses: Iterable[EncodedResponse]) -> None:
        limit = self.service.limits.max_send_bytes
        for response in responses:
            data = response.SerializeToString()
            if len(data) > limit:
                self._withhold(response, len(data))
                continue
            await context.write(data)
            pushes = self.service.stats.pushes
            pushes[response.type_url] = pushes.get(response.type_url, 0) + 1
            if self.service.events.active:
                self._event("push", response.type_url, response.version)
            if len(data) > LARGE_RESPONSE:
                self.service.housekeeper.soon()
            if self.service.debug:
                self.log.debug(
                    "xds_response_sent",
                    type=short_name(response.type_url),
                    version=response.version,
                    nonce=response.nonce,
                    resources=response.count,
                    removed=response.removed,
                )

    def _withhold(self, response: EncodedResponse, size: int) -> None:
        """Do not send ``response`` (gRPC would fail the stream): the client keeps what
        it has, and the core sends the type in full once it fits again."""
        self.core.withdraw(response)
        self.service.withheld(self, response, size)

    def _log_events(self) -> None:
        for event in self.core.pop_events():
            if isinstance(event, Ack):
                self._count_ack(event)
                if self.nacks is not None:
                    self._log_repeats(self.nacks.ack(event.type_url))
                if self.service.events.active:
                    self._event("ack", event.type_url, event.version)
                # Debug: one line per stream per push is 10,000 lines per edit at scale.
                if self.service.debug:
                    self.log.debug(
                        "xds_ack",
                        type=short_name(event.type_url),
                        version=event.version,
                        nonce=event.nonce,
                    )
            elif isinstance(event, Nack):
                self._log_nack(event)
            elif isinstance(event, StaleRequest) and self.service.debug:
                self.log.debug(
                    "xds_stale_request",
                    type=short_name(event.type_url),
                    nonce=clip(event.nonce),
                    expected_nonce=event.expected_nonce,
                )

    def _count_ack(self, event: Ack) -> None:
        stats = self.service.stats
        stats.acks[event.type_url] = stats.acks.get(event.type_url, 0) + 1
        # Convergence: from the publication of the stream's current snapshot to the
        # first ACK of its version of this type, for snapshots published while connected.
        published = self.service.published_at.get(self.key or "", 0.0)
        snapshot = self.core.snapshot
        if (
            published > self.connected_at
            and snapshot is not None
            and snapshot.versions.get(event.type_url) == event.version
        ):
            if self.converged is None:
                self.converged = {}
            if self.converged.get(event.type_url) != event.version:
                self.converged[event.type_url] = event.version
                stats.converged(event.type_url, max(0.0, time.time() - published))

    def _event(self, kind: str, type_url: str, version: str, message: str = "") -> None:
        # Per push and ACK while someone watches: the id alone, not the decoded node.
        node_id = self.core.node_id
        self.service.events.publish(
            kind,
            node_id=clip(node_id) if node_id is not None else "",
            stream_id=self.stream_id,
            type_url=type_url,
            version=version,
            message=message,
        )

    def _log_nack(self, event: Nack) -> None:
        nacks = self.service.stats.nacks
        nacks[event.type_url] = nacks.get(event.type_url, 0) + 1
        if self.last_nacks is None:
            self.last_nacks = {}
        message = clip(event.message)
        self.last_nacks[event.type_url] = (event.rejected_version, message, time.time())
        if self.service.events.active:
            self._event("nack", event.type_url, event.rejected_version, message)
        if self.nacks is None:
            self.nacks = RepeatedNacks()
        new, ended = self.nacks.nack(event.type_url, event.rejected_version, event.message)
        self._log_repeats(ended)
        if new:
            self.log.warning(
                "xds_nack",
                config_version=self.service.cache.config_version,
                type=short_name(event.type_url),
                rejected_version=event.rejected_version,
                kept_version=clip(event.kept_version),
                nonce=event.nonce,
                error_detail=clip(event.message),
            )

    def _log_repeats(self, ended: EndedRun | None) -> None:
        if ended is not None:
            self.log.warning(
                "xds_nack_repeated",
                type=short_name(ended.type_url),
                rejected_version=ended.rejected_version,
                repeated=ended.repeated,
            )

    def log_unreported_nacks(self) -> None:
        if self.nacks is not None:
            for ended in self.nacks.close():
                self._log_repeats(ended)


class AggregatedDiscoveryService:
    """ADS in both variants (and, via :func:`add_xds_services`, the single-type services)."""

    def __init__(
        self,
        cache: SnapshotCache,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: StreamLimits | None = None,
    ):
        self.cache = cache
        self.limits = limits or StreamLimits()
        self.admission = Admission(self.limits)
        self._near_limit = self.limits.max_streams * 9 // 10 or -1
        self._refusals = Refusals()
        self._withheld: set[tuple[str | None, str, str]] = set()
        self._loop = loop or asyncio.get_running_loop()
        self._streams: dict[str, set[_Stream]] = {}
        self._all: set[_Stream] = set()
        self._ids = itertools.count(1)
        self._closing = False
        self._waiting_pushes = 0
        self._pushing = False
        self._wave_deadline: asyncio.TimerHandle | None = None
        self._wave = 0
        self._wave_pushes = 0
        self._wave_started = 0.0
        self._deferred: set[_Stream] = set()
        self._wave_end: asyncio.Future[None] | None = None
        self._prune_at: float | None = None
        self._prune_timer: asyncio.TimerHandle | None = None
        # Soon after a wave rather than at any later moment: the next edit is least
        # likely then, and an edit that arrives during housekeeping waits for it. A
        # second, not less: the ACKs of the wave's last pushes arrive after it ends,
        # and the buffers they leave should be among those handed back.
        self.housekeeper = memory.Housekeeper(self._loop, delay=1.0, busy=lambda: self.pushing)
        self.housekeeper.also_release(encoding.release_bodies)
        # The first model was built before the server: what its load left behind
        # (parser buffers, the translation check's messages) goes back now, and the
        # model is frozen, rather than at the first push wave.
        self.housekeeper.soon()
        self.events = EventHub(self._loop)
        self.stats = XdsStats()
        self.published_at: dict[str, float] = {}
        """Per proxy class, when (Unix time) its latest snapshot was published."""
        self.debug = log.is_enabled_for(logging.DEBUG)
        """Debug lines are logged (a stream builds its bound logger only for a line
        that is)."""
        self._remove_listener = cache.add_listener(self._on_publish)

    @property
    def pushing(self) -> bool:
        """A push wave is under way: some streams still owe their client a new snapshot."""
        return self._pushing

    def push_started(self) -> int:
        """Count one more stream in the current wave (starting one); returns the wave."""
        if not self._pushing:
            self._pushing = True
            self._wave += 1
            self._waiting_pushes = 0
            self._wave_pushes = 0
            self._wave_started = self._loop.time()
            collector.hold()
            self._wave_deadline = self._loop.call_later(MAX_PUSH_PRIORITY, self._end_wave)
        self._waiting_pushes += 1
        return self._wave

    def push_done(self, wave: int) -> None:
        if wave != self._wave or not self._pushing:
            return  # a wave already ended by its deadline: this stream no longer counts
        self._waiting_pushes -= 1
        self._wave_pushes += 1
        if self._waiting_pushes <= 0:
            self._end_wave()

    def wave_end(self) -> asyncio.Future[None]:
        """A future done when no push wave is under way (at once if none is)."""
        if self._wave_end is None:
            self._wave_end = self._loop.create_future()
        wave_end = self._wave_end
        if not self._pushing:
            self._wave_end = None
            wave_end.set_result(None)
        return wave_end

    def defer(self, stream: _Stream) -> None:
        self._deferred.add(stream)

    def deferred(self, stream: _Stream) -> bool:
        return stream in self._deferred

    def _end_wave(self) -> None:
        self._pushing = False
        collector.release()
        if self._wave_deadline is not None:
            self._wave_deadline.cancel()
            self._wave_deadline = None
        deferred, self._deferred = self._deferred, set()
        for stream in deferred:
            stream.wakeup.set()
        wave_end, self._wave_end = self._wave_end, None
        if wave_end is not None and not wave_end.done():
            wave_end.set_result(None)
        log.info(
            "xds_push_wave_done",
            streams=self._wave_pushes,
            seconds=round(self._loop.time() - self._wave_started, 3),
            unfinished=self._waiting_pushes,
        )
        self.housekeeper.after_burst()

    @property
    def stream_count(self) -> int:
        return len(self._all)

    def streams(self) -> list[_Stream]:
        """The live streams, oldest first (for the admin services; not for the push path)."""
        return sorted(self._all, key=lambda stream: stream.stream_id)

    def register(self, key: str, stream: _Stream) -> None:
        self._streams.setdefault(key, set()).add(stream)

    def close(self) -> None:
        """Ask every stream to finish its current writes and end; refuse new ones."""
        self._closing = True
        if self._pushing:
            self._end_wave()
        self.housekeeper.cancel()
        if self._prune_timer is not None:
            self._prune_timer.cancel()
        self._remove_listener()
        self.events.close()
        for stream in self._all:
            stream.wake(closing=True)

    async def serve_stream(
        self,
        context: Any,
        type_url: str | None,
        protocol: str = SOTW,
    ) -> None:
        """Run one stream of ``protocol`` (:data:`SOTW` or :data:`DELTA`); ``type_url``
        is ``None`` for ADS."""
        await self.serve_call(None, context, type_url=type_url, protocol=protocol)

    async def serve_call(
        self,
        requests: AsyncIterator[bytes] | None,
        context: Any,
        *,
        type_url: str | None,
        protocol: str,
    ) -> None:
        """:meth:`serve_stream` with the arguments of a gRPC stream handler (which
        registers it directly, without a coroutine in between); ``requests`` is
        unused: the stream reads through ``context``."""
        stream = _Stream(self, next(self._ids), type_url, protocol, context.peer())
        if self._closing:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "control plane shutting down")
        refused = self._admit(stream)
        if refused is not None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
        stream.core.max_names = self.limits.max_resource_names
        self._all.add(stream)
        reader = stream.start_reading(context)
        reason = "client closed the stream"
        wakeup = stream.wakeup
        inbox = stream.inbox
        try:
            # The stream's loop runs here rather than in a coroutine of its own:
            # a coroutine frame less per stream (0.3 KiB).
            try:
                while not stream.closing:
                    if not wakeup.is_set():
                        await wakeup.waiter()
                    wakeup.clear()
                    if inbox and self._pushing and not stream.in_wave:
                        # Requests wait while other streams still owe their clients a
                        # push; the end of the wave wakes this stream again.
                        self.defer(stream)
                    while inbox and not stream.closing and not self.deferred(stream):
                        data = inbox.pop(0)
                        stream.room.set()
                        responses = stream.core.on_wire(data)
                        del data
                        stream._log_events()
                        await stream._write(context, responses)
                    if stream.dirty and stream.key is not None and not stream.closing:
                        stream.dirty = False
                        snapshot = self.cache.get(stream.key)
                        if snapshot is not None:
                            await stream._write(context, stream.core.on_snapshot(snapshot))
                        stream._pushed()
                    if stream.eof and not inbox:
                        break
            finally:
                stream._pushed(final=True)
            if stream.closing:
                reason = "server shutting down"
                context.set_code(grpc.StatusCode.UNAVAILABLE)
                context.set_details("control plane shutting down")
        except TooManyNames as exc:
            reason = str(exc)
            self._refuse_names(stream, exc)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except ProtocolError as exc:
            reason = clip(str(exc))
            stream.log.warning("xds_protocol_error", culprit=exc.culprit, error=reason)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, reason)
        except InconsistentSnapshotError as exc:
            reason = str(exc)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no consistent configuration yet")
        except ProxyClassLimitError as exc:
            reason = str(exc)
            times = self._refusals.refused("max_proxy_classes", peer_host(stream.connection))
            if times:
                _log_refused(stream, exc, times)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many proxy classes")
        except asyncio.CancelledError:
            reason = "cancelled"
            raise
        except Exception as exc:
            reason = clip(f"internal error: {exc}")
            stream.log.exception("xds_stream_failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal control plane error")
        finally:
            reader.close()
            self._all.discard(stream)
            self.admission.release(stream.connection)
            stream.log_unreported_nacks()
            if stream.key is not None:
                peers = self._streams.get(stream.key)
                if peers is not None:
                    peers.discard(stream)
                    if not peers:
                        del self._streams[stream.key]
                self._release(stream.key)
            stream.log.info("xds_stream_closed", reason=reason)
            if self.events.active:
                stream._event("disconnect", "", "", reason)

    def _release(self, key: str) -> None:
        if self.cache.release(key):
            self._prune_later(self.cache.grace)

    def _prune_later(self, delay: float) -> None:
        if self._closing:
            return
        when = self._loop.time() + delay
        if self._prune_at is not None and self._prune_at <= when:
            return
        if self._prune_timer is not None:
            self._prune_timer.cancel()
        self._prune_at = when
        self._prune_timer = self._loop.call_at(when, self._prune)

    def _prune(self) -> None:
        self._prune_at = self._prune_timer = None
        # Never waits for an update in progress: the update prunes too, and this retries.
        delay = self.cache.prune(blocking=False)
        if delay is not None:
            self._prune_later(delay)

    def _admit(self, stream: _Stream) -> str | None:
        """``None`` if ``stream`` may be served (it is then counted), else why not."""
        limit = self.admission.admit(stream.connection)
        if limit is None:
            if self.admission.streams == self._near_limit and self._refusals.refused("near", ""):
                # gRPC sheds calls beyond its queue, sized from max_streams, unseen
                # by the server: this is the last warning it can give.
                stream.log.warning(
                    "xds_streams_near_limit",
                    streams=self.admission.streams,
                    limit=self.limits.max_streams,
                )
            return None
        host = peer_host(stream.connection)
        if limit == "max_streams":
            value = self.limits.max_streams
            message = f"the control plane holds its limit of {value} streams"
        else:
            value = self.limits.max_connections_per_peer
            message = f"{host} holds its limit of {value} connections"
        refused = self._refusals.refused(limit, host)
        if refused:
            stream.log.warning(
                "xds_stream_refused", limit=limit, value=value, refused=refused, error=message
            )
        return message

    def _refuse_names(self, stream: _Stream, exc: TooManyNames) -> None:
        refused = self._refusals.refused("max_resource_names", peer_host(stream.connection))
        if refused:
            stream.log.warning(
                "xds_request_refused",
                limit="max_resource_names",
                value=exc.limit,
                type=short_name(exc.type_url),
                names=exc.count,
                refused=refused,
            )

    def withheld(self, stream: _Stream, response: EncodedResponse, size: int) -> None:
        """Log, once per class, type and version, a response too large to send."""
        key = (stream.key, response.type_url, response.version)
        if key in self._withheld:
            return
        if len(self._withheld) > 1_000:
            self._withheld.clear()
        self._withheld.add(key)
        stream.log.error(
            "xds_response_too_large",
            type=short_name(response.type_url),
            version=response.version,
            bytes=size,
            limit=self.limits.max_send_bytes,
            resources=response.count,
            error="not sent: the proxy keeps its previous configuration of this type",
        )

    def _on_publish(self, key: str, snapshot: Snapshot) -> None:
        if len(self.published_at) > 10_000:
            self.published_at.clear()  # classes come and go; this is only a hint for STALE
        self.published_at[key] = time.time()
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake, key)

    def _wake(self, key: str) -> None:
        # Streams push in the order they are woken (see the module docstring).
        for stream in sorted(self._streams.get(key, ()), key=_push_order):
            stream.wake(dirty=True)


def _log_refused(stream: _Stream, exc: ProxyClassLimitError, refused: int) -> None:
    node = stream.core.node
    labels = 0
    if node is not None and "labels" in node.metadata.fields:
        labels = len(node.metadata.fields["labels"].struct_value.fields)
    stream.log.warning(
        "proxy_class_refused",
        node_id=clip(node.id) if node is not None else None,
        labels=labels,
        limit=exc.limit,
        refused=refused,
    )


def _push_order(stream: _Stream) -> tuple[int, str]:
    # Light ACKs first: a SotW client repeats its whole name list in every ACK
    # (150 KB for 3,000 clusters), and those ACKs compete with the pushes still to
    # come. Then by connection, so that the streams of one connection are adjacent.
    return stream.core.ack_weight, stream.connection


_SINGLE_TYPE_SERVICES = {
    LISTENER: ("envoy.service.listener.v3.ListenerDiscoveryService", "Listeners"),
    CLUSTER: ("envoy.service.cluster.v3.ClusterDiscoveryService", "Clusters"),
    ROUTE: ("envoy.service.route.v3.RouteDiscoveryService", "Routes"),
    ENDPOINT: ("envoy.service.endpoint.v3.EndpointDiscoveryService", "Endpoints"),
}
ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


def _method(ads: AggregatedDiscoveryService, type_url: str | None, protocol: str) -> Any:
    behaviour = functools.partial(ads.serve_call, type_url=type_url, protocol=protocol)
    # Bytes in and out: a stream decodes its requests itself (so it can compare an
    # ACK's bytes with the last one) and encodes its responses.
    return grpc.stream_stream_rpc_method_handler(behaviour)


def add_xds_services(server: Any, ads: AggregatedDiscoveryService) -> None:
    """Register ADS and the four single-type services, SotW and delta, all served by ``ads``.

    The method names are those of Envoy's ``discovery/v3``, ``listener/v3``,
    ``cluster/v3``, ``route/v3`` and ``endpoint/v3`` services; the unary
    ``Fetch*`` methods are not served (``UNIMPLEMENTED``).
    """
    handlers = [
        grpc.method_handlers_generic_handler(
            ADS_SERVICE,
            {
                "StreamAggregatedResources": _method(ads, None, SOTW),
                "DeltaAggregatedResources": _method(ads, None, DELTA),
            },
        )
    ]
    for type_url, (service, noun) in _SINGLE_TYPE_SERVICES.items():
        methods = {
            f"Stream{noun}": _method(ads, type_url, SOTW),
            f"Delta{noun}": _method(ads, type_url, DELTA),
        }
        handlers.append(grpc.method_handlers_generic_handler(service, methods))
    server.add_generic_rpc_handlers(tuple(handlers))


add_sotw_services = add_xds_services
"""The former name of :func:`add_xds_services` (which now registers delta too)."""
