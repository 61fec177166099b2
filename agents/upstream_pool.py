"""Keep-alive connections to upstream endpoints, pooled per endpoint.

An :class:`UpstreamConnection` is the asyncio protocol of one connection to
an endpoint. While an exchange uses it, its responses are parsed
(:class:`agents.http1.ResponseReader`) and pushed to that exchange (an
:class:`UpstreamSink`); when the response has ended framed and the request
was sent whole, the exchange gives the connection back with
:meth:`UpstreamPool.release`, otherwise it closes it. Nothing else is ever
reused: a response read until close, a ``Connection: close``, an error.

Idle connections sit in a LIFO stack per endpoint (the most recently used is
the most likely to be alive). One the server closes, or that receives bytes
nobody asked for, is dropped from the stack the moment asyncio reports it;
:meth:`UpstreamPool.acquire` also skips transports already closing. A race
remains (the server closes while our request is on the wire), which the
exchange covers by retrying an idempotent request once on a fresh
connection (``reused`` tells it the connection was not new). A sweep closes
connections idle longer than ``idle_timeout``. :meth:`UpstreamPool.drain`
closes idle connections to endpoints that left the table and marks busy ones
to be closed when their exchange ends, so nothing in flight is cut.

Connecting is the only place a task is made: one per new connection, none
per request when a pooled connection is free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, cast

from agents.http1 import Headers, HttpError, ResponseReader

Key = tuple[str, int]


class UpstreamSink(Protocol):
    def on_response_head(
        self, status: int, reason: bytes, headers: Headers, framed: bool
    ) -> None: ...
    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self, reusable: bool) -> None: ...
    def on_upstream_error(self, error: HttpError) -> None: ...
    def on_upstream_lost(self, exc: Exception | None) -> None: ...
    def on_tunnel_data(self, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def upstream_pause_writing(self) -> None: ...
    def upstream_resume_writing(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "closed",
        "draining",
        "got_bytes",
        "idle_since",
        "key",
        "pool",
        "reader",
        "reused",
        "sink",
        "transport",
        "tunnel",
    )

    def __init__(self, pool: UpstreamPool, key: Key) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.sink: UpstreamSink | None = None
        self.reader = ResponseReader(self)
        self.reused = False
        self.got_bytes = False
        self.closed = False
        self.draining = False
        self.tunnel = False
        self.idle_since = 0.0

    # used by the exchange

    def attach(self, sink: UpstreamSink, head_request: bool) -> None:
        self.sink = sink
        self.got_bytes = False
        if head_request:
            self.reader.expect_no_body()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        """Closes for good: the connection is not returned to the pool."""
        self.sink = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()

    def write_eof(self) -> None:
        transport = self.transport
        if transport is not None and not self.closed and transport.can_write_eof():
            transport.write_eof()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop transports are not subclasses
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            self.pool._forget(self)
            self.close()
            return
        self.got_bytes = True
        if self.tunnel:
            sink.on_tunnel_data(data)
            return
        try:
            offset = self.reader.feed(data)
        except HttpError as e:
            self.close()
            sink.on_upstream_error(e)
            return
        if offset is not None:
            self.tunnel = True
            if offset < len(data):
                sink.on_tunnel_data(data[offset:])
            return
        sink.flush()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        sink = self.sink
        self.sink = None
        if sink is not None:
            sink.on_upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_pause_writing()

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.upstream_resume_writing()

    # ResponseSink: forwarded to the exchange

    def on_response_head(self, status: int, reason: bytes, headers: Headers, framed: bool) -> None:
        if self.sink is not None:
            self.sink.on_response_head(status, reason, headers, framed)

    def on_response_body(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink.on_response_body(data)

    def on_response_end(self, reusable: bool) -> None:
        if self.sink is not None:
            self.sink.on_response_end(reusable)


ConnectCallback = Callable[[UpstreamConnection | None, str], None]
"""Called once with a connection, or with None and the failure reason."""


class ConnectAttempt:
    """What :meth:`UpstreamPool.acquire` returns: cancel it when nobody waits any more."""

    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: ConnectCallback) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class UpstreamPool:
    def __init__(self, idle_timeout: float = 60.0, max_idle_per_endpoint: int = 128) -> None:
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle_per_endpoint
        self._idle: dict[Key, list[UpstreamConnection]] = {}
        self._busy: set[UpstreamConnection] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False
        self.connects = 0
        self.connect_failures = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        # Looked up once: on Python 3.11 get_running_loop() makes a getpid system call,
        # and release() runs once per request.
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def idle_count(self, key: Key | None = None) -> int:
        if key is not None:
            return len(self._idle.get(key, ()))
        return sum(len(v) for v in self._idle.values())

    def acquire(
        self, key: Key, connect_timeout: float, callback: ConnectCallback, fresh: bool = False
    ) -> ConnectAttempt | None:
        """Calls back at once with a pooled connection (returns None), or connects."""
        if not fresh:
            stack = self._idle.get(key)
            while stack:
                conn = stack.pop()
                transport = conn.transport
                if conn.closed or transport is None or transport.is_closing():
                    conn.close()
                    continue
                conn.reused = True
                self._busy.add(conn)
                callback(conn, "")
                return None
        attempt = ConnectAttempt(callback)
        self.loop.create_task(self._connect(key, connect_timeout, attempt))
        return attempt

    async def _connect(self, key: Key, timeout: float, attempt: ConnectAttempt) -> None:
        loop = self.loop
        self.connects += 1
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(self, key), key[0], key[1]),
                timeout,
            )
        except TimeoutError:
            self.connect_failures += 1
            if not attempt.cancelled:
                attempt.callback(None, "upstream_connect_timeout")
            return
        except OSError:
            self.connect_failures += 1
            if not attempt.cancelled:
                attempt.callback(None, "upstream_connect_failure")
            return
        if attempt.cancelled or self._closed:
            if self._closed:
                conn.close()
            else:
                self.release(conn)
            return
        self._busy.add(conn)
        attempt.callback(conn, "")

    def release(self, conn: UpstreamConnection) -> None:
        """Back to the pool after a framed response to a request sent whole."""
        self._busy.discard(conn)
        conn.sink = None
        transport = conn.transport
        if (
            conn.closed
            or conn.draining
            or self._closed
            or transport is None
            or transport.is_closing()
        ):
            conn.close()
            return
        stack = self._idle.setdefault(conn.key, [])
        if len(stack) >= self.max_idle:
            conn.close()
            return
        loop = self.loop
        conn.idle_since = loop.time()
        stack.append(conn)
        if self._sweep is None:
            self._sweep = loop.call_later(self.idle_timeout, self._do_sweep)

    def detach(self, conn: UpstreamConnection) -> None:
        """The connection leaves the pool for good (a tunnel after 101) but stays open."""
        self._busy.discard(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        self._busy.discard(conn)
        conn.close()

    def _forget(self, conn: UpstreamConnection) -> None:
        self._busy.discard(conn)
        stack = self._idle.get(conn.key)
        if stack and conn in stack:
            stack.remove(conn)
            if not stack:
                del self._idle[conn.key]

    def _do_sweep(self) -> None:
        self._sweep = None
        loop = self.loop
        deadline = loop.time() - self.idle_timeout
        for key in list(self._idle):
            stack = self._idle[key]
            keep = [c for c in stack if c.idle_since > deadline]
            for c in stack:
                if c.idle_since <= deadline:
                    c.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle:
            self._sweep = loop.call_later(self.idle_timeout / 2, self._do_sweep)

    def drain(self, keep: Callable[[Key], bool]) -> int:
        """Closes idle connections to endpoints not kept; busy ones close after their exchange."""
        closed = 0
        for key in list(self._idle):
            if not keep(key):
                for c in self._idle.pop(key):
                    c.close()
                    closed += 1
        for conn in self._busy:
            if not keep(conn.key):
                conn.draining = True
        return closed

    def close(self) -> None:
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for stack in self._idle.values():
            for c in stack:
                c.close()
        self._idle.clear()
        for conn in list(self._busy):
            conn.draining = True
