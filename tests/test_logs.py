"""Logging to a destination that fails (a full disk) never stops serving or watching."""

from __future__ import annotations

import asyncio
import errno
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from controlplane import logs
from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions
from controlplane.xds import CLUSTER
from tests.agents.live_support import free_port

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  ports:
  - name: http
    port: 8080
"""


class FullFile:
    """A text file on a disk that is full until ``full`` is set to False."""

    def __init__(self) -> None:
        self.full = True
        self.lines: list[str] = []
        self._pending = ""

    def write(self, text: str) -> int:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._pending += text
        *complete, self._pending = self._pending.split("\n")
        self.lines.extend(complete)
        return len(text)

    def flush(self) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")

    def isatty(self) -> bool:
        return False

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


@pytest.fixture
def full_log() -> Iterator[tuple[FullFile, logs.LogSink]]:
    out = FullFile()
    sink = logs.configure("json", "info", file=out)
    # The command line caches loggers for good; other tests could not capture them then.
    structlog.configure(cache_logger_on_first_use=False)
    yield out, sink
    structlog.reset_defaults()


def test_lines_lost_to_a_full_disk_are_counted_and_reported_once_space_returns(
    full_log: tuple[FullFile, logs.LogSink],
) -> None:
    out, sink = full_log
    log = structlog.get_logger("test")
    for number in range(3):
        log.info("lost", number=number)
    assert (sink.dropped, out.lines) == (3, [])

    out.full = False
    log.info("kept")
    log.info("kept again")

    assert [{k: v for k, v in event.items() if k != "timestamp"} for event in out.events()] == [
        {"event": "log_lines_dropped", "count": 3, "level": "warning"},
        {"event": "kept", "level": "info"},
        {"event": "kept again", "level": "info"},
    ]
    assert sink.dropped == 0


def test_a_closed_log_file_drops_lines_instead_of_raising() -> None:
    out = open("/dev/null", "w")  # noqa: SIM115 - closed on purpose below
    out.close()
    sink = logs.configure("console", "info", file=out)
    structlog.configure(cache_logger_on_first_use=False)
    try:
        structlog.get_logger("test").warning("nowhere to go")
        assert sink.dropped == 1
    finally:
        structlog.reset_defaults()


def sidecar_request() -> Any:
    request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
    request.node.CopyFrom(base_pb2.Node(id="sidecar-1", cluster="app"))
    request.node.metadata.fields["pilotfish.io/role"].CopyFrom(
        struct_pb2.Value(string_value="sidecar")
    )
    return request


def cluster_names(response: Any) -> list[str]:
    names = []
    for resource in response.resources:
        cluster = cluster_pb2.Cluster()
        resource.Unpack(cluster)
        names.append(cluster.name)
    return sorted(names)


async def first_clusters(address: str) -> list[str]:
    async with grpc.aio.insecure_channel(address) as channel:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        await call.write(sidecar_request())
        response = await asyncio.wait_for(call.read(), 5.0)
        call.cancel()
        return cluster_names(response)


async def test_streams_connect_and_edits_apply_while_the_log_disk_is_full(
    tmp_path: Path, full_log: tuple[FullFile, logs.LogSink]
) -> None:
    out, sink = full_log
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="alpha"))
    plane = ControlPlane(
        ControlPlaneOptions(tmp_path, xds_address="127.0.0.1:0", debounce=0.05, settle=0.01)
    )
    await plane.start()
    try:
        before = await first_clusters(plane.address)
        assert any("alpha" in name for name in before)
        reloads = plane.reloads
        (tmp_path / "b.yaml").write_text(SERVICE.format(name="beta"))
        for _ in range(200):
            if plane.reloads > reloads:
                break
            await asyncio.sleep(0.02)
        after = await first_clusters(plane.address)
        assert sorted(set(after) - set(before)) == ["outbound|8080||beta.default.svc.cluster.local"]
        dropped = sink.dropped
        assert dropped > 0
        assert out.lines == []

        out.full = False
        structlog.get_logger("test").info("space_returned")
        assert [(e["event"], e.get("count")) for e in out.events()] == [
            ("log_lines_dropped", dropped),
            ("space_returned", None),
        ]
    finally:
        await plane.stop(grace=0.1)


def clusters_from(address: str, deadline: float) -> list[str]:
    while True:
        try:
            with grpc.insecure_channel(address) as channel:
                stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
                responses = stub.StreamAggregatedResources(iter([sidecar_request()]), timeout=2.0)
                return cluster_names(next(responses))
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_pilotfish_serve_with_stderr_on_dev_full_keeps_serving_and_applying_edits(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="alpha"))
    address = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "controlplane", "serve", "--config-dir", str(tmp_path)]
    with open("/dev/full", "w") as dev_full:
        server = subprocess.Popen(
            [*command, "--xds-address", address, "--admin-address", "off", "--debounce", "20ms"],
            stdout=subprocess.DEVNULL,
            stderr=dev_full,
        )
    try:
        deadline = time.monotonic() + 30
        before = clusters_from(address, deadline)
        assert any("alpha" in name for name in before)
        (tmp_path / "b.yaml").write_text(SERVICE.format(name="beta"))
        while True:
            after = clusters_from(address, deadline)
            if after != before or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert sorted(set(after) - set(before)) == ["outbound|8080||beta.default.svc.cluster.local"]
        assert server.poll() is None
    finally:
        server.terminate()
        assert server.wait(timeout=20) == 0


def test_the_config_version_is_a_digest_of_the_accepted_files_and_their_paths(
    tmp_path: Path,
) -> None:
    from controlplane.config.store import ConfigStore

    (tmp_path / "a.yaml").write_text(SERVICE.format(name="alpha"))
    first = ConfigStore(tmp_path).reload().version
    again = ConfigStore(tmp_path).reload().version
    (tmp_path / "a.yaml").rename(tmp_path / "b.yaml")
    moved = ConfigStore(tmp_path).reload().version
    assert len(first) == 12 and int(first, 16) >= 0
    assert first == again
    assert moved != first


async def test_one_line_per_connect_nack_reload_and_close_with_node_peer_and_config_version(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="alpha"))
    plane = ControlPlane(
        ControlPlaneOptions(tmp_path, xds_address="127.0.0.1:0", debounce=0.05, settle=0.01)
    )
    with structlog.testing.capture_logs() as logged:
        await plane.start()
        try:
            first_version = plane.cache.config_version
            async with grpc.aio.insecure_channel(plane.address) as channel:
                stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
                call = stub.StreamAggregatedResources()
                await call.write(sidecar_request())
                response = await asyncio.wait_for(call.read(), 5.0)
                ack = sidecar_request()
                ack.version_info, ack.response_nonce = response.version_info, response.nonce
                await call.write(ack)
                (tmp_path / "b.yaml").write_text(SERVICE.format(name="beta"))
                pushed = await asyncio.wait_for(call.read(), 10.0)
                nack = sidecar_request()
                nack.version_info, nack.response_nonce = response.version_info, pushed.nonce
                nack.error_detail.message = "cluster beta: refused on purpose"
                await call.write(nack)
                for _ in range(250):
                    if any(e["event"] == "xds_nack" for e in logged):
                        break
                    await asyncio.sleep(0.02)
                call.cancel()
                for _ in range(250):
                    if any(e["event"] == "xds_stream_closed" for e in logged):
                        break
                    await asyncio.sleep(0.02)
        finally:
            await plane.stop(grace=0.1)
    second_version = plane.cache.config_version
    assert second_version != first_version
    [loaded] = [e for e in logged if e["event"] == "config_loaded"]
    reloads = [e["config_version"] for e in logged if e["event"] == "config_reloaded"]
    assert loaded["config_version"] == first_version
    assert reloads == [first_version, second_version]
    stream_events = [e for e in logged if "stream" in e and e["log_level"] != "debug"]
    assert [(e["event"], e["log_level"]) for e in stream_events] == [
        ("xds_stream_connected", "info"),
        ("xds_nack", "warning"),
        ("xds_stream_closed", "info"),
    ]
    assert {(e["node_id"], e["peer"].startswith("ipv4:127.0.0.1:")) for e in stream_events} == {
        ("sidecar-1", True)
    }
    assert [e["config_version"] for e in stream_events[:2]] == [first_version, second_version]
    assert stream_events[1]["error_detail"] == "cluster beta: refused on purpose"
    assert [e["log_level"] for e in logged if e["event"] == "xds_ack"] == ["debug"]


async def test_the_startup_line_names_the_resources_of_a_file_broken_with_no_last_good_version(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.yaml").write_text(SERVICE.format(name="alpha"))
    (tmp_path / "b.yaml").write_text(
        SERVICE.format(name="beta")
        + "---\n"
        + SERVICE.format(name="gamma").replace("spec:", "spec:\n  bogus: 1", 1)
    )
    plane = ControlPlane(
        ControlPlaneOptions(tmp_path, xds_address="127.0.0.1:0", admin_address=None)
    )
    with structlog.testing.capture_logs() as logged:
        await plane.start()
        await plane.stop(grace=0.1)
    [loaded] = [e for e in logged if e["event"] == "config_loaded"]
    assert loaded["errors"] == 1
    assert loaded["not_loaded"] == {"b.yaml": ["Service default/gamma"]}
