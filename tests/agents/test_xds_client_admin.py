"""The agent's admin endpoint: /ready and /config_dump, and a taken admin port at start."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.admin import AdminServer
from agents.agent import Agent, AgentOptions, AgentStartError
from agents.cache import HeldConfig, TypeConfig
from agents.node import NodeIdentity
from controlplane.server.control_plane import ControlPlane
from controlplane.xds import CLUSTER, ENDPOINT
from tests.agents.test_xds_client_agent import FakeBuilder, FakeListeners
from tests.agents.xds_support import copy_example, fast_backoff, start_plane
from tests.xds.resources import eds_cluster, load_assignment


async def fetch(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    writer.write_eof()
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


async def get(port: int, path: str) -> tuple[int, bytes]:
    answer = await fetch(port, f"GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


@pytest.fixture
async def admin() -> AsyncIterator[tuple[AdminServer, list[bool], list[HeldConfig]]]:
    ready, held = [False], [HeldConfig()]
    server = AdminServer("127.0.0.1:0", lambda: ready[0], lambda: held[0])
    await server.start()
    yield server, ready, held
    await server.close()


async def test_ready_is_503_until_a_configuration_is_in_force(
    admin: tuple[AdminServer, list[bool], list[HeldConfig]],
) -> None:
    server, ready, _ = admin
    assert await get(server.port, "/ready") == (503, b"no configuration applied yet\n")
    ready[0] = True
    assert await get(server.port, "/ready") == (200, b"ready\n")


async def test_config_dump_lists_resources_with_their_versions(
    admin: tuple[AdminServer, list[bool], list[HeldConfig]],
) -> None:
    server, _, held = admin
    held[0] = HeldConfig(
        {
            ENDPOINT: TypeConfig("e1", {"a": load_assignment("a", "10.0.0.1:80")}, {"a": "h"}),
            CLUSTER: TypeConfig("c1", {"a": eds_cluster("a")}),
        }
    )
    status, body = await get(server.port, "/config_dump")
    dump = json.loads(body)
    assert status == 200
    assert list(dump) == ["CDS", "EDS"]
    assert dump["CDS"]["version"] == "c1"
    assert [
        (r["name"], r["resource"]["type"], "version" in r) for r in dump["CDS"]["resources"]
    ] == [("a", "EDS", False)]
    (endpoints,) = dump["EDS"]["resources"]
    assert (endpoints["name"], endpoints["version"]) == ("a", "h")
    assert endpoints["resource"]["cluster_name"] == "a"


async def test_unknown_paths_methods_and_garbage_get_no_crash(
    admin: tuple[AdminServer, list[bool], list[HeldConfig]],
) -> None:
    server, _, _ = admin
    assert (await get(server.port, "/nope"))[0] == 404
    answer = await fetch(server.port, b"POST /ready HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 405 ")
    assert await fetch(server.port, b"x" * 10_000) == b""
    assert await fetch(server.port, b"GET /ready HT") == b""
    assert (await get(server.port, "/ready"))[0] == 503


async def test_a_taken_admin_port_fails_the_start_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listeners = FakeListeners()
        agent = Agent(
            AgentOptions(
                "127.0.0.1:1",
                NodeIdentity("a"),
                admin_address=f"127.0.0.1:{port}",
                backoff=fast_backoff,
            ),
            build_table=FakeBuilder(),
            listeners=listeners,
        )
        with pytest.raises(AgentStartError) as caught:
            await agent.start()
    assert str(caught.value) == f"cannot serve admin on 127.0.0.1:{port}: Address already in use"
    assert listeners.tables == [] and listeners.closed


async def test_agent_admin_reports_ready_and_dumps_what_it_applied(tmp_path: Path) -> None:
    plane: ControlPlane = await start_plane(copy_example("bookinfo", tmp_path))
    agent = Agent(
        AgentOptions(
            plane.address, NodeIdentity("a"), admin_address="127.0.0.1:0", backoff=fast_backoff
        ),
        build_table=FakeBuilder(),
        listeners=FakeListeners(),
    )
    try:
        await agent.start()
        assert agent.admin is not None
        assert await get(agent.admin.port, "/ready") == (200, b"ready\n")
        dump = json.loads((await get(agent.admin.port, "/config_dump"))[1])
    finally:
        await agent.close()
        await plane.stop(0.1)
    assert {kind: part["version"] for kind, part in dump.items()} == {
        "CDS": agent.held.types[CLUSTER].version,
        "EDS": agent.held.types[ENDPOINT].version,
        "LDS": agent.held.types[
            next(u for u in agent.held.types if u.endswith("Listener"))
        ].version,
        "RDS": agent.held.types[
            next(u for u in agent.held.types if u.endswith("RouteConfiguration"))
        ].version,
    }
    assert [r["name"] for r in dump["LDS"]["resources"]] == ["127.0.0.1_9080"]
    filters = dump["LDS"]["resources"][0]["resource"]["filter_chains"][0]["filters"]
    assert filters[0]["typed_config"]["rds"]["route_config_name"] == "9080"
