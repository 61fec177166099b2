"""The agent process's memory stays flat under large bodies and abrupt disconnects.

A real ``pilotfish serve`` and a real agent process (uvloop, as shipped) in front of a backend
that streams: a 50 MB chunked upload goes through, a 50 MB download goes through, clients hang
up mid-upload and the backend hangs up mid-response. The agent's resident memory, read from
``/proc``, must not grow by more than a fraction of one body: nothing is buffered whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.agents.live_support import HOST, eventually, free_port, serve
from tests.agents.test_live_processes import ready, start_agent

MB = 1024 * 1024
BODY = 50 * MB
BLOCK = 64 * 1024
GROWTH_CEILING = 16 * MB


def resident(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def read_chunked(reader: asyncio.StreamReader) -> int:
    """Read and discard a chunked body; return its length."""
    total = 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return total
        remaining = size
        while remaining:
            block = await reader.read(min(remaining, BLOCK))
            if not block:  # the agent hung up mid-chunk: end, not a busy loop on EOF
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(block)
        await reader.readexactly(2)
        total += size


async def stream_backend(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).lower()
            path = head.split(b" ", 2)[1]
            if head.startswith(b"post"):
                received = await read_chunked(reader)
                body = str(received).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
            elif path == b"/big":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % BODY)
                block = b"d" * BLOCK
                for _ in range(BODY // BLOCK):
                    writer.write(block)
                    await writer.drain()
            else:  # /cut: promise 10 MB, send 1 MB, hang up
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (10 * MB))
                writer.write(b"c" * MB)
                await writer.drain()
                writer.close()
                return
            await writer.drain()
    writer.close()


def mesh(port: int, backend_port: int) -> str:
    return (
        "apiVersion: v1\nkind: Service\nmetadata: {name: hello, namespace: default}\n"
        f"spec:\n  selector: {{app: hello}}\n  ports:\n  - {{name: http, port: {port}}}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n"
        "metadata: {name: hello-1, namespace: default}\n"
        f"spec:\n  address: 127.0.0.1\n  labels: {{app: hello}}\n"
        f"  ports: {{http: {backend_port}}}\n"
    )


@contextlib.asynccontextmanager
async def agent_in_front_of_a_streaming_backend(tmp_path: Path) -> AsyncIterator[tuple[int, int]]:
    backend = await asyncio.start_server(stream_backend, "127.0.0.1", 0)
    port = free_port()
    config = tmp_path / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(mesh(port, backend.sockets[0].getsockname()[1]))
    served = serve(config, tmp_path)
    admin = free_port()
    agent = start_agent(served.address, admin, tmp_path / "cache", tmp_path / "agent.log")
    try:
        await eventually(lambda: ready(admin), timeout=20)
        yield port, agent.pid
    finally:
        if agent.poll() is None:
            os.kill(agent.pid, signal.SIGKILL)
            agent.wait(5)
        served.kill()
        backend.close()


async def chunked_upload(port: int, size: int, *, hang_up_after: int | None = None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST /upload HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n".encode()
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
    block = b"u" * BLOCK
    sent = 0
    while sent < size:
        writer.write(b"%x\r\n%s\r\n" % (len(block), block))
        await writer.drain()
        sent += len(block)
        if hang_up_after is not None and sent >= hang_up_after:
            writer.transport.abort()
            return b""
    writer.write(b"0\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    body = await reader.readexactly(length)
    writer.close()
    assert head.startswith(b"HTTP/1.1 200")
    return body


async def download(port: int, path: str) -> tuple[bytes, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    total = 0
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(BLOCK):
            total += len(chunk)
            if total >= BODY and path == "/big":
                break
    writer.close()
    return head, total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
async def test_the_agent_stays_flat_through_50_mb_bodies_and_abrupt_disconnects(
    tmp_path: Path,
) -> None:
    async with agent_in_front_of_a_streaming_backend(tmp_path) as (port, pid):
        # Warm up every path once, so that what is measured next is growth, not first use.
        assert await chunked_upload(port, MB) == str(MB).encode()
        await download(port, "/cut")
        before = resident(pid)

        assert await chunked_upload(port, BODY) == str(BODY).encode()
        head, received = await download(port, "/big")
        assert head.startswith(b"HTTP/1.1 200") and received == BODY
        for _ in range(5):
            await chunked_upload(port, BODY, hang_up_after=4 * MB)
        for _ in range(5):
            head, received = await download(port, "/cut")
            assert head.startswith(b"HTTP/1.1 200") and received < 10 * MB
        assert await chunked_upload(port, MB) == str(MB).encode()

        assert resident(pid) - before < GROWTH_CEILING
