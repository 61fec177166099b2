"""The TCP proxy: bytes both ways, weighted clusters, half-close, backpressure, failures."""

from __future__ import annotations

import asyncio

from agents.actions import Forward, WeightedCluster
from agents.listeners import ListenerManager
from tests.agents.http_fakes import FakeListener, FakeTable, cluster


class Echo:
    def __init__(self, tag: bytes = b"", read: bool = True) -> None:
        self.tag = tag
        self.read = read
        self.go = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> Echo:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(w)
        if not self.read:
            await self.go.wait()
        try:
            while data := await r.read(65536):
                w.write(self.tag + data)
                await w.drain()
            w.write(b"<eof>")
            await w.drain()
        except ConnectionError:
            pass
        w.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for w in self.writers:
            w.transport.abort()


def tcp_table(forward: Forward, *clusters: object) -> FakeTable:
    listener = FakeListener("tcp", kind="tcp", route_config=None, tcp=forward)
    return FakeTable([], list(clusters), (listener,))  # type: ignore[arg-type]


async def test_tcp_proxy_carries_bytes_both_ways_and_passes_half_close() -> None:
    echo = await Echo().start()
    table = tcp_table(Forward(clusters=(WeightedCluster("echo"),)), cluster("echo", echo.port))
    manager = ListenerManager()
    await manager.apply(table)
    reader, writer = await asyncio.open_connection("127.0.0.1", manager.port("tcp"))
    writer.write(b"hello")
    assert await asyncio.wait_for(reader.readexactly(5), 5) == b"hello"
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(-1), 5) == b"<eof>"
    writer.close()
    balancer = table.clusters["echo"].balancer
    for _ in range(100):
        if balancer.outstanding == 0:
            break
        await asyncio.sleep(0.01)
    assert balancer.outstanding == 0 and balancer.finished_calls[0][1] == 200
    await manager.close()
    await echo.close()


async def test_tcp_proxy_picks_clusters_by_weight() -> None:
    a, b = await Echo(b"a").start(), await Echo(b"b").start()
    fw = Forward(
        clusters=(WeightedCluster("a", 1), WeightedCluster("b", 3)), cumulative_weights=(1, 4)
    )
    manager = ListenerManager()
    await manager.apply(tcp_table(fw, cluster("a", a.port), cluster("b", b.port)))
    port = manager.port("tcp")
    for _ in range(200):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x")
        await reader.readexactly(2)
        writer.close()
    assert a.connections + b.connections == 200
    assert 0.6 < b.connections / 200 < 0.9
    await manager.close()
    await a.close()
    await b.close()


async def test_tcp_proxy_closes_the_client_when_the_upstream_is_unreachable() -> None:
    gone = await Echo().start()
    port_gone = gone.port
    await gone.close()
    await asyncio.sleep(0.01)
    manager = ListenerManager()
    table = tcp_table(Forward(clusters=(WeightedCluster("x"),)), cluster("x", port_gone))
    await manager.apply(table)
    reader, writer = await asyncio.open_connection("127.0.0.1", manager.port("tcp"))
    assert await asyncio.wait_for(reader.read(-1), 5) == b""
    writer.close()
    assert manager.stats.errors["upstream_connect_failure"] == 1
    assert dict(manager.stats.upstream_connect_errors) == {"x": 1}
    assert table.clusters["x"].balancer.finished_calls[0][1] is None
    await manager.close()


async def test_tcp_proxy_applies_backpressure_instead_of_buffering() -> None:
    slow = await Echo(read=False).start()
    manager = ListenerManager()
    await manager.apply(
        tcp_table(Forward(clusters=(WeightedCluster("s"),)), cluster("s", slow.port))
    )
    _reader, writer = await asyncio.open_connection("127.0.0.1", manager.port("tcp"))
    total = 96 * 1024 * 1024
    sent = 0
    block = b"q" * (1 << 20)
    while sent < total:
        writer.write(block)
        sent += len(block)
        try:
            await asyncio.wait_for(writer.drain(), 0.5)
        except TimeoutError:
            break
    assert sent < total, "the proxy accepted everything while the upstream read nothing"
    slow.go.set()
    writer.transport.abort()
    await manager.close()
    await slow.close()


async def test_tcp_idle_timeout_closes_a_silent_pair() -> None:
    echo = await Echo().start()
    manager = ListenerManager()
    fw = Forward(clusters=(WeightedCluster("e"),), idle_timeout=0.2)
    await manager.apply(tcp_table(fw, cluster("e", echo.port)))
    reader, writer = await asyncio.open_connection("127.0.0.1", manager.port("tcp"))
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    assert await asyncio.wait_for(reader.read(-1), 5) == b""
    writer.close()
    assert manager.stats.errors["idle_timeout"] == 1
    await manager.close()
    await echo.close()
