"""ControlPlane wiring that no protocol test sees: housekeeping waits for a due reload,
the default classes verified at start share their serialized resources, also after an edit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2

from controlplane.server import memory
from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions
from controlplane.translate import CLUSTER_TYPE, ENDPOINT_TYPE, ProxyClass, ProxyRole, translate
from controlplane.xds import Snapshot
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
