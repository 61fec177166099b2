"""ControlPlane wiring that no protocol test sees: housekeeping waits for a due reload,
the default classes verified at start share their serialized resources, also after an edit."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane.server import memory
from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions
from controlplane.translate import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    ProxyClass,
    ProxyRole,
    translate,
)
from controlplane.translate import translator as translator_module
from controlplane.translate import upstreams as upstreams_module
from controlplane.translate.endpoints import is_ip
from controlplane.xds import CLUSTER, Snapshot
from tests.server.support import read
from tests.translate.support import kitchen_sink_mesh, reweighted

SIDECAR = ProxyClass()
GATEWAY = ProxyClass(role=ProxyRole.GATEWAY)


async def test_housekeeping_waits_while_a_reload_is_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[int] = []
    monkeypatch.setattr(memory.Housekeeper, "run", staticmethod(lambda: runs.append(1) or 0))
    plane = ControlPlane(
        ControlPlaneOptions(
            tmp_path, xds_address="127.0.0.1:0", debounce=1.0, settle=1.0, max_delay=2.0
        )
    )
    await plane.start()
    try:
        reloads = plane.reloads
        (tmp_path / "a.yaml").write_text("# nothing yet\n")
        await asyncio.sleep(0.3)  # the watcher has seen it; the reload is due in 1 s
        assert plane.reloads == reloads
        assert plane._server is not None
        plane._server.ads.housekeeper.soon()  # due in 0.2 s, but the reload comes first
        await asyncio.sleep(0.5)
        assert (runs, plane.reloads) == ([], reloads)
        for _ in range(100):
            if runs:
                break
            await asyncio.sleep(0.05)
        assert runs == [1]
        assert plane.reloads == reloads + 1
    finally:
        await plane.stop(grace=0.1)


def test_the_default_sidecar_and_gateway_share_each_serialized_cluster_and_assignment(
    tmp_path: Path,
) -> None:
    plane = ControlPlane(ControlPlaneOptions(tmp_path, xds_address="127.0.0.1:0"))
    mesh = kitchen_sink_mesh()
    assert plane._verify(mesh) is None
    assert plane._verified is not None
    built = plane._verified[1]
    assert sorted(built) == sorted(proxy.key for proxy in (GATEWAY, SIDECAR))
    gateway, sidecar = built[GATEWAY.key], built[SIDECAR.key]
    for url in (CLUSTER_TYPE, ENDPOINT_TYPE):
        assert sidecar.resources(url)
        assert all(
            resource is gateway.resources(url)[name]
            for name, resource in sidecar.resources(url).items()
        )
    for proxy, snapshot in ((SIDECAR, sidecar), (GATEWAY, gateway)):
        fresh = Snapshot.from_resources(translate(mesh, proxy))
        assert snapshot.versions == fresh.versions
        for url in fresh.type_urls:
            assert {n: r.value for n, r in snapshot.resources(url).items()} == {
                n: r.value for n, r in fresh.resources(url).items()
            }


def test_after_an_edit_the_default_classes_reuse_every_resource_of_the_unchanged_services(
    tmp_path: Path,
) -> None:
    plane = ControlPlane(ControlPlaneOptions(tmp_path, xds_address="127.0.0.1:0"))
    mesh = kitchen_sink_mesh()
    assert plane._verify(mesh) is None
    assert plane._verified is not None
    before = plane._verified[1]
    target = "web.shop.svc.cluster.local"
    edited = reweighted(mesh, target)
    assert plane._verify(edited) is None
    after = plane._verified[1]
    for proxy in (SIDECAR, GATEWAY):
        old, new = before[proxy.key], after[proxy.key]
        for url in (CLUSTER_TYPE, ENDPOINT_TYPE):
            reused = {
                name for name, r in new.resources(url).items() if r is old.resources(url)[name]
            }
            assert set(new.resources(url)) - reused == {
                name for name in new.resources(url) if name.endswith("|" + target)
            }
        fresh = Snapshot.from_resources(translate(edited, proxy))
        assert new.versions == fresh.versions
        assert new.version(ENDPOINT_TYPE) != old.version(ENDPOINT_TYPE)


def test_once_a_gateway_connects_the_default_gateways_routes_and_listeners_are_dropped(
    tmp_path: Path,
) -> None:
    plane = ControlPlane(ControlPlaneOptions(tmp_path, xds_address="127.0.0.1:0"))
    mesh = kitchen_sink_mesh()
    assert plane._verify(mesh) is None
    assert set(plane._translator._routing) == {SIDECAR.key, GATEWAY.key}
    edge = base_pb2.Node(id="edge-1")
    edge.metadata.update({"pilotfish.io/role": "gateway", "labels": {"app": "edge"}})
    key = plane._classify(edge)
    assert plane._verify(mesh) is None
    assert plane._verified is not None
    assert sorted(plane._verified[1]) == sorted([SIDECAR.key, key])
    assert set(plane._translator._routing) == {SIDECAR.key, key}
    fresh = Snapshot.from_resources(translate(mesh, ProxyClass.from_node(edge)))
    assert plane._verified[1][key].versions == fresh.versions


def _service(index: int, port: int) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata:
  name: svc-{index}
  namespace: default
spec:
  ports:
  - name: http
    port: {port}
"""


