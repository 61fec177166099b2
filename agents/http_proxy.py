"""The HTTP/1.1 reverse proxy of a listener: callback protocols, one exchange per request.

A :class:`ClientConnection` is the asyncio protocol of one downstream
connection. Its :class:`agents.http1.RequestReader` turns bytes into request
heads, body pieces and ends; each head starts an :class:`Exchange`, a plain
object (no task) that carries the route's action out: it takes the table that
is current at that moment and keeps it to the end, routes, then either
answers locally (direct response, redirect, fault abort, error) or picks a
cluster by cumulative weight and an endpoint from the cluster's balancer,
takes a connection from the :class:`agents.upstream_pool.UpstreamPool` and
streams the request up and the response down.

Streaming and backpressure: body pieces are written as they arrive; when a
transport's write buffer passes its high-water mark (``pause_writing``), the
other side's reading is paused until it drains, so a slow reader slows the
writer and nothing holds a whole body. Before the upstream connection is
ready, at most ``buffer_limit`` bytes wait; a copy of the request body is
kept up to ``retry_buffer`` bytes so that a retry can replay it, beyond
which the request is no longer retried.

Pipelined requests are taken one at a time: while an exchange is in flight,
later requests' events wait in order in a queue and reading pauses.

Timers are ``call_later`` handles that re-arm themselves from a last-activity
time rather than being rescheduled on every piece of body. Errors the proxy
makes are answered with 502, 503 or 504 (400-class for bad requests),
``x-pilotfish-error: <reason>`` and a text body naming the cause, and
counted in :class:`Stats`.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from agents.actions import (
    Action,
    DirectResponse,
    Forward,
    HashPolicy,
    HeaderEdits,
    Mirror,
    Redirect,
    WeightedCluster,
)
from agents.endpoints import Endpoint
from agents.http1 import (
    DEFAULT_LIMITS,
    LAST_CHUNK,
    Headers,
    HttpError,
    Limits,
    RequestHead,
    RequestReader,
    chunk,
    error_response,
    normalize_path,
    reason_phrase,
    serialize_head,
    strip_hop_by_hop,
)
from agents.upstream_pool import ConnectAttempt, UpstreamConnection, UpstreamPool

# What the data plane needs from the forwarding table and the balancers.


class BalancerView(Protocol):
    def pick(self, hash_key: int | None = None) -> Endpoint | None: ...
    def started(self, ep: Endpoint) -> None: ...
    def finished(self, ep: Endpoint, seconds: float, status: int | None) -> None: ...


class ClusterView(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def endpoints(self) -> tuple[Endpoint, ...]: ...
    @property
    def balancer(self) -> BalancerView: ...
    @property
    def connect_timeout(self) -> float: ...


class TableView(Protocol):
    def route(
        self,
        listener_name: str,
        host: str,
        path: str,
        method: str,
        headers: Mapping[str, str],
        query: str,
    ) -> Action | None: ...

    def cluster(self, name: str) -> Any: ...


class TableSource(Protocol):
    @property
    def current(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class ProxySettings:
    limits: Limits = DEFAULT_LIMITS
    idle_timeout: float | None = 300.0
    """A downstream connection with no request in flight this long is closed."""
    retry_buffer: int = 64 * 1024
    """Request body bytes kept for replay; a longer body is not retried."""
    buffer_limit: int = 256 * 1024
    """Request body bytes held while the upstream connects before reading pauses."""
    merge_slashes: bool = False
    max_mirrors: int = 64
    scheme: str = "http"


DEFAULT_SETTINGS = ProxySettings()
LINGER_SECONDS = 1.0

IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

# Reasons a request that failed may be retried, as Envoy's retry_on names them.
CONNECT_FAILURE_CONDITIONS = frozenset({"5xx", "gateway-error", "connect-failure"})
RESET_CONDITIONS = frozenset({"5xx", "reset"})
TIMEOUT_CONDITIONS = frozenset({"5xx", "gateway-error"})


class Stats:
    """Counters the admin endpoint exports; plain Counters keep the hot path cheap."""

    __slots__ = ("errors", "requests", "responses", "retries", "upstream_connect_errors")

    def __init__(self) -> None:
        self.requests = 0
        self.responses: Counter[tuple[str, int]] = Counter()
        """(cluster or "", status)."""
        self.errors: Counter[str] = Counter()
        """x-pilotfish-error reasons."""
        self.retries: Counter[str] = Counter()
        self.upstream_connect_errors: Counter[str] = Counter()


class ProxyContext:
    """What every connection of one listener shares."""

    __slots__ = ("listener_name", "loop", "mirrors", "pool", "settings", "stats", "tables")

    def __init__(
        self,
        listener_name: str,
        tables: TableSource,
        pool: UpstreamPool,
        settings: ProxySettings = DEFAULT_SETTINGS,
        stats: Stats | None = None,
    ) -> None:
        self.listener_name = listener_name
        self.tables = tables
        self.pool = pool
        self.settings = settings
        self.stats = stats if stats is not None else Stats()
        self.loop = asyncio.get_running_loop()
        self.mirrors = 0


# Reasons for which client reading is paused (bits).
_P_QUEUE = 1
_P_UPSTREAM = 2
_P_BUFFER = 4
_P_UPGRADE = 8

_HEAD = object()
_END = object()


class ClientConnection(asyncio.Protocol):
    __slots__ = (
        "broken",
        "ctx",
        "current",
        "eof",
        "h2c_body",
        "h2c_left",
        "last_active",
        "lingering",
        "paused",
        "peer",
        "queue",
        "reader",
        "timer",
        "timer_at",
        "transport",
        "tunnel",
        "tunnel_buf",
        "upgrade_token",
        "writing_paused",
    )

    def __init__(self, ctx: ProxyContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport | None = None
        self.reader = RequestReader(self, ctx.settings.limits)
        self.current: Exchange | None = None
        self.queue: deque[tuple[object, Any]] = deque()
        self.paused = 0
        self.writing_paused = False
        self.peer = ""
        self.eof = False
        self.tunnel: UpstreamConnection | None = None
        self.tunnel_buf: bytearray | None = None
        self.upgrade_token: bytes | None = None
        self.h2c_body = 0
        self.h2c_left = 0
        self.broken = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.last_active = 0.0
        self.lingering = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop transports are not subclasses
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        idle = self.ctx.settings.idle_timeout
        self.last_active = self.ctx.loop.time()
        if idle is not None:
            self.arm(self.last_active + idle)

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.write(data)
            return
        if self.tunnel_buf is not None:
            self.tunnel_buf += data
            return
        if self.broken or self.lingering:
            return
        if self.h2c_left:
            # The body of a request that offered h2c: llhttp took it for tunnel bytes.
            part = data[: self.h2c_left]
            self.h2c_left -= len(part)
            self.on_request_body(part)
            if not self.h2c_left:
                self.on_request_end()
            data = data[len(part) :]
            if not data:
                return
        try:
            offset = self.reader.feed(data)
        except HttpError as e:
            self._refuse(e)
            return
        if offset is not None:
            self._upgraded(data[offset:])

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.tunnel is not None:
            self.tunnel.write_eof()
            return True
        if self.current is None and not self.queue:
            return None
        if not self.current or not self.current.request_done:
            # The request can never be completed: same as a disconnect.
            return None
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        current = self.current
        self.current = None
        if current is not None:
            current.client_gone()
        if self.tunnel is not None:
            self.tunnel.close()
            self.tunnel = None

    def pause_writing(self) -> None:
        self.writing_paused = True
        cur = self.current
        if cur is not None and cur.upstream is not None:
            cur.upstream.pause_reading()
        elif self.tunnel is not None:
            self.tunnel.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        cur = self.current
        if cur is not None and cur.upstream is not None:
            cur.upstream.resume_reading()
        elif self.tunnel is not None:
            self.tunnel.resume_reading()

    # reading control

    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    # One timer per connection serves the connection's idle timeout and the route
    # and stream-idle timeouts of its exchange: a request only stores its deadlines,
    # and the timer, when it fires early, re-arms itself for the nearest one.

    def arm(self, when: float) -> None:
        timer = self.timer
        if timer is not None:
            if self.timer_at <= when:
                return
            timer.cancel()
        self.timer_at = when
        self.timer = self.ctx.loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self.timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        now = self.ctx.loop.time()
        cur = self.current
        if cur is not None:
            nxt = cur.check_deadlines(now)
            if self.current is cur and nxt is not None:
                self.arm(nxt)
                return
            if self.current is not None or transport.is_closing():
                return
        if self.tunnel is not None or self.lingering:
            return
        idle = self.ctx.settings.idle_timeout
        if idle is None:
            return
        if self.current is None and now - self.last_active >= idle:
            transport.close()
            return
        self.arm(max(self.last_active + idle, now + 0.001))

    def close_lingering(self) -> None:
        """Closes after the response without cutting it off with a reset.

        Closing a socket with unread request bytes makes the kernel send a reset that
        can destroy the response in flight; so the write side is shut first and what
        the client still sends is read and dropped for a moment before closing.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.lingering = True
        self.queue.clear()
        self.paused = 0
        transport.resume_reading()
        self.ctx.loop.call_later(LINGER_SECONDS, transport.close)

    # RequestSink

    def on_request_head(self, head: RequestHead) -> None:
        self.upgrade_token = head.upgrade
        if head.upgrade == b"h2c" and head.has_body:
            if head.chunked:
                raise HttpError(501, "h2c_upgrade_with_chunked_body")
            assert head.content_length is not None
            self.h2c_body = head.content_length
        if self.current is not None or self.queue:
            self.queue.append((_HEAD, head))
            self.pause(_P_QUEUE)
            return
        self._start(head)

    def on_request_body(self, data: bytes) -> None:
        if self.queue:
            self.queue.append((data, None))
        elif self.current is not None:
            self.current.request_body(data)

    def on_request_end(self) -> None:
        if self.h2c_body:
            return  # its body follows as what llhttp calls upgrade bytes
        if self.queue:
            self.queue.append((_END, None))
        elif self.current is not None:
            self.current.request_end()

    def _start(self, head: RequestHead) -> None:
        self.ctx.stats.requests += 1
        self.last_active = self.ctx.loop.time()
        ex = Exchange(self, head)
        self.current = ex
        ex.start()

    def exchange_done(self, ex: Exchange, close: bool) -> None:
        if self.current is not ex:
            return
        self.current = None
        self.last_active = now = self.ctx.loop.time()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        idle = self.ctx.settings.idle_timeout
        if idle is not None:
            self.arm(now + idle)
        if close or (self.eof and not self.queue):
            self.queue.clear()
            if ex.request_done:
                transport.close()
            else:
                self.close_lingering()
            return
        queue = self.queue
        while queue:
            if transport.is_closing():
                queue.clear()
                return
            kind, value = queue[0]
            if kind is _HEAD:
                if self.current is not None:
                    return
                queue.popleft()
                if isinstance(value, _Refusal):
                    queue.clear()
                    self._count_refusal(value.error)
                    transport.write(
                        error_response(value.error.status, value.error.reason, close=True)
                    )
                    transport.close()
                    return
                self._start(value)
            else:
                queue.popleft()
                cur = self.current
                if cur is None:
                    continue
                if kind is _END:
                    cur.request_end()
                else:
                    assert isinstance(kind, bytes)
                    cur.request_body(kind)
        self.resume(_P_QUEUE)
        if self.eof and self.current is None and not transport.is_closing():
            transport.close()

    def _refuse(self, error: HttpError) -> None:
        """A request that cannot be parsed: answer it and close, after any in flight."""
        transport = self.transport
        self.broken = True
        if transport is None or transport.is_closing():
            return
        if self.current is not None:
            cur = self.current
            if not cur.request_done:
                # The body being forwarded is bad: answer if nothing was answered yet.
                cur.close_after = True
                if cur.done:
                    transport.close()
                elif cur.response_started:
                    cur.abort_client(error.reason)
                else:
                    cur.attempts_left = 0
                    cur.local_error(error.status, error.reason)
                return
            # Answer after the one in flight: nothing more will be read.
            self.queue.append((_HEAD, _Refusal(error)))
            self.pause(_P_QUEUE)
            return
        self._count_refusal(error)
        transport.write(error_response(error.status, error.reason, close=True))
        self.close_lingering()

    def _count_refusal(self, error: HttpError) -> None:
        self.ctx.stats.errors[error.reason] += 1
        self.ctx.stats.responses[("", error.status)] += 1

    def _upgraded(self, rest: bytes) -> None:
        """The reader stopped after an upgrade request; ``rest`` are the bytes after it."""
        cur = self.current
        if cur is not None and cur.tunnel_allowed and not self.queue:
            # Until the upstream answers 101, what the client sends waits here.
            cur.close_after = True
            self.tunnel_buf = bytearray(rest)
            self.pause(_P_UPGRADE)
            return
        if self.upgrade_token == b"h2c" and not self.broken:
            # Envoy ignores an h2c upgrade offer: the request went on as plain HTTP/1.1.
            self.reader = RequestReader(self, self.ctx.settings.limits)
            self.h2c_left = self.h2c_body
            self.h2c_body = 0
            if rest:
                self.data_received(rest)
            return
        # A refused upgrade was answered with close; what follows is not HTTP.
        self.broken = True
        if cur is None and self.transport is not None:
            self.transport.close()
        elif cur is not None:
            cur.close_after = True


