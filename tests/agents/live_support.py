"""End-to-end helpers: named echo backends, a keep-alive client, a live control plane and agent.

A backend answers every request with JSON naming itself and echoing the request's method, path,
headers and body, so a test can tell exactly where a request went and what it looked like when
it got there. Its behaviour (delay, failures) can be changed while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.agent import Agent, AgentOptions
from agents.node import NodeIdentity
from controlplane.server.control_plane import ControlPlane
from tests.agents.xds_support import copy_example, fast_backoff, start_plane

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now, and never one this process was given before: a test
    asking for two ports before binding either must not get the same one twice."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Backend:
    """An HTTP/1.1 keep-alive server answering with its name; ``fail`` 503s come first."""

    name: str
    delay: float = 0.0
    fail: int = 0
    status: int = 200
    seen: list[Seen] = field(default_factory=list)
    server: asyncio.Server | None = None
    connections: int = 0
    """Connections open now."""

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                line, *lines = head.decode("latin-1").split("\r\n")[:-2]
                method, path, _ = line.split(" ", 2)
                headers: dict[str, str] = {}
                for header in lines:
                    key, _, value = header.partition(":")
                    key = key.strip().lower()
                    value = value.strip()
                    headers[key] = f"{headers[key]},{value}" if key in headers else value
                body = await read_body(reader, headers)
                self.seen.append(Seen(method, path, headers, body))
                if self.delay:
                    await asyncio.sleep(self.delay)
                status = self.status
                if self.fail > 0:
                    self.fail -= 1
                    status = 503
                payload = json.dumps(
                    {
                        "backend": self.name,
                        "method": method,
                        "path": path,
                        "headers": headers,
                        "body": body.decode("latin-1"),
                    }
                ).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                    f"x-backend: {self.name}\r\ncontent-length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.connections -= 1
            writer.close()


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = int(headers.get("content-length", "0"))
    return await reader.readexactly(length) if length else b""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    @property
    def backend(self) -> str:
        return self.headers.get("x-backend", "")


class Client:
    """One keep-alive HTTP/1.1 connection, reopened when the server closes it."""

    def __init__(self, port: int, host: str) -> None:
        self.port = port
        self.host = host
        self.connections = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self,
        path: str,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Response:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.connections += 1
        assert self._reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"host: {self.host}"]
        lines += [f"{key}: {value}" for key, value in (headers or {}).items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"content-length: {len(body)}")
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        got: dict[str, str] = {}
        for header in header_lines:
            key, _, value = header.partition(":")
            key = key.strip().lower()
            got[key] = f"{got[key]},{value.strip()}" if key in got else value.strip()
        status = int(status_line.split(" ")[1])
        payload = b"" if method == "HEAD" else await read_body(self._reader, got)
        if got.get("connection", "").lower() == "close":
            await self.close()
        return Response(status, got, payload)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        self._reader = self._writer = None


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> None:
    """Wait until ``check()`` (maybe a coroutine function's result) is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@dataclass
class Live:
    config: Path
    plane: ControlPlane
    agent: Agent
    port: int

    def client(self, host: str) -> Client:
        return Client(self.port, host)


@contextlib.asynccontextmanager
async def live_agent(
    config: Path, port: int, node: NodeIdentity | None = None, delta: bool = False
) -> AsyncIterator[Live]:
    """A control plane on ``config`` and an agent (sidecar unless ``node`` says), ready."""
    plane = await start_plane(config)
    agent = Agent(
        AgentOptions(
            plane.address,
            node or NodeIdentity("live", bind_address="127.0.0.1"),
            delta=delta,
            connect_timeout=10.0,
            backoff=fast_backoff,
        )
    )
    try:
        await agent.start()
        yield Live(config, plane, agent, port)
    finally:
        await agent.close()
        await plane.stop(0.1)


@contextlib.asynccontextmanager
async def backends(*names: str) -> AsyncIterator[dict[str, Backend]]:
    started = {name: Backend(name) for name in names}
    try:
        for backend in started.values():
            await backend.start()
        yield started
    finally:
        for backend in started.values():
            await backend.close()


HOST = "hello.default.svc.cluster.local"


def hello_mesh(port: int, running: dict[str, Backend]) -> str:
    """Service ``hello`` on ``port``, one WorkloadEntry per backend, a subset per backend name."""
    docs = [
        "apiVersion: v1\nkind: Service\nmetadata: {name: hello, namespace: default}\n"
        f"spec:\n  selector: {{app: hello}}\n  ports:\n  - {{name: http, port: {port}}}\n"
    ]
    for name, backend in running.items():
        docs.append(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
            f"metadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  address: 127.0.0.1\n  labels: {{app: hello, name: {name}}}\n"
            f"  ports: {{http: {backend.port}}}\n"
        )
    return "---\n".join(docs)


def subsets_rule(names: list[str], policy: str = "", annotations: str = "") -> str:
    """A DestinationRule for ``hello``: a subset per name, ``policy`` as its trafficPolicy body."""
    subsets = "".join(f"  - name: {n}\n    labels: {{name: {n}}}\n" for n in names)
    meta = f"  annotations:\n{annotations}" if annotations else ""
    traffic = f"  trafficPolicy:\n{policy}" if policy else ""
    return (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        f"metadata:\n  name: hello\n  namespace: default\n{meta}"
        f"spec:\n  host: hello\n{traffic}  subsets:\n{subsets}"
    )


def split_service(weights: dict[str, int], extra_rule: str = "") -> str:
    """A VirtualService for ``hello`` splitting traffic between subsets by ``weights``."""
    route = "".join(
        f"    - destination: {{host: hello, subset: {n}}}\n      weight: {w}\n"
        for n, w in weights.items()
    )
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: hello, namespace: default}\n"
        f"spec:\n  hosts: [hello]\n  http:\n{extra_rule}  - route:\n{route}"
    )


