"""A proxy moved between servers of one directory: identical versions, nothing resent.

Two independent ``pilotfish serve`` processes (different ports, the same
config directory), and the two workers of one ``serve --workers 2`` reached
on their private sockets. A client (the sans-IO SotW client core driven over
grpc.aio) takes clusters and listeners from the first, moves to the second
with the versions it holds, and the first response the second ever sends it
is the next edit's: what it held was not sent again. Both servers send that
edit with the same version.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane.xds.client import SotwClient
from controlplane.xds.types import CLUSTER, LISTENER
from pilotfish.admin.v1 import admin_pb2, admin_pb2_grpc
from tests.test_logs import SERVICE

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 20.0


def serve(config: Path, state: Path, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controlplane",
            "serve",
            "--config-dir",
            str(config),
            "--state-dir",
            str(state),
            "--xds-address",
            "127.0.0.1:0",
            "--admin-address",
            "127.0.0.1:0",
            "--log-level",
            "warning",
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def wait_for_line(process: subprocess.Popen[str], pattern: str) -> re.Match[str]:
    """The first stderr line matching ``pattern`` (serve prints it once it serves)."""
    assert process.stderr is not None
    for line in process.stderr:
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"serve exited with {process.wait(timeout=TIMEOUT)} before {pattern!r}")


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stderr is not None:
        process.stderr.close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    directory.mkdir()
    (directory / "reviews.yaml").write_text(SERVICE.format(name="reviews"))
    return directory


NODE = base_pb2.Node(id="sidecar~10.0.0.1~reviews-1.default~default.svc.cluster.local")


@contextlib.asynccontextmanager
async def ads(target: str) -> AsyncIterator[tuple[grpc.aio.Channel, Any]]:
    async with grpc.aio.insecure_channel(target) as channel:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        try:
            yield channel, call
        finally:
            call.cancel()


async def send(call: Any, requests: list[discovery_pb2.DiscoveryRequest]) -> None:
    for request in requests:
        await asyncio.wait_for(call.write(request), TIMEOUT)


async def receive(core: SotwClient, call: Any) -> discovery_pb2.DiscoveryResponse:
    """The next response; the core's ACK goes back before it is returned."""
    response = await asyncio.wait_for(call.read(), TIMEOUT)
    assert response is not grpc.aio.EOF, "the server ended the stream"
    await send(call, core.on_response(response))
    return response


async def take_clusters_and_listeners(core: SotwClient, call: Any) -> dict[str, str]:
    await send(call, [core.subscribe(CLUSTER, "*"), core.subscribe(LISTENER, "*")])
    got: dict[str, str] = {}
    while set(got) != {CLUSTER, LISTENER}:
        response = await receive(core, call)
        got[response.type_url] = response.version_info
    return got


async def acked(channel: grpc.aio.Channel, versions: dict[str, str]) -> None:
    """Wait until the server's admin API shows the proxy holding ``versions``, ACKed."""
    stub = admin_pb2_grpc.AdminServiceStub(channel)
    for _ in range(int(TIMEOUT / 0.05)):
        listing = await stub.ListProxies(admin_pb2.ListProxiesRequest(), timeout=TIMEOUT)
        held = {
            sync.type_url: sync.version_acked
            for proxy in listing.proxies
            if proxy.node_id == NODE.id
            for sync in proxy.types
            if sync.state == "SYNCED"
        }
        if all(held.get(url) == version for url, version in versions.items()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the server never showed {versions} as held")


async def move_and_edit(first: str, second: str, config: Path) -> None:
    """Take config from ``first``, resume on ``second``, edit; check what ``second`` sends."""
    core = SotwClient(NODE)
    async with ads(first) as (_, call):
        before = await take_clusters_and_listeners(core, call)
    async with ads(second) as (channel, call), ads(first) as (_, witness_call):
        await send(call, core.reconnect())
        # The second server takes the versions the proxy names as held: SYNCED, nothing sent.
        await acked(channel, before)
        witness = SotwClient(NODE)
        assert await take_clusters_and_listeners(witness, witness_call) == before
        (config / "ratings.yaml").write_text(SERVICE.format(name="ratings"))
        response = await receive(core, call)
        witnessed = await receive(witness, witness_call)
    # The first response on the new stream is the edit, in the version the first server
    # gives it too: the clusters the proxy held were never resent.
    assert response.type_url == CLUSTER
    assert response.version_info != before[CLUSTER]
    assert (witnessed.type_url, witnessed.version_info) == (CLUSTER, response.version_info)
    names = sorted(core.resources(CLUSTER))
    assert [n for n in names if "ratings" in n] == [
        "outbound|8080||ratings.default.svc.cluster.local"
    ]


def test_a_proxy_moved_to_another_serve_of_the_directory_gets_the_same_versions_and_no_resend(
    tmp_path: Path, config: Path
) -> None:
    first = serve(config, tmp_path / "state-a")
    second = serve(config, tmp_path / "state-b")
    try:
        a = wait_for_line(first, r"serving xDS on (\S+)").group(1)
        b = wait_for_line(second, r"serving xDS on (\S+)").group(1)
        assert a != b
        asyncio.run(move_and_edit(a, b, config))
    finally:
        stop(first)
        stop(second)


def test_a_proxy_moved_between_workers_gets_the_same_versions_and_no_resend(
    tmp_path: Path, config: Path
) -> None:
    supervisor = serve(config, tmp_path / "state", "--workers", "2")
    try:
        run_dir = Path(wait_for_line(supervisor, r"run directory (\S+)\)").group(1))
        # The private socket of each worker reaches it alone.
        asyncio.run(move_and_edit(f"unix:{run_dir}/w0.grpc", f"unix:{run_dir}/w1.grpc", config))
    finally:
        stop(supervisor)
