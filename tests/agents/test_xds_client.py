"""The agent's xDS client against a live control plane serving bookinfo, SotW and delta."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agents.errors import ConfigRejected
from agents.node import NodeIdentity
from agents.xds_client import XdsClient
from controlplane.server.control_plane import ControlPlane
from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.agents.xds_support import (
    FORBIDDEN_SERVICE,
    TYPES,
    RecordingSink,
    copy_example,
    eventually,
    fast_backoff,
    names,
    reject_cluster,
    start_plane,
)

NODE = NodeIdentity("agent-1")
FORBIDDEN = "outbound|9080||forbidden.bookinfo.svc.cluster.local"


@pytest.fixture(params=["sotw", "delta"])
def delta(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "delta")


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    plane = await start_plane(copy_example("bookinfo", tmp_path))
    yield plane
    await plane.stop(0.1)


async def run_client(client: XdsClient) -> asyncio.Task[None]:
    return asyncio.create_task(client.run())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def served(plane: ControlPlane) -> dict[str, list[str]]:
    _, snapshot = plane.cache.snapshot_for(NODE.to_node())
    return {url: sorted(snapshot.resources(url)) for url in TYPES}


async def test_receives_lds_cds_rds_eds_of_bookinfo_and_acks_each(
    plane: ControlPlane, delta: bool
) -> None:
    sink = RecordingSink()
    client = XdsClient(plane.address, NODE.to_node(), sink, delta=delta, backoff=fast_backoff())
    task = await run_client(client)
    try:
        await eventually(lambda: sink.current is not None and len(sink.committed) == 4)
        await eventually(lambda: client.stats.acks == 4)
    finally:
        await stop(task)
    assert sink.current is not None
    assert names(sink.current.resources) == served(plane)
    assert sink.current.resources[LISTENER] and sink.current.resources[ROUTE]
    assert (client.stats.responses, client.stats.acks, client.stats.nacks) == (4, 4, 0)
    assert client.core.subscription(CLUSTER) == ["*"]
    assert client.core.subscription(LISTENER) == ["*"]
    assert client.core.subscription(ENDPOINT) == served(plane)[ENDPOINT]
    assert client.core.subscription(ROUTE) == served(plane)[ROUTE]
    assert client.ready.is_set()


async def test_every_apply_receives_all_four_types_held(plane: ControlPlane, delta: bool) -> None:
    sink = RecordingSink()
    client = XdsClient(plane.address, NODE.to_node(), sink, delta=delta, backoff=fast_backoff())
    task = await run_client(client)
    try:
        await eventually(lambda: len(sink.committed) == 4)
    finally:
        await stop(task)
    # Make-before-break order: clusters, their endpoints, listeners, their routes.
    held = [[url for url in TYPES if table.resources[url]] for table in sink.committed]
    assert held == [
        [CLUSTER],
        [CLUSTER, ENDPOINT],
        [CLUSTER, ENDPOINT, LISTENER],
        [CLUSTER, ENDPOINT, LISTENER, ROUTE],
    ]


async def test_rule_05_config_rejected_is_nacked_with_its_text_and_the_old_config_stays(
    plane: ControlPlane, delta: bool
) -> None:
    sink = RecordingSink(reject=reject_cluster("forbidden"))
    client = XdsClient(plane.address, NODE.to_node(), sink, delta=delta, backoff=fast_backoff())
    task = await run_client(client)
    try:
        await eventually(lambda: len(sink.committed) == 4)
        good = sink.current
        good_version = client.held.types[CLUSTER].version
        with capture_logs() as logs:
            (plane.options.config_dir / "forbidden.yaml").write_text(FORBIDDEN_SERVICE)
            await eventually(lambda: any(e["event"] == "xds_nack" for e in logs))
        await eventually(lambda: client.stats.nacks == 1)
        nacks = [e for e in logs if e["event"] == "xds_nack"]
        assert [(e["type"], e["error_detail"]) for e in nacks] == [
            ("CDS", f"Cluster {FORBIDDEN}: lb_policy: MAGLEV is not supported")
        ]
        assert good is not None and sink.current is not None
        # Other types of the same change (the route to it) may apply; the cluster never does.
        assert sorted(sink.current.resources[CLUSTER]) == sorted(good.resources[CLUSTER])
        assert all(FORBIDDEN not in table.resources[CLUSTER] for table in sink.committed)
        assert FORBIDDEN not in client.core.resources(CLUSTER)
        assert client.held.types[CLUSTER].version == good_version
        if not delta:
            assert client.core.version(CLUSTER) == good_version
        assert client.core.last_error(CLUSTER) == (
            f"Cluster {FORBIDDEN}: lb_policy: MAGLEV is not supported"
        )
        # Removing the offending file brings an update the agent accepts again.
        (plane.options.config_dir / "forbidden.yaml").unlink()
        (plane.options.config_dir / "details.yaml").write_text(
            FORBIDDEN_SERVICE.replace("forbidden", "extra")
        )
        await eventually(
            lambda: any("extra" in n for n in (sink.current or good).resources[CLUSTER])
        )
    finally:
        await stop(task)


async def test_rule_10_reconnect_resends_held_versions_and_an_unchanged_config_is_not_reapplied(
    tmp_path: Path, delta: bool
) -> None:
    config = copy_example("bookinfo", tmp_path)
    plane = await start_plane(config)
    address, port = plane.address, plane.port
    sink = RecordingSink()
    client = XdsClient(address, NODE.to_node(), sink, delta=delta, backoff=fast_backoff())
    sent: list[list[Any]] = []
    reconnect = client.core.reconnect

    def recording_reconnect() -> list[Any]:
        requests = reconnect()
        sent.append(requests)
        return requests

    client.core.reconnect = recording_reconnect  # type: ignore[method-assign]
    task = await run_client(client)
    try:
        await eventually(lambda: len(sink.committed) == 4)
        held = client.held
        applied_before = (len(sink.prepared), len(sink.committed))
        await plane.stop(0.1)
        await eventually(lambda: client.last_error != "")
        with capture_logs() as logs:
            plane = await start_plane(config, f"127.0.0.1:{port}")
            await eventually(lambda: any(e["event"] == "xds_stream_connected" for e in logs))
        await eventually(lambda: len(sent) >= 2)
        # Then a real change: everything applied since the restart must contain it.
        (config / "extra.yaml").write_text(FORBIDDEN_SERVICE.replace("forbidden", "extra"))
        extra = FORBIDDEN.replace("forbidden", "extra")
        await eventually(
            lambda: sink.current is not None and extra in sink.current.resources[CLUSTER]
        )
    finally:
        await stop(task)
        await plane.stop(0.1)
    after_restart = sink.prepared[applied_before[0] :]
    assert after_restart and all(extra in t.resources[CLUSTER] for t in after_restart)
    assert all(extra in t.resources[CLUSTER] for t in sink.committed[applied_before[1] :])
    restated = {request.type_url: request for request in sent[1]}
    assert list(restated) == [CLUSTER, ENDPOINT, LISTENER, ROUTE]
    for url, request in restated.items():
        assert request.response_nonce == ""
        if delta:
            assert dict(request.initial_resource_versions) == dict(
                held.types[url].resource_versions
            )
            assert len(request.initial_resource_versions) == len(held.types[url].resources)
        else:
            assert request.version_info == held.types[url].version != ""
    assert sent[1][0].node.id == "agent-1"


async def test_backoff_is_reset_by_a_response(plane: ControlPlane) -> None:
    sink = RecordingSink()
    backoff = fast_backoff()
    client = XdsClient(plane.address, NODE.to_node(), sink, backoff=backoff)
    backoff.next_delay()
    backoff.next_delay()
    task = await run_client(client)
    try:
        await eventually(lambda: client.stats.responses > 0)
    finally:
        await stop(task)
    assert backoff.next_delay() == 0.05


async def test_a_sink_that_cannot_commit_turns_the_ack_into_a_nack_with_the_last_version(
    plane: ControlPlane,
) -> None:
    class FailingCommits(RecordingSink):
        async def commit(self, prepared: Any | None, held: Any) -> None:
            if prepared is not None and prepared.resources[LISTENER]:
                raise OSError(98, "Address already in use")
            await super().commit(prepared, held)

    sink = FailingCommits()
    client = XdsClient(plane.address, NODE.to_node(), sink, backoff=fast_backoff())
    task = await run_client(client)
    try:
        with capture_logs() as logs:
            await eventually(lambda: any(e["event"] == "xds_nack" for e in logs))
    finally:
        await stop(task)
    (nack,) = [e for e in logs if e["event"] == "xds_nack"]
    assert (nack["type"], nack["kept_version"], nack["error_detail"]) == (
        "LDS",
        "",
        "cannot apply LDS: [Errno 98] Address already in use",
    )
    assert all(not t.resources[LISTENER] for t in sink.committed)


def test_unknown_config_rejection_text_is_the_error_detail() -> None:
    assert str(ConfigRejected("Cluster a", "lb_policy", "no")) == "Cluster a: lb_policy: no"
