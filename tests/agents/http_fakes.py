"""Small fakes for data-plane tests: a table, clusters, a balancer, a backend and raw clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httptools

from agents.actions import Action, Forward, WeightedCluster
from agents.endpoints import Endpoint
from agents.http_proxy import ProxySettings
from agents.listeners import ListenerManager


@dataclass
class FakeListener:
    name: str
    address: str = "127.0.0.1"
    port: int = 0
    kind: str = "http"
    route_config: str | None = "rc"
    tcp: Forward | None = None


class FakeBalancer:
    def __init__(self, endpoints: tuple[Endpoint, ...]) -> None:
        self.endpoints = endpoints
        self.i = 0
        self.outstanding = 0
        self.started_eps: list[Endpoint] = []
        self.finished_calls: list[tuple[Endpoint, int | None]] = []
        self.hash_keys: list[int | None] = []

    def pick(self, hash_key: int | None = None) -> Endpoint | None:
        self.hash_keys.append(hash_key)
        healthy = [e for e in self.endpoints if e.healthy]
        if not healthy:
            return None
        ep = healthy[self.i % len(healthy)]
        self.i += 1
        return ep

    def started(self, ep: Endpoint) -> None:
        self.outstanding += 1
        self.started_eps.append(ep)

    def finished(self, ep: Endpoint, seconds: float, status: int | None) -> None:
        self.outstanding -= 1
        self.finished_calls.append((ep, status))


@dataclass
class FakeCluster:
    name: str
    endpoints: tuple[Endpoint, ...]
    balancer: FakeBalancer
    connect_timeout: float = 1.0


def cluster(name: str, *ports: int, healthy: bool = True) -> FakeCluster:
    eps = tuple(Endpoint("127.0.0.1", p, healthy=healthy) for p in ports)
    return FakeCluster(name, eps, FakeBalancer(eps))


@dataclass
class Seen:
    host: str
    path: str
    method: str
    headers: Mapping[str, str]
    query: str


class FakeTable:
    """Routes by the first matching path prefix; records what it was asked."""

    def __init__(
        self,
        routes: list[tuple[str, Action]],
        clusters: list[FakeCluster],
        listeners: tuple[FakeListener, ...] = (FakeListener("http"),),
    ) -> None:
        self.routes = routes
        self.clusters = {c.name: c for c in clusters}
        self.listeners = listeners
        self.seen: list[Seen] = []

    def route(
        self,
        listener_name: str,
        host: str,
        path: str,
        method: str,
        headers: Mapping[str, str],
        query: str,
    ) -> Action | None:
        self.seen.append(Seen(host, path, method, dict(headers), query))
        for prefix, action in self.routes:
            if path.lower().startswith(prefix.lower()):  # as a case-insensitive route
                return action
        return None

    def cluster(self, name: str) -> FakeCluster | None:
        return self.clusters.get(name)


def forward(name: str = "backend", **kw: Any) -> Forward:
    return Forward(clusters=(WeightedCluster(name),), **kw)


# Backend


@dataclass
class Req:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name]


Handler = Callable[[Req, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


def response(status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> bytes:
    hs = [*(headers or []), ("Content-Length", str(len(body)))]
    lines = [f"HTTP/1.1 {status} X"] + [f"{n}: {v}" for n, v in hs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def echo(req: Req, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(response(200, req.body, [("X-Seen-Target", req.target)]))
    return True


@dataclass
class Backend:
    handler: Handler = echo
    read_body: bool = True
    requests: list[Req] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self, rcvbuf: int | None = None) -> Backend:
        if rcvbuf is None:
            self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            return self
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind(("127.0.0.1", 0))
        self.server = await asyncio.start_server(self._serve, sock=sock)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for w in self.writers:
            w.transport.abort()
        await asyncio.sleep(0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [
                    (n.strip(), v.strip())
                    for n, _, v in (ln.partition(":") for ln in lines[1:] if ln)
                ]
                req = Req(method, target, headers, b"", head)
                if self.read_body:
                    req.body = await read_body(req, reader)
                self.requests.append(req)
                keep = await self.handler(req, reader, writer)
                await writer.drain()
                if not keep or (req.header("connection") or "").lower() == "close":
                    writer.close()
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return


async def read_body(req: Req, reader: asyncio.StreamReader) -> bytes:
    if (req.header("transfer-encoding") or "").lower() == "chunked":
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    cl = req.header("content-length")
    if cl:
        return await reader.readexactly(int(cl))
    return b""


# Proxy


@contextlib.asynccontextmanager
async def proxy(
    table: FakeTable, settings: ProxySettings | None = None
) -> AsyncIterator[tuple[ListenerManager, int]]:
    manager = ListenerManager(settings=settings or ProxySettings())
    await manager.apply(table)
    try:
        yield manager, manager.port(table.listeners[0].name)
    finally:
        await manager.close()


@contextlib.asynccontextmanager
async def setup(
    handler: Handler = echo,
    routes: list[tuple[str, Action]] | None = None,
    settings: ProxySettings | None = None,
    read_body: bool = True,
    rcvbuf: int | None = None,
) -> AsyncIterator[tuple[int, Backend, FakeTable, ListenerManager]]:
    backend = await Backend(handler, read_body=read_body).start(rcvbuf)
    table = FakeTable(routes or [("/", forward())], [cluster("backend", backend.port)])
    try:
        async with proxy(table, settings) as (manager, port):
            yield port, backend, table, manager
    finally:
        await backend.close()


# Clients


async def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Sends raw bytes and reads until the proxy closes; fails if it does not."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    chunks = []
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
    except ConnectionResetError:
        chunks.append(b"<reset>")
    finally:
        writer.close()
    return b"".join(chunks)


@dataclass
class Resp:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool = True

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


class _RespParser:
    def __init__(self, head_requests: int = 0) -> None:
        self.out: list[Resp] = []
        self.cur: Resp | None = None
        self.parser = httptools.HttpResponseParser(self)

    def on_message_begin(self) -> None:
        self.cur = Resp(0, [], b"", False)
        self.out.append(self.cur)

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.cur is not None
        self.cur.headers.append((name.decode().lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self.cur is not None
        self.cur.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        assert self.cur is not None
        self.cur.body += body

    def on_message_complete(self) -> None:
        assert self.cur is not None
        self.cur.complete = True


def parse(data: bytes) -> list[Resp]:
    p = _RespParser()
    with contextlib.suppress(httptools.HttpParserUpgrade):
        p.parser.feed_data(data)
    return p.out


def parse_one(data: bytes) -> Resp:
    out = parse(data)
    assert len(out) == 1, data[:500]
    return out[0]


async def request(port: int, data: bytes, timeout: float = 5.0) -> Resp:
    """One request on its own connection (``Connection: close`` is up to the caller)."""
    return parse_one(await exchange(port, data, timeout))


def get(path: str = "/", host: str = "svc", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode()
