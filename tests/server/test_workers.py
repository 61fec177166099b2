"""``pilotfish serve --workers``: the guarded port, supervision, admin answers for every worker."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from controlplane.config.state import MANIFEST, StateDir
from controlplane.server.grpc_server import AddressInUseError, check_address
from controlplane.server.peers import LOCAL_ONLY, merge_metrics
from controlplane.server.workers import Backoff, guard
from controlplane.xds.types import CLUSTER
from pilotfish.admin.v1 import admin_pb2, admin_pb2_grpc
from tests.server.test_workers_handover import ROOT, SERVICE, TIMEOUT, serve, stop, wait_for_line


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_healthy_life() -> None:
    backoff = Backoff(first=0.5, most=4.0, healthy_after=60.0)
    delays = [backoff.after_exit(lived=1.0) for _ in range(6)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.after_exit(lived=60.0) == 0.5
    assert backoff.after_exit(lived=1.0) == 1.0


def test_a_guarded_port_is_busy_for_a_lone_server_but_open_to_reuse_port_workers() -> None:
    sockets, port = guard("127.0.0.1:0")
    try:
        assert port > 0
        with pytest.raises(AddressInUseError):
            check_address(f"127.0.0.1:{port}")
        with socket.socket() as worker:
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", port))
            worker.listen()
    finally:
        for sock in sockets:
            sock.close()
    check_address(f"127.0.0.1:{port}")


def test_a_second_guard_on_a_served_port_is_refused() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with pytest.raises(AddressInUseError):
            guard(f"127.0.0.1:{port}")


def test_merged_metrics_carry_every_workers_samples_labelled_by_worker() -> None:
    text = (
        b"# HELP pilotfish_proxies_connected Live xDS streams.\n"
        b"# TYPE pilotfish_proxies_connected gauge\n"
        b'pilotfish_proxies_connected{{role="sidecar"}} {n}\n'
        b"# HELP pilotfish_xds_pushes_total xDS responses sent.\n"
        b"# TYPE pilotfish_xds_pushes_total counter\n"
        b'pilotfish_xds_pushes_total{{type="CDS"}} {n}\n'
    )
    merged = merge_metrics(
        {
            1: text.replace(b"{n}", b"3").replace(b"{{", b"{").replace(b"}}", b"}"),
            0: text.replace(b"{n}", b"2").replace(b"{{", b"{").replace(b"}}", b"}"),
        }
    ).decode()
    assert merged.count("# TYPE pilotfish_proxies_connected gauge") == 1
    assert merged.count("# TYPE pilotfish_xds_pushes_total counter") == 1
    assert 'pilotfish_proxies_connected{role="sidecar",worker="0"} 2.0' in merged
    assert 'pilotfish_proxies_connected{role="sidecar",worker="1"} 3.0' in merged
    assert 'pilotfish_xds_pushes_total{type="CDS",worker="0"} 2.0' in merged
    assert 'pilotfish_xds_pushes_total{type="CDS",worker="1"} 3.0' in merged


def test_a_read_only_state_dir_reads_the_record_and_never_writes(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    writer = StateDir(tmp_path / "state", config)
    writer.save({"a.yaml": ("0" * 64, "x")})
    assert writer.flush(5.0)
    manifest = (tmp_path / "state" / MANIFEST).read_bytes()
    reader = StateDir(tmp_path / "state", config, read_only=True)
    reader.save({"b.yaml": ("1" * 64, "y")})
    assert reader.flush(5.0)
    assert (tmp_path / "state" / MANIFEST).read_bytes() == manifest
    assert sorted(os.listdir(tmp_path / "state" / "files")) == ["0" * 64]
    writer.close()
    reader.close()


# -- a supervisor and its workers, as processes -----------------------------------


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _gone(pids: list[int]) -> bool:
    deadline = time.monotonic() + TIMEOUT
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


async def _spread_proxies(xds: str, run_dir: Path) -> list[str]:
    """Connect proxies, one connection each, until both workers hold some; their node ids."""
    channels: list[grpc.aio.Channel] = []
    calls = []
    nodes: list[str] = []
    try:
        for n in range(64):
            channel = grpc.aio.insecure_channel(
                xds, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            channels.append(channel)
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            calls.append(call)
            node = f"sidecar~10.0.0.{n}~p{n}.default~default.svc.cluster.local"
            nodes.append(node)
            await call.write(
                discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id=node), type_url=CLUSTER)
            )
            response = await asyncio.wait_for(call.read(), TIMEOUT)
            assert response.type_url == CLUSTER
            counts = [len(await _local_proxies(run_dir, i)) for i in (0, 1)]
            if all(counts):
                break
        listing = await _proxies(xds)
        assert sorted(listing) == sorted(nodes)
        on_worker_1 = await _local_proxies(run_dir, 1)
        assert 0 < len(on_worker_1) < len(nodes)
        await _check_admin_answers_for_every_worker(xds, nodes, on_worker_1)
        return nodes
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()


async def _proxies(target: str, local: bool = False) -> list[str]:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        metadata = ((LOCAL_ONLY, "1"),) if local else ()
        response = await stub.ListProxies(
            admin_pb2.ListProxiesRequest(), metadata=metadata, timeout=TIMEOUT
        )
    return [proxy.node_id for proxy in response.proxies]


async def _local_proxies(run_dir: Path, index: int) -> list[str]:
    return await _proxies(f"unix:{run_dir}/w{index}.grpc", local=True)


async def _check_admin_answers_for_every_worker(
    xds: str, nodes: list[str], on_worker_1: list[str]
) -> None:
    async with grpc.aio.insecure_channel(xds) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        status = await stub.GetStatus(admin_pb2.GetStatusRequest(), timeout=TIMEOUT)
        assert sum(c.streams for c in status.proxy_classes) == len(nodes)
        for node in (nodes[0], on_worker_1[0]):
            config = await stub.GetProxyConfig(
                admin_pb2.GetProxyConfigRequest(node_id=node), timeout=TIMEOUT
            )
            assert config.proxy.node_id == node
        csds = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        dump = await csds.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=TIMEOUT)
        assert sorted(c.node.id for c in dump.config) == sorted(nodes)


def _metrics(admin: str) -> str:
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=TIMEOUT) as response:
        text: str = response.read().decode()
    return text


def test_workers_share_one_port_answer_for_each_other_restart_and_die_with_the_supervisor(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "reviews.yaml").write_text(SERVICE.format(name="reviews"))
    supervisor = serve(config, tmp_path / "state", "--workers", "2")
    try:
        admin = wait_for_line(supervisor, r"HTTP admin on http://(\S+)/ ").group(1)
        ready = wait_for_line(
            supervisor,
            r"serving xDS on (\S+) with 2 workers \(pids (\d+), (\d+); run directory (\S+)\)",
        )
        xds, pids, run_dir = (
            ready.group(1),
            [int(ready.group(2)), int(ready.group(3))],
            Path(ready.group(4)),
        )
        # An unrelated serve on the workers' port meets a busy port, as with one process.
        lone = serve(config, tmp_path / "state-2", "--xds-address", xds)
        assert lone.communicate(timeout=60)[1] == (
            f"pilotfish serve: port {xds.rsplit(':', 1)[1]} is already in use on 127.0.0.1; "
            "pick another with --xds-address\n"
        )
        assert lone.returncode == 2

        asyncio.run(_spread_proxies(xds, run_dir))
        metrics = _metrics(admin)
        assert re.search(r'pilotfish_config_version\{version="\w+",worker="0"\} 1.0', metrics)
        assert re.search(r'pilotfish_config_version\{version="\w+",worker="1"\} 1.0', metrics)

        os.kill(pids[1], signal.SIGKILL)
        restarted = wait_for_line(
            supervisor, r"worker 1 \(pid (\d+)\) was killed by signal 9; restarting"
        )
        assert int(restarted.group(1)) == pids[1]
        wait_for_line(supervisor, r"worker 1 serving xDS on ")
        replacement = int((run_dir / "w1.ready").read_text())
        assert replacement != pids[1] and _alive(replacement)

        supervisor.kill()
        supervisor.wait(timeout=TIMEOUT)
        assert _gone([pids[0], replacement])
        assert not run_dir.exists()  # the last worker to stop removed it
    finally:
        stop(supervisor)


def test_sigterm_stops_every_worker_and_the_supervisor_exits_0(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    supervisor = serve(config, tmp_path / "state", "--workers", "2")
    try:
        ready = wait_for_line(
            supervisor, r"with 2 workers \(pids (\d+), (\d+); run directory (\S+)\)"
        )
        pids, run_dir = [int(ready.group(1)), int(ready.group(2))], Path(ready.group(3))
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=TIMEOUT) == 0
        assert _gone(pids)
        assert not run_dir.exists()
    finally:
        stop(supervisor)


def test_workers_0_is_a_usage_error_in_one_line() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "controlplane", "serve", "--config-dir", ".", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert completed.returncode == 2
    assert completed.stderr.splitlines()[-1] == (
        "pilotfish serve: error: argument --workers: '0' is not a positive whole number"
    )


@pytest.mark.parametrize("flag", ["--xds-address", "--admin-address"])
def test_workers_on_a_busy_port_say_so_in_one_line_and_exit_2(tmp_path: Path, flag: str) -> None:
    (tmp_path / "config").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        supervisor = serve(
            tmp_path / "config", tmp_path / "state", "--workers", "2", flag, f"127.0.0.1:{port}"
        )
        _, stderr = supervisor.communicate(timeout=60)
    assert (supervisor.returncode, stderr) == (
        2,
        f"pilotfish serve: port {port} is already in use on 127.0.0.1; pick another with {flag}\n",
    )
