"""The agent runtime over its xDS client: table, listeners, cache, start-up failures."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agents.agent import Agent, AgentOptions, AgentStartError
from agents.cache import ConfigCache
from agents.errors import ConfigRejected
from agents.node import NodeIdentity
from agents.xds_client import Resources
from controlplane.server.control_plane import ControlPlane
from controlplane.xds import CLUSTER, LISTENER
from tests.agents.xds_support import (
    TYPES,
    FakeTable,
    copy_example,
    eventually,
    fast_backoff,
    names,
    start_plane,
)

NODE = NodeIdentity("agent-1")


@dataclass
class FakeBuilder:
    calls: list[tuple[FakeTable, FakeTable | None]] = field(default_factory=list)
    fail: Exception | None = None
    failures: int = -1
    """How many calls fail with ``fail`` (-1: all)."""

    def __call__(
        self,
        resources: Resources,
        previous: Any | None = None,
        *,
        versions: Mapping[str, str] | None = None,
    ) -> FakeTable:
        if self.fail is not None and self.failures != 0:
            self.failures -= 1
            raise self.fail
        table = FakeTable(
            {url: dict(resources[url]) for url in TYPES}, versions=dict(versions or {})
        )
        self.calls.append((table, previous))
        return table


@dataclass
class FakeListeners:
    tables: list[FakeTable] = field(default_factory=list)
    closed: bool = False
    refuse: Exception | None = None

    async def apply(self, table: FakeTable) -> None:
        if self.refuse is not None and table.resources[LISTENER]:
            raise self.refuse
        self.tables.append(table)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    plane = await start_plane(copy_example("bookinfo", tmp_path))
    yield plane
    await plane.stop(0.1)


def options(server: str, cache_dir: Path | None = None, **kwargs: Any) -> AgentOptions:
    return AgentOptions(server, NODE, cache_dir=cache_dir, backoff=fast_backoff, **kwargs)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def complete(listeners: FakeListeners) -> bool:
    return bool(listeners.tables) and all(listeners.tables[-1].resources[url] for url in TYPES)


async def test_agent_builds_on_the_previous_table_hands_it_to_listeners_and_caches_it(
    plane: ControlPlane, tmp_path: Path
) -> None:
    builder, listeners = FakeBuilder(), FakeListeners()
    agent = Agent(
        options(plane.address, tmp_path / "cache"), build_table=builder, listeners=listeners
    )
    await agent.start()
    try:
        await eventually(lambda: complete(listeners))
    finally:
        await agent.close()
    assert listeners.closed
    assert [previous for _, previous in builder.calls] == [None, *listeners.tables[:-1]]
    assert agent.table is listeners.tables[-1]
    assert agent.table.versions == {url: held.version for url, held in agent.held.types.items()}
    assert all(agent.table.versions.values())
    cached = ConfigCache(tmp_path / "cache", NODE.fingerprint()).load()
    assert cached == agent.held
    assert names(cached.resources()) == names(listeners.tables[-1].resources)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_agent_restarted_with_the_control_plane_down_serves_from_its_cache_at_once(
    tmp_path: Path, delta: bool
) -> None:
    config = copy_example("bookinfo", tmp_path)
    plane = await start_plane(config)
    port = plane.port
    first = FakeListeners()
    agent = Agent(
        options(plane.address, tmp_path / "cache", delta=delta),
        build_table=FakeBuilder(),
        listeners=first,
    )
    await agent.start()
    await eventually(lambda: complete(first))
    held = agent.held
    await agent.close()
    await plane.stop(0.1)

    listeners = FakeListeners()
    again = Agent(
        options(f"127.0.0.1:{port}", tmp_path / "cache", connect_timeout=0.2, delta=delta),
        build_table=FakeBuilder(),
        listeners=listeners,
    )
    restated: list[Any] = []
    reconnect = again.client.core.reconnect

    def recording_reconnect() -> list[Any]:
        restated.append(reconnect())
        return restated[-1]

    again.client.core.reconnect = recording_reconnect  # type: ignore[method-assign]
    await again.start()  # no error: the cache is in force, the control plane is unreachable
    try:
        assert len(listeners.tables) == 1
        assert names(listeners.tables[0].resources) == names(first.tables[-1].resources)
        # The control plane comes back with the same configuration: nothing is applied again.
        with capture_logs() as logs:
            plane = await start_plane(config, f"127.0.0.1:{port}")
            await eventually(lambda: any(e["event"] == "xds_stream_connected" for e in logs))
        if not delta:  # SotW resends routes and endpoints, which the agent finds unchanged
            await eventually(lambda: again.client.stats.responses == 2)
            assert again.client.stats.acks == 2
        assert len(listeners.tables) == 1
    finally:
        await again.close()
        await plane.stop(0.1)
    assert again.held == held
    first_requests = {request.type_url: request for request in restated[-1]}
    assert list(first_requests) == list(TYPES)
    for url, request in first_requests.items():
        if delta:
            assert dict(request.initial_resource_versions) == held.types[url].resource_versions
        else:
            assert request.version_info == held.types[url].version


async def test_start_without_cache_and_no_control_plane_fails_with_one_clear_error(
    tmp_path: Path,
) -> None:
    address = f"127.0.0.1:{closed_port()}"
    listeners = FakeListeners()
    agent = Agent(
        options(address, tmp_path / "cache", connect_timeout=0.3),
        build_table=FakeBuilder(),
        listeners=listeners,
    )
    with pytest.raises(AgentStartError) as caught:
        await agent.start()
    assert str(caught.value).startswith(
        f"no configuration from the xDS server {address} within 0.3s and none cached (UNAVAILABLE: "
    )
    assert listeners.closed


@pytest.mark.parametrize(
    ("refusal", "message"),
    [
        (OSError(98, "Address already in use"), "cannot open a listener: [Errno 98] Address "),
        (
            ConfigRejected("Listener l", "address", "cannot listen: [Errno 98] Address in use"),
            "Listener l: address: cannot listen: [Errno 98] Address in use",
        ),
    ],
)
async def test_a_listener_port_taken_at_start_fails_the_start(
    plane: ControlPlane, refusal: Exception, message: str
) -> None:
    listeners = FakeListeners(refuse=refusal)
    agent = Agent(options(plane.address), build_table=FakeBuilder(), listeners=listeners)
    with pytest.raises(AgentStartError) as caught:
        await agent.start()
    assert str(caught.value).startswith(message)
    assert all(not table.resources[LISTENER] for table in listeners.tables)


async def test_a_table_builder_crash_is_nacked_and_named(plane: ControlPlane) -> None:
    agent = Agent(
        options(plane.address, connect_timeout=0.5),
        build_table=FakeBuilder(fail=RuntimeError("boom")),
        listeners=FakeListeners(),
    )
    with capture_logs() as logs, pytest.raises(AgentStartError):
        await agent.start()
    nacks = {(e["type"], e["error_detail"]) for e in logs if e["event"] == "xds_nack"}
    assert nacks == {("CDS", "agent: table: RuntimeError: boom")}


async def test_config_rejected_by_the_builder_is_nacked_with_its_own_text(
    plane: ControlPlane,
) -> None:
    rejection = ConfigRejected("Cluster x", "lb_policy", "MAGLEV is not supported")
    agent = Agent(
        options(plane.address, connect_timeout=0.5),
        build_table=FakeBuilder(fail=rejection),
        listeners=FakeListeners(),
    )
    with capture_logs() as logs, pytest.raises(AgentStartError):
        await agent.start()
    nacks = {(e["type"], e["error_detail"]) for e in logs if e["event"] == "xds_nack"}
    assert nacks == {("CDS", "Cluster x: lb_policy: MAGLEV is not supported")}
    assert CLUSTER not in {url for url in agent.held.types}


async def test_a_cache_the_table_builder_refuses_is_dropped_and_the_agent_starts_fresh(
    plane: ControlPlane, tmp_path: Path
) -> None:
    first = Agent(
        options(plane.address, tmp_path / "cache"),
        build_table=FakeBuilder(),
        listeners=FakeListeners(),
    )
    await first.start()
    await first.close()
    refusing_once = FakeBuilder(
        fail=ConfigRejected("Cluster a", "lb_policy", "no longer"), failures=1
    )
    listeners = FakeListeners()
    again = Agent(
        options(plane.address, tmp_path / "cache"), build_table=refusing_once, listeners=listeners
    )
    with capture_logs() as logs:
        await again.start()
    await again.close()
    assert [e["error_detail"] for e in logs if e["event"] == "agent_cache_rejected"] == [
        "Cluster a: lb_policy: no longer"
    ]
    assert complete(listeners)


async def test_a_cached_listener_port_taken_fails_the_start(tmp_path: Path) -> None:
    config = copy_example("bookinfo", tmp_path)
    plane = await start_plane(config)
    first = Agent(
        options(plane.address, tmp_path / "cache"),
        build_table=FakeBuilder(),
        listeners=FakeListeners(),
    )
    try:
        await first.start()
    finally:
        await first.close()
        await plane.stop(0.1)
    refusal = ConfigRejected("Listener l", "address", "cannot listen: [Errno 98] in use")
    again = Agent(
        options(f"127.0.0.1:{closed_port()}", tmp_path / "cache", connect_timeout=5.0),
        build_table=FakeBuilder(),
        listeners=FakeListeners(refuse=refusal),
    )
    with pytest.raises(AgentStartError) as caught:
        await again.start()
    assert str(caught.value) == "Listener l: address: cannot listen: [Errno 98] in use"