def write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


@dataclass
class Served:
    """A ``pilotfish serve`` subprocess."""

    process: subprocess.Popen[bytes]
    address: str
    log: Path

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(5)


def serve(config: Path, workdir: Path, address: str | None = None) -> Served:
    """Start ``pilotfish serve`` on ``config`` (quick reloads), on a free port unless given."""
    address = address or f"127.0.0.1:{free_port()}"
    log = workdir / f"serve-{address.rsplit(':', 1)[1]}-{time.monotonic_ns()}.log"
    command = [
        sys.executable,
        "-m",
        "controlplane",
        "serve",
        "--config-dir",
        str(config),
        "--xds-address",
        address,
        "--admin-address",
        "127.0.0.1:0",
        "--debounce",
        "20ms",
        "--settle",
        "10ms",
        "--max-delay",
        "100ms",
        "--state-dir",
        str(workdir / "state"),
        "--log-format",
        "json",
        "--grace",
        "100ms",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=child_env())
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise AssertionError(f"pilotfish serve exited: {log.read_text()}")
        try:
            socket.create_connection((host, int(port)), 0.2).close()
            return Served(process, address, log)
        except OSError:
            assert time.monotonic() < deadline, "pilotfish serve did not listen"
            time.sleep(0.05)


def sidecar(
    address: str, cache_dir: Path | None = None, node_id: str = "live", delta: bool = False
) -> Agent:
    return Agent(
        AgentOptions(
            address,
            NodeIdentity(node_id, bind_address="127.0.0.1"),
            cache_dir=cache_dir,
            delta=delta,
            connect_timeout=15.0,
            backoff=fast_backoff,
        )
    )


def child_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root}


BOOKINFO_WORKLOADS = {
    "productpage-v1": 9201,
    "details-v1": 9202,
    "reviews-v1": 9211,
    "reviews-v2": 9212,
    "reviews-v3": 9213,
    "ratings-v1": 9221,
}
"""The bookinfo example's workloads and the ports it gives them."""


def bookinfo_config(
    tmp_path: Path, running: dict[str, Backend], port: int, gateway_port: int = 8080
) -> Path:
    """The bookinfo example, its services on ``port``, its workloads on ``running``'s ports."""
    config = copy_example("bookinfo", tmp_path)
    for name in ("services.yaml", "routing.yaml"):
        path = config / name
        text = path.read_text().replace("port: 9080", f"port: {port}")
        text = text.replace("number: 9080", f"number: {port}")
        path.write_text(text.replace("number: 8080", f"number: {gateway_port}"))
    workloads = config / "workloads.yaml"
    text = workloads.read_text()
    for name, example_port in BOOKINFO_WORKLOADS.items():
        text = text.replace(f"http: {example_port}", f"http: {running[name].port}")
    workloads.write_text(text)
    return config
