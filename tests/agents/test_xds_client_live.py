"""A real agent (table, listeners) on a live control plane: it keeps serving without one.

Runs once the forwarding table and listener manager are present.
"""

from __future__ import annotations

import asyncio
import http.client
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.importorskip("agents.table")
pytest.importorskip("agents.listeners")

from agents.agent import Agent, AgentOptions
from agents.node import NodeIdentity
from tests.agents.live_support import free_port
from tests.agents.xds_support import eventually, fast_backoff, start_plane

MESH = """\
apiVersion: v1
kind: Service
metadata:
  name: hello
  namespace: default
spec:
  selector:
    app: hello
  ports:
  - name: http
    port: {service_port}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: hello-1
  namespace: default
spec:
  address: 127.0.0.1
  labels:
    app: hello
  ports:
    http: {backend_port}
"""


async def answer_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    server = await asyncio.start_server(answer_hello, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def get(port: int) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": "hello.default.svc.cluster.local"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


async def test_the_agent_serves_without_a_control_plane_and_restarts_from_its_cache(
    tmp_path: Path, backend: int
) -> None:
    service_port = free_port()
    config = tmp_path / "config"
    config.mkdir()
    (config / "hello.yaml").write_text(MESH.format(service_port=service_port, backend_port=backend))
    plane = await start_plane(config)
    address = plane.address

    def agent() -> Agent:
        return Agent(
            AgentOptions(
                address,
                NodeIdentity("live-1", bind_address="127.0.0.1"),
                cache_dir=tmp_path / "cache",
                connect_timeout=5.0,
                backoff=fast_backoff,
            )
        )

    first = agent()
    try:
        await first.start()
        assert await asyncio.to_thread(get, service_port) == (200, b"hello")
    finally:
        await plane.stop(0.1)  # the control plane goes away: traffic goes on
    try:
        await eventually(lambda: first.client.last_error != "")
        assert await asyncio.to_thread(get, service_port) == (200, b"hello")
    finally:
        await first.close()
    second = agent()  # restarted while the control plane is still down
    try:
        await second.start()
        assert await asyncio.to_thread(get, service_port) == (200, b"hello")
    finally:
        await second.close()