async def test_only_the_cold_start_forks_and_a_later_reload_reaches_connected_proxies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forks: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    monkeypatch.setattr(translator_module, "FORK_CHUNK", 1)
    for i in range(6):
        (tmp_path / f"svc-{i}.yaml").write_text(_service(i, 80))
    plane = ControlPlane(ControlPlaneOptions(tmp_path, xds_address="127.0.0.1:0"))
    plane._translator.fork_from = 2
    await plane.start()
    try:
        assert len(forks) == 2  # the cold start's clusters and sidecar routes, before gRPC runs
        assert plane._translator.fork_from is None
        async with grpc.aio.insecure_channel(plane.address) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            call = stub.StreamAggregatedResources()
            await call.write(
                discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="p"), type_url=CLUSTER)
            )
            first = await read(call)
            await call.write(
                discovery_pb2.DiscoveryRequest(
                    type_url=CLUSTER, version_info=first.version_info, response_nonce=first.nonce
                )
            )
            for i in range(6):
                (tmp_path / f"svc-{i}.yaml").write_text(_service(i, 8080))
            await asyncio.get_running_loop().run_in_executor(None, plane.reload)
            assert len(forks) == 2  # every service changed, but gRPC runs now: no fork
            update = await read(call)
            names = set()
            for any_message in update.resources:
                cluster = cluster_pb2.Cluster()
                any_message.Unpack(cluster)
                names.add(cluster.name)
            assert {f"outbound|8080||svc-{i}.default.svc.cluster.local" for i in range(6)} <= names
            assert not any("|80||" in name for name in names)
            call.cancel()
    finally:
        await plane.stop(grace=0.1)
    for pid in forks:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_classes_of_one_view_share_cluster_tables_and_an_edit_of_routes_keeps_them(
    tmp_path: Path,
) -> None:
    plane = ControlPlane(ControlPlaneOptions(tmp_path, xds_address="127.0.0.1:0"))
    mesh = kitchen_sink_mesh()
    assert plane._verify(mesh) is None
    assert plane._verified is not None
    before = plane._verified[1]
    gateway, sidecar = before[GATEWAY.key], before[SIDECAR.key]
    for url in (CLUSTER_TYPE, ENDPOINT_TYPE):
        assert sidecar.resources(url) is gateway.resources(url)
    edited = dataclasses.replace(mesh, virtual_services=mesh.virtual_services[1:])
    assert plane._verify(edited) is None
    after = plane._verified[1]
    assert after[SIDECAR.key].versions != sidecar.versions  # its listeners changed
    for proxy in (SIDECAR, GATEWAY):
        for url in (CLUSTER_TYPE, ENDPOINT_TYPE):
            assert after[proxy.key].resources(url) is before[proxy.key].resources(url)
        fresh = Snapshot.from_resources(translate(edited, proxy))
        assert after[proxy.key].versions == fresh.versions


async def test_housekeeping_packs_texts_and_empties_the_translation_lookups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory.Housekeeper, "run", staticmethod(lambda: 0))
    text = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
        "spec: {selector: {app: web}, ports: [{name: http, port: 80}]}\n---\n"
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: web-0}\n"
        "spec: {address: 10.0.0.1, labels: {app: web}}\n"
    )
    (tmp_path / "web.yaml").write_text(text)
    plane = ControlPlane(ControlPlaneOptions(tmp_path, xds_address="127.0.0.1:0"))
    await plane.start()
    try:
        (version,) = plane.store._state.accepted.values()
        assert version.body == text
        assert is_ip.cache_info().currsize > 0  # the first translation looked the address up
        assert plane._server is not None
        housekeeper = plane._server.ads.housekeeper
        runs = housekeeper.runs
        housekeeper.soon()
        for _ in range(100):
            if housekeeper.runs > runs and isinstance(version.body, bytes):
                break
            await asyncio.sleep(0.05)
        assert isinstance(version.body, bytes)
        assert version.text == text
        assert is_ip.cache_info().currsize == 0
        assert upstreams_module._selects.cache_info().currsize == 0
    finally:
        await plane.stop(grace=0.1)