class _Refusal:
    __slots__ = ("error",)

    def __init__(self, error: HttpError) -> None:
        self.error = error


def _header_map(headers: Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        if key in out:
            out[key] = out[key] + "," + text
        else:
            out[key] = text
    return out


def _apply_edits(headers: Headers, edits: HeaderEdits) -> Headers:
    if edits.remove:
        drop = {n.encode() for n in edits.remove}
        headers = [(n, v) for n, v in headers if n not in drop]
    for hv in edits.add:
        name = hv.name.encode()
        value = hv.value.encode()
        if not hv.append:
            headers = [(n, v) for n, v in headers if n != name]
        headers.append((name, value))
    return headers


def _hash_key(
    policies: Sequence[HashPolicy], head: RequestHead, peer: str
) -> tuple[int | None, bytes | None]:
    """The hash key of a request, and the ``set-cookie`` value of a cookie made up for it.

    As Envoy: a cookie policy with a TTL whose cookie is absent makes up a value, hashes on it
    and has it set on the response, so that the client sticks to the endpoint from then on.
    """
    material: list[bytes] = []
    set_cookie: bytes | None = None
    for p in policies:
        value: bytes | None = None
        if p.kind == "header":
            name = p.name.encode()
            value = next((v for n, v in head.headers if n == name), None)
        elif p.kind == "source_ip":
            value = peer.encode()
        elif p.kind == "cookie":
            name = p.name.encode()
            for n, v in head.headers:
                if n == b"cookie":
                    for part in v.split(b";"):
                        k, _, val = part.strip().partition(b"=")
                        if k == name:
                            value = _unquote(val)
                            break
            if value is None and p.cookie_ttl is not None:
                value = b"%016x" % random.getrandbits(64)
                set_cookie = _set_cookie(name, value, p.cookie_ttl, p.cookie_path)
        elif p.kind == "query_parameter":
            name = p.name.encode()
            for part in head.query.split(b"&"):
                k, _, val = part.partition(b"=")
                if k == name:
                    value = val
                    break
        if value is not None:
            material.append(value)
            if p.terminal:
                break
    if not material:
        return None, set_cookie
    digest = hashlib.blake2b(b"\x00".join(material), digest_size=8).digest()
    return int.from_bytes(digest, "big"), set_cookie


def _unquote(value: bytes) -> bytes:
    if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
        return value[1:-1]
    return value


def _set_cookie(name: bytes, value: bytes, ttl: float, path: str) -> bytes:
    """Envoy's ``makeSetCookieValue``: quoted value, Max-Age unless 0, Path, HttpOnly."""
    cookie = b'%b="%b"' % (name, value)
    if int(ttl):
        cookie += b"; Max-Age=%d" % int(ttl)
    if path:
        cookie += b"; Path=" + path.encode()
    return cookie + b"; HttpOnly"


def shadow_host(host: bytes) -> bytes:
    """Envoy's host for a mirrored request: ``-shadow`` after the name, before any port."""
    if host.startswith(b"["):
        end = host.find(b"]") + 1
        return host[:end] + b"-shadow" + host[end:] if end else host + b"-shadow"
    name, colon, port = host.partition(b":")
    return name + b"-shadow" + colon + port


def request_id() -> bytes:
    """A random (version 4) UUID, without the cost of building a uuid.UUID."""
    h = b"%032x" % (random.getrandbits(128) & _UUID_MASK | _UUID_V4)
    return b"%b-%b-%b-%b-%b" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


_UUID_MASK = ~((0xF000 << 64) | (0xC000 << 48)) & ((1 << 128) - 1)
_UUID_V4 = (0x4000 << 64) | (0x8000 << 48)


def pick_cluster(forward: Forward, rand: Callable[[], float] = random.random) -> WeightedCluster:
    clusters = forward.clusters
    if len(clusters) == 1:
        return clusters[0]
    cumulative = forward.cumulative_weights
    if not cumulative:
        total = 0
        sums = []
        for c in clusters:
            total += c.weight
            sums.append(total)
        cumulative = tuple(sums)
    index = bisect.bisect_right(cumulative, rand() * cumulative[-1])
    return clusters[min(index, len(clusters) - 1)]


class Exchange:
    """One request and its response; also the sink of its upstream connection."""

    __slots__ = (
        "action",
        "attempt",
        "attempt_open",
        "attempts_left",
        "balancer",
        "body_sent",
        "client_chunked",
        "close_after",
        "cluster",
        "conn",
        "connecting",
        "ctx",
        "deadline",
        "done",
        "endpoint",
        "forward",
        "hash_key",
        "head",
        "held",
        "last_active",
        "mirror_pending",
        "pending",
        "pending_bytes",
        "replay",
        "replay_bytes",
        "replayable",
        "request_done",
        "response_bytes_out",
        "response_started",
        "retry_timer",
        "sent_once",
        "set_cookie",
        "stale_retry_used",
        "started_at",
        "table",
        "try_started",
        "try_timer",
        "tunnel_allowed",
        "tunneling",
        "upstream",
        "upstream_framed",
        "upstream_head",
        "upstream_status",
        "weighted",
    )

    def __init__(self, conn: ClientConnection, head: RequestHead) -> None:
        self.conn = conn
        self.ctx = conn.ctx
        self.head = head
        self.table: Any = None
        self.action: Action | None = None
        self.forward: Forward | None = None
        self.weighted: WeightedCluster | None = None
        self.cluster: Any = None
        self.balancer: BalancerView | None = None
        self.endpoint: Endpoint | None = None
        self.upstream: UpstreamConnection | None = None
        self.connecting: ConnectAttempt | None = None
        self.upstream_head = b""
        self.request_done = False
        self.body_sent = False
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.replay: list[bytes] = []
        self.replay_bytes = 0
        self.replayable = True
        self.response_started = False
        self.response_bytes_out = 0
        self.client_chunked = False
        self.close_after = not head.keep_alive
        self.done = False
        self.attempt = 0
        self.attempt_open = False
        self.attempts_left = 0
        self.stale_retry_used = False
        self.started_at = 0.0
        self.try_started = 0.0
        self.last_active = 0.0
        self.deadline = 0.0
        self.try_timer: asyncio.TimerHandle | None = None
        self.retry_timer: asyncio.TimerHandle | None = None
        self.upstream_status = 0
        self.upstream_framed = True
        self.tunnel_allowed = False
        self.tunneling = False
        self.sent_once = False
        self.hash_key: int | None = None
        self.set_cookie: bytes | None = None
        self.mirror_pending = False
        self.held: bytes | None = None

    # request side

    def start(self) -> None:
        head = self.head
        self.table = table = self.ctx.tables.current
        if table is None:
            self.local_error(503, "no_configuration")
            return
        path = normalize_path(head.path, self.ctx.settings.merge_slashes)
        if path is None:
            self.local_error(400, "bad_path")
            return
        self.head.path = path
        try:
            action = table.route(
                self.ctx.listener_name,
                head.host.decode("latin-1"),
                path.decode("latin-1"),
                head.method.decode("latin-1"),
                _header_map(head.headers),
                head.query.decode("latin-1"),
            )
        except Exception:
            self.local_error(500, "route_error")
            return
        self.action = action
        if action is None:
            self.local_error(404, "route_not_found")
            return
        if isinstance(action, DirectResponse):
            self.direct(action)
            return
        if isinstance(action, Redirect):
            self.redirect(action)
            return
        self.forward = action
        if head.upgrade is not None:
            if head.upgrade.decode("latin-1") in action.upgrades:
                self.tunnel_allowed = True
            elif head.upgrade != b"h2c":
                self.close_after = True
                self.local_error(403, "upgrade_not_allowed")
                return
        fault = action.fault
        if fault is not None:
            if fault.abort is not None and random.random() * 100 < fault.abort.percent:
                self.local_error(fault.abort.status, "fault_abort")
                return
            if fault.delay is not None and random.random() * 100 < fault.delay.percent:
                self.conn.pause(_P_BUFFER)
                self.retry_timer = self.ctx.loop.call_later(fault.delay.seconds, self._after_delay)
                return
        self.begin_forward()

    def _after_delay(self) -> None:
        self.retry_timer = None
        if self.done:
            return
        self.conn.resume(_P_BUFFER)
        self.begin_forward()

    def begin_forward(self) -> None:
        action = self.forward
        assert action is not None
        loop = self.ctx.loop
        self.weighted = weighted = pick_cluster(action)
        self.cluster = cluster = self.table.cluster(weighted.name)
        if cluster is None:
            self.local_error(503, "cluster_not_found")
            return
        self.balancer = cluster.balancer
        self.upstream_head = self.build_upstream_head(action, weighted)
        retry = action.retry
        self.attempts_left = retry.num_retries if retry is not None else 0
        self.started_at = self.last_active = loop.time()
        if action.timeout:
            self.deadline = self.started_at + action.timeout
            self.conn.arm(self.deadline)
        if action.idle_timeout:
            self.conn.arm(self.started_at + action.idle_timeout)
        if self.head.expect_continue and not self.request_done:
            transport = self.conn.transport
            if transport is not None:
                transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if action.mirrors:
            if self.request_done:
                self._mirror()
            else:
                self.mirror_pending = True
        self.start_attempt(fresh=False)

    def build_upstream_head(self, action: Forward, weighted: WeightedCluster) -> bytes:
        head = self.head
        headers = strip_hop_by_hop(head.headers)
        host = action.host_rewrite.encode() if action.host_rewrite else head.host
        xff = self.conn.peer.encode()
        out: Headers = [(b"host", host)]
        have_id = False
        for name, value in headers:
            if name == b"host" or name == b"expect" or name == b"x-forwarded-proto":
                continue
            if name == b"x-forwarded-for":
                xff = value + b", " + xff
                continue
            if name == b"content-length" and head.chunked:
                continue
            if name == b"x-request-id":
                have_id = True
            out.append((name, value))
        out.append((b"x-forwarded-for", xff))
        out.append((b"x-forwarded-proto", self.ctx.settings.scheme.encode()))
        if not have_id:
            out.append((b"x-request-id", request_id()))
        if head.chunked:
            out.append((b"transfer-encoding", b"chunked"))
        if self.tunnel_allowed and head.upgrade is not None:
            out.append((b"connection", b"upgrade"))
            out.append((b"upgrade", head.upgrade))
        if action.request_headers.add or action.request_headers.remove:
            out = _apply_edits(out, action.request_headers)
        if weighted.request_headers.add or weighted.request_headers.remove:
            out = _apply_edits(out, weighted.request_headers)
        path = head.path
        if action.regex_rewrite is not None:
            pattern, sub = action.regex_rewrite
            path = pattern.sub(sub, path.decode("latin-1")).encode("latin-1")
        elif action.prefix_rewrite is not None:
            # The route matched, so the path starts with the prefix (in any case, for
            # a case-insensitive route): replace as many characters.
            path = action.prefix_rewrite.encode() + path[len(action.matched_prefix or "/") :]
        if head.query:
            path = path + b"?" + head.query
        return serialize_head(head.method + b" " + path + b" HTTP/1.1", out)

    def start_attempt(self, fresh: bool) -> None:
        if self.done:
            return
        cluster = self.cluster
        balancer = self.balancer
        assert balancer is not None
        action = self.forward
        assert action is not None
        if action.hash_policies and self.attempt == 0:
            self.hash_key, self.set_cookie = _hash_key(
                action.hash_policies, self.head, self.conn.peer
            )
        ep = balancer.pick(self.hash_key)
        if ep is None:
            self.local_error(503, "no_healthy_upstream")
            return
        self.endpoint = ep
        self.attempt += 1
        balancer.started(ep)
        self.attempt_open = True
        loop = self.ctx.loop
        self.try_started = loop.time()
        retry = action.retry
        if retry is not None and retry.per_try_timeout:
            self.try_timer = loop.call_later(retry.per_try_timeout, self.on_try_timeout)
        self.connecting = self.ctx.pool.acquire(
            ep.key, cluster.connect_timeout, self.on_connected, fresh
        )

    def on_connected(self, up: UpstreamConnection | None, reason: str) -> None:
        self.connecting = None
        if self.done:
            if up is not None:
                self.ctx.pool.release(up)
            return
        if up is None:
            self.ctx.stats.upstream_connect_errors[self.cluster.name] += 1
            self.attempt_failed(None, reason, CONNECT_FAILURE_CONDITIONS, 502)
            return
        self.upstream = up
        up.attach(self, self.head.method == b"HEAD")
        if self.conn.writing_paused:
            up.pause_reading()
        parts = [self.upstream_head]
        if self.sent_once:
            if self.head.chunked:
                parts.extend(map(chunk, self.replay))
                if self.request_done:
                    parts.append(LAST_CHUNK)
            else:
                parts.extend(self.replay)
        else:
            parts.extend(self.pending)
            self.pending = []
            self.pending_bytes = 0
            self.sent_once = True
        self.conn.resume(_P_BUFFER)
        if self.request_done:
            self.body_sent = True
        up.write(b"".join(parts))

    def request_body(self, data: bytes) -> None:
        if self.done:
            return
        self.last_active = self.ctx.loop.time()
        if self.replayable:
            self.replay_bytes += len(data)
            if self.replay_bytes > self.ctx.settings.retry_buffer:
                self.replayable = False
                self.replay = []
            else:
                self.replay.append(data)
        wire = chunk(data) if self.head.chunked else data
        up = self.upstream
        if up is not None:
            up.write(wire)
            return
        if self.sent_once:
            if not self.replayable:
                # A retry is waiting but the body no longer fits the replay buffer.
                self.attempts_left = 0
                self.local_error(502, "upstream_retry_body_too_large")
            return
        self.pending.append(wire)
        self.pending_bytes += len(wire)
        if self.pending_bytes > self.ctx.settings.buffer_limit:
            self.conn.pause(_P_BUFFER)

    def request_end(self) -> None:
        self.request_done = True
        if self.done:
            return
        up = self.upstream
        if self.head.chunked:
            if up is not None:
                up.write(LAST_CHUNK)
            elif not self.sent_once:
                self.pending.append(LAST_CHUNK)
        if up is not None:
            self.body_sent = True
        if self.mirror_pending:
            self.mirror_pending = False
            self._mirror()

    # retries and failures

    def attempt_failed(
        self, status: int | None, reason: str, conditions: frozenset[str], error_status: int
    ) -> None:
        """An attempt ended without a response sent to the client: retry it or answer."""
        now = self.ctx.loop.time()
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        up = self.upstream
        self.upstream = None
        if up is not None:
            self.ctx.pool.discard(up)
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        self._end_attempt(status, now)
        action = self.forward
        retry = action.retry if action is not None else None
        if (
            retry is not None
            and self.attempts_left > 0
            and self.replayable
            and not self.response_started
            and conditions.intersection(retry.retry_on)
        ):
            self.attempts_left -= 1
            self.ctx.stats.retries[self.cluster.name] += 1
            ceiling = min(retry.base_interval * (2 ** (self.attempt - 1)), retry.max_interval)
            self.retry_timer = self.ctx.loop.call_later(random.random() * ceiling, self._retry)
            return
        self.local_error(error_status, reason)

    def _retry(self) -> None:
        self.retry_timer = None
        self.start_attempt(fresh=False)

    def on_try_timeout(self) -> None:
        self.try_timer = None
        if self.done or self.response_started:
            return
        self.attempt_failed(None, "upstream_per_try_timeout", TIMEOUT_CONDITIONS, 504)

    def check_deadlines(self, now: float) -> float | None:
        """Acts on a passed route or stream-idle deadline; returns the next one, if any."""
        if self.done or self.forward is None:
            return None
        nxt: float | None = None
        if self.deadline:
            if now >= self.deadline:
                self._timed_out("upstream_timeout")
                return None
            nxt = self.deadline
        idle = self.forward.idle_timeout
        if idle:
            at = self.last_active + idle
            if now >= at:
                self._timed_out("stream_idle_timeout")
                return None
            nxt = at if nxt is None else min(nxt, at)
        return nxt

    def _timed_out(self, reason: str) -> None:
        if self.done:
            return
        if self.response_started:
            self.abort_client(reason)
            return
        self.attempts_left = 0
        if self.upstream is not None or self.connecting is not None:
            self.attempt_failed(None, reason, frozenset(), 504)
        else:
            self.local_error(504, reason)

    # UpstreamSink

    def on_response_head(self, status: int, reason: bytes, headers: Headers, framed: bool) -> None:
        if self.done:
            return
        action = self.forward
        assert action is not None
        retry = action.retry
        self.upstream_status = status
        if retry is not None and self.attempts_left > 0 and self.replayable:
            conditions: set[str] = set()
            if status >= 500:
                conditions.add("5xx")
            if status in (502, 503, 504):
                conditions.add("gateway-error")
            if status == 409:
                conditions.add("retriable-4xx")
            if status in retry.retriable_status_codes:
                conditions.add("retriable-status-codes")
            if conditions.intersection(retry.retry_on):
                self.attempt_failed(status, "upstream_status", frozenset(conditions), 502)
                return
        if self.try_timer is not None:
            self.try_timer.cancel()
            self.try_timer = None
        if status == 101 and not self.tunnel_allowed:
            self.attempts_left = 0
            self.attempt_failed(None, "upstream_unexpected_upgrade", frozenset(), 502)
            return
        self.response_started = True
        self.upstream_framed = framed
        client_head = self.head
        out = strip_hop_by_hop(headers)
        has_length = False
        for name, _ in out:
            if name == b"content-length":
                has_length = True
                break
        close = self.close_after
        no_body = client_head.method == b"HEAD" or status in (204, 304) or status < 200
        if status == 101:
            out.append((b"connection", b"upgrade"))
            if client_head.upgrade is not None:
                out.append((b"upgrade", client_head.upgrade))
        elif not no_body and not has_length:
            if client_head.version == b"1.1":
                out.append((b"transfer-encoding", b"chunked"))
                self.client_chunked = True
            else:
                close = True
        if close:
            self.close_after = True
            out.append((b"connection", b"close"))
        elif client_head.version == b"1.0":
            out.append((b"connection", b"keep-alive"))
        if self.set_cookie is not None:
            out.append((b"set-cookie", self.set_cookie))
        if action.response_headers.add or action.response_headers.remove:
            out = _apply_edits(out, action.response_headers)
        weighted = self.weighted
        if weighted is not None and (
            weighted.response_headers.add or weighted.response_headers.remove
        ):
            out = _apply_edits(out, weighted.response_headers)
        if not reason or b"\r" in reason or b"\n" in reason:
            reason = reason_phrase(status)
        # Held back so that a head and the body read with it leave in one write.
        self.held = serialize_head(b"HTTP/1.1 %d %b" % (status, reason), out)

    def flush(self) -> None:
        """The end of one upstream read: whatever is held goes out."""
        held = self.held
        if held is not None:
            self.held = None
            transport = self.conn.transport
            if transport is not None:
                transport.write(held)

    def on_response_body(self, data: bytes) -> None:
        if self.done:
            return
        self.last_active = self.ctx.loop.time()
        transport = self.conn.transport
        if transport is None:
            return
        self.response_bytes_out += len(data)
        if self.client_chunked:
            data = chunk(data)
        held = self.held
        if held is not None:
            self.held = None
            data = held + data
        transport.write(data)

    def on_response_end(self, reusable: bool) -> None:
        if self.done:
            return
        if self.upstream_status == 101:
            self.flush()
            self._start_tunnel()
            return
        up = self.upstream
        self.upstream = None
        transport = self.conn.transport
        if transport is not None:
            held = self.held
            if held is not None:
                self.held = None
                transport.write(held + LAST_CHUNK if self.client_chunked else held)
            elif self.client_chunked:
                transport.write(LAST_CHUNK)
        if up is not None:
            if reusable and self.body_sent and self.upstream_framed:
                self.ctx.pool.release(up)
            else:
                self.ctx.pool.discard(up)
        self.finish(self.upstream_status)

    def _start_tunnel(self) -> None:
        """After a 101 both connections carry raw bytes until either side closes."""
        up = self.upstream
        self.upstream = None
        conn = self.conn
        self.finish(101, tunnel=True)
        if up is not None:
            self.ctx.pool.detach(up)
        if up is None or conn.transport is None or conn.transport.is_closing():
            if up is not None:
                self.ctx.pool.discard(up)
            return
        self.tunneling = True
        conn.tunnel = up
        buffered = conn.tunnel_buf
        conn.tunnel_buf = None
        if buffered:
            up.write(bytes(buffered))
        conn.resume(_P_UPGRADE | _P_BUFFER | _P_QUEUE)

    def on_upstream_error(self, error: HttpError) -> None:
        if self.done:
            return
        self.upstream = None
        if self.response_started:
            self.abort_client(error.reason)
            return
        self.attempts_left = 0
        self.attempt_failed(None, error.reason, frozenset(), error.status)

    def on_upstream_lost(self, exc: Exception | None) -> None:
        if self.tunneling:
            transport = self.conn.transport
            if transport is not None:
                transport.close()
            return
        if self.done:
            return
        up = self.upstream
        self.upstream = None
        if self.response_started:
            if not self.upstream_framed and exc is None and up is not None and not up.tunnel:
                # Read until close: the close is the end of the body.
                self.flush()
                transport = self.conn.transport
                if self.client_chunked and transport is not None:
                    transport.write(LAST_CHUNK)
                self.finish(self.upstream_status)
                return
            self.abort_client("upstream_reset_after_headers")
            return
        if (
            up is not None
            and up.reused
            and not up.got_bytes
            and not self.stale_retry_used
            and self.head.method in IDEMPOTENT
            and self.replayable
        ):
            # The pooled connection was closed by the server before our request reached it.
            self.stale_retry_used = True
            if self.try_timer is not None:
                self.try_timer.cancel()
                self.try_timer = None
            self._end_attempt(None)
            self.attempt -= 1
            self.start_attempt_fresh()
            return
        self.attempt_failed(None, "upstream_reset_before_headers", RESET_CONDITIONS, 502)

    def start_attempt_fresh(self) -> None:
        self.start_attempt(fresh=True)

    def on_tunnel_data(self, data: bytes) -> None:
        transport = self.conn.transport
        if transport is not None:
            transport.write(data)

    def upstream_pause_writing(self) -> None:
        self.conn.pause(_P_UPSTREAM)

    def upstream_resume_writing(self) -> None:
        self.conn.resume(_P_UPSTREAM)

    # endings

    def direct(self, action: DirectResponse) -> None:
        headers: Headers = []
        if action.body:
            headers.append((b"content-type", b"text/plain"))
        headers.append((b"content-length", b"%d" % len(action.body)))
        if action.response_headers.add or action.response_headers.remove:
            headers = _apply_edits(headers, action.response_headers)
        self.local_reply(action.status, headers, action.body)

    def redirect(self, action: Redirect) -> None:
        head = self.head
        scheme = action.scheme or self.ctx.settings.scheme
        host = head.host.decode("latin-1")
        if action.host is not None:
            host = action.host
        if action.port is not None:
            host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
            default = (scheme == "http" and action.port == 80) or (
                scheme == "https" and action.port == 443
            )
            if not default:
                host = f"{host}:{action.port}"
        path = head.path.decode("latin-1")
        query = head.query.decode("latin-1")
        if action.path is not None:
            path, _, new_query = action.path.partition("?")
            if new_query:
                query = new_query
        elif action.prefix_rewrite is not None:
            path = action.prefix_rewrite + path[len(action.matched_prefix or "/") :]
        location = f"{scheme}://{host}{path}"
        if query and not action.strip_query:
            location += "?" + query
        headers: Headers = [(b"location", location.encode()), (b"content-length", b"0")]
        self.local_reply(action.status, headers, b"")

    def local_error(self, status: int, reason: str) -> None:
        stats = self.ctx.stats
        stats.errors[reason] += 1
        body = f"{status} {reason}\n".encode()
        headers: Headers = [
            (b"content-type", b"text/plain"),
            (b"content-length", b"%d" % len(body)),
            (b"x-pilotfish-error", reason.encode()),
        ]
        self.local_reply(status, headers, body)

    def local_reply(self, status: int, headers: Headers, body: bytes) -> None:
        if self.done:
            return
        if self.response_started:
            self.abort_client("local_reply_after_headers")
            return
        self.response_started = True
        if not self.request_done:
            # The rest of the request will not be read: the connection cannot carry another.
            self.close_after = True
        if self.close_after:
            headers.append((b"connection", b"close"))
        elif self.head.version == b"1.0":
            headers.append((b"connection", b"keep-alive"))
        transport = self.conn.transport
        if transport is not None:
            data = serialize_head(b"HTTP/1.1 %d %b" % (status, reason_phrase(status)), headers)
            if self.head.method != b"HEAD":
                data += body
            transport.write(data)
        self.upstream_status = status
        self.finish(status, local=True)

    def finish(self, status: int, local: bool = False, tunnel: bool = False) -> None:
        if self.done:
            return
        self.done = True
        self._cancel_timers()
        cluster_name = self.cluster.name if self.cluster is not None else ""
        self.ctx.stats.responses[(cluster_name, status)] += 1
        self._release_upstream()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        self._end_attempt(499 if local else status)
        conn = self.conn
        if tunnel:
            conn.current = None
            return
        conn.resume(_P_BUFFER | _P_UPSTREAM)
        conn.exchange_done(self, self.close_after or not self.request_done)

    def abort_client(self, reason: str) -> None:
        """The response cannot be completed: reset the client rather than end it cleanly."""
        self.ctx.stats.errors[reason] += 1
        self.done = True
        self._cancel_timers()
        self._release_upstream()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        self._end_attempt(None)
        transport = self.conn.transport
        self.conn.current = None
        if transport is not None:
            transport.abort()

    def client_gone(self) -> None:
        """The client disconnected: cancel the upstream side and free everything."""
        if self.done:
            return
        self.done = True
        self._cancel_timers()
        self._release_upstream()
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        # Not the endpoint's fault: counted as a client error, not a failure.
        self._end_attempt(499)

    def _end_attempt(self, status: int | None, now: float | None = None) -> None:
        if self.attempt_open and self.endpoint is not None and self.balancer is not None:
            self.attempt_open = False
            when = self.ctx.loop.time() if now is None else now
            self.balancer.finished(self.endpoint, when - self.try_started, status)

    def _release_upstream(self) -> None:
        up = self.upstream
        self.upstream = None
        if up is not None:
            self.ctx.pool.discard(up)

    def _cancel_timers(self) -> None:
        for timer in (self.try_timer, self.retry_timer):
            if timer is not None:
                timer.cancel()
        self.try_timer = self.retry_timer = None

    # mirrors

    def _mirror(self) -> None:
        action = self.forward
        assert action is not None
        if not self.replayable:
            self.ctx.stats.errors["mirror_body_too_large"] += 1
            return
        for mirror in action.mirrors:
            if mirror.percent >= 100 or random.random() * 100 < mirror.percent:
                self._mirror_one(mirror)

    def _mirror_one(self, mirror: Mirror) -> None:
        ctx = self.ctx
        if ctx.mirrors >= ctx.settings.max_mirrors:
            ctx.stats.errors["mirror_dropped"] += 1
            return
        cluster = self.table.cluster(mirror.cluster)
        if cluster is None:
            return
        # The copy is of the request as sent upstream (rewrites and header edits applied).
        host = self.head.host
        lines = self.upstream_head.split(b"\r\n")
        headers = []
        for line in lines[1:]:
            if line[:5].lower() == b"host:":
                host = line[5:].strip()
            elif line:
                headers.append(line)
        mirror_head = (
            b"\r\n".join([lines[0], b"host: " + shadow_host(host), *headers]) + b"\r\n\r\n"
        )
        _MirrorRequest(ctx, cluster, mirror_head, self)


class _MirrorRequest:
    """Fire and forget: a copy of the request to another cluster, its response dropped.

    The body is copied only when the request carried none or it fitted the
    replay buffer by the time the copy is sent (at the end of the request).
    """

    __slots__ = ("cluster", "ctx", "endpoint", "head", "source", "started", "up")

    def __init__(self, ctx: ProxyContext, cluster: Any, head: bytes, source: Exchange) -> None:
        self.ctx = ctx
        self.cluster = cluster
        self.head = head
        self.source = source
        self.up: UpstreamConnection | None = None
        self.endpoint: Endpoint | None = None
        self.started = time.monotonic()
        ep = cluster.balancer.pick(None)
        if ep is None:
            return
        self.endpoint = ep
        ctx.mirrors += 1
        cluster.balancer.started(ep)
        ctx.pool.acquire(ep.key, cluster.connect_timeout, self.on_connected)

    def on_connected(self, up: UpstreamConnection | None, reason: str) -> None:
        if up is None:
            self._done(None)
            return
        self.up = up
        up.attach(self, self.source.head.method == b"HEAD")
        src = self.source
        body = b"".join(src.replay)
        if src.head.chunked:
            data = self.head + (chunk(body) if body else b"") + LAST_CHUNK
        else:
            data = self.head + body
        up.write(data)

    def _drop(self) -> None:
        if self.up is not None:
            self.ctx.pool.discard(self.up)
            self.up = None
        self._done(None)

    def _done(self, status: int | None) -> None:
        if self.endpoint is not None:
            self.cluster.balancer.finished(self.endpoint, time.monotonic() - self.started, status)
            self.endpoint = None
            self.ctx.mirrors -= 1

    def on_response_head(self, status: int, reason: bytes, headers: Headers, framed: bool) -> None:
        pass

    def flush(self) -> None:
        pass

    def on_response_body(self, data: bytes) -> None:
        pass

    def on_response_end(self, reusable: bool) -> None:
        up = self.up
        self.up = None
        if up is not None:
            if reusable:
                self.ctx.pool.release(up)
            else:
                self.ctx.pool.discard(up)
        self._done(200)

    def on_upstream_error(self, error: HttpError) -> None:
        self._drop()

    def on_upstream_lost(self, exc: Exception | None) -> None:
        self.up = None
        self._done(None)

    def on_tunnel_data(self, data: bytes) -> None:
        self._drop()

    def upstream_pause_writing(self) -> None:
        pass

    def upstream_resume_writing(self) -> None:
        pass
