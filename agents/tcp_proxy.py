"""The TCP proxy of a ``tcp_proxy`` listener: bytes both ways, with backpressure.

Each accepted connection takes the listener's current :class:`Forward`
(set by :mod:`agents.listeners` when a table is applied), picks a cluster by
cumulative weight and an endpoint from its balancer, and connects; until then
the client is not read. Afterwards each side's ``pause_writing`` pauses the
other side's reading, so a slow peer slows the fast one instead of growing a
buffer. A half-close is passed on; a close or reset of either side closes
the other. An idle timeout (the route's ``idle_timeout``) closes a silent
pair. The balancer hears ``started`` at connect and ``finished`` at close.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from agents.actions import Forward
from agents.endpoints import Endpoint
from agents.http_proxy import Stats, TableSource, pick_cluster


class TcpContext:
    __slots__ = ("forward", "listener_name", "stats", "tables")

    def __init__(
        self, listener_name: str, tables: TableSource, forward: Forward | None, stats: Stats
    ) -> None:
        self.listener_name = listener_name
        self.tables = tables
        self.forward = forward
        self.stats = stats


class _Upstream(asyncio.Protocol):
    __slots__ = ("client", "transport")

    def __init__(self, client: TcpClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop transports are not subclasses
        self.transport = transport
        if self.client.writing_paused:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.client.from_upstream(data)

    def eof_received(self) -> bool | None:
        return self.client.upstream_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_lost()

    def pause_writing(self) -> None:
        self.client.pause_client_reading()

    def resume_writing(self) -> None:
        self.client.resume_client_reading()


class TcpClient(asyncio.Protocol):
    __slots__ = (
        "balancer",
        "client_eof",
        "closed",
        "ctx",
        "endpoint",
        "idle",
        "last_active",
        "loop",
        "pending",
        "started",
        "timer",
        "transport",
        "upstream",
        "upstream_eof_seen",
        "writing_paused",
    )

    def __init__(self, ctx: TcpContext) -> None:
        self.ctx = ctx
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.balancer: Any = None
        self.endpoint: Endpoint | None = None
        self.pending = bytearray()
        self.writing_paused = False
        self.closed = False
        self.client_eof = False
        self.upstream_eof_seen = False
        self.started = 0.0
        self.last_active = 0.0
        self.idle: float | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop transports are not subclasses
        self.transport = transport
        transport.pause_reading()
        self.ctx.stats.requests += 1
        forward = self.ctx.forward
        table = self.ctx.tables.current
        if forward is None or table is None:
            self._fail("no_configuration")
            return
        cluster = table.cluster(pick_cluster(forward).name)
        if cluster is None:
            self._fail("cluster_not_found")
            return
        ep = cluster.balancer.pick(None)
        if ep is None:
            self._fail("no_healthy_upstream")
            return
        self.balancer = cluster.balancer
        self.endpoint = ep
        self.idle = forward.idle_timeout
        self.started = self.last_active = self.loop.time()
        cluster.balancer.started(ep)
        self.loop.create_task(self._connect(cluster.name, ep, cluster.connect_timeout))

    async def _connect(self, cluster: str, ep: Endpoint, timeout: float) -> None:
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: self._make_upstream(), ep.address, ep.port),
                timeout,
            )
        except (OSError, TimeoutError):
            self.ctx.stats.upstream_connect_errors[cluster] += 1
            self._finished(None)
            self._fail("upstream_connect_failure")
            return
        if self.closed:
            if self.upstream is not None and self.upstream.transport is not None:
                self.upstream.transport.close()
            return
        if self.idle:
            self.timer = self.loop.call_later(self.idle, self._check_idle)
        up = self.upstream
        if self.pending and up is not None and up.transport is not None:
            up.transport.write(bytes(self.pending))
            self.pending.clear()
        if self.client_eof and up is not None and up.transport is not None:
            up.transport.write_eof()
        if self.transport is not None:
            self.transport.resume_reading()

    def _make_upstream(self) -> _Upstream:
        self.upstream = _Upstream(self)
        return self.upstream

    def _fail(self, reason: str) -> None:
        self.ctx.stats.errors[reason] += 1
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _finished(self, status: int | None) -> None:
        if self.endpoint is not None and self.balancer is not None:
            self.balancer.finished(self.endpoint, self.loop.time() - self.started, status)
            self.endpoint = None

    def _check_idle(self) -> None:
        self.timer = None
        if self.closed or not self.idle:
            return
        quiet = self.loop.time() - self.last_active
        if quiet >= self.idle:
            self.ctx.stats.errors["idle_timeout"] += 1
            self._close_both()
            return
        self.timer = self.loop.call_later(self.idle - quiet, self._check_idle)

    def _close_both(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.close()

    # client side

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.write(data)
            return
        # Not connected yet (uvloop may deliver bytes despite the pause in connection_made).
        self.pending += data
        if self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        self.client_eof = True
        up = self.upstream
        if up is None:
            return True  # passed on once connected
        if self.upstream_eof_seen:
            self._finished(200)
            self._close_both()
            return None
        if up is not None and up.transport is not None and up.transport.can_write_eof():
            up.transport.write_eof()
            return True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._finished(200 if exc is None else None)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        up = self.upstream
        if up is not None and up.transport is not None:
            if exc is None:
                up.transport.close()
            else:
                up.transport.abort()

    def pause_writing(self) -> None:
        self.writing_paused = True
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        up = self.upstream
        if up is not None and up.transport is not None:
            up.transport.resume_reading()

    # upstream side

    def from_upstream(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        if self.transport is not None:
            self.transport.write(data)

    def upstream_eof(self) -> bool | None:
        self.upstream_eof_seen = True
        if self.client_eof:
            self._finished(200)
            self._close_both()
            return None
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()
            return True
        return None

    def upstream_lost(self) -> None:
        self._finished(200)
        if not self.closed:
            self._close_both()

    def pause_client_reading(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_client_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
