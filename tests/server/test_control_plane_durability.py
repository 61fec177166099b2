"""ControlPlane: nothing lost across restarts, withdrawals and models that do not translate."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from structlog.testing import capture_logs

from controlplane.errors import InconsistentSnapshotError
from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions
from controlplane.server.grpc_server import XdsServerOptions
from controlplane.translate import ProxyClass, ProxyRole
from controlplane.translate.resources import CLUSTER_TYPE
from controlplane.translate.translator import Translator
from controlplane.xds import CLUSTER, Snapshot
from tests.server.support import MiB, eventually, read

HELLO = Path(__file__).parents[2] / "examples" / "hello-world" / "hello.yaml"

SIDECAR = base_pb2.Node(id="sidecar~10.0.0.1~app-1.default~default.svc.cluster.local")
GATEWAY = base_pb2.Node(id="gateway-1")
GATEWAY.metadata.update({"pilotfish.io/role": "gateway", "labels": {"istio": "ingressgateway"}})


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    root = tmp_path / "config"
    root.mkdir()
    shutil.copy(HELLO, root / "hello.yaml")
    return root


def plane_for(config_dir: Path, **options: Any) -> ControlPlane:
    return ControlPlane(
        ControlPlaneOptions(
            config_dir,
            xds_address="127.0.0.1:0",
            debounce=0.05,
            settle=0.01,
            max_delay=0.2,
            **options,
        )
    )


def versions(plane: ControlPlane, node: base_pb2.Node) -> Mapping[str, str]:
    return dict(plane.cache.snapshot_for(node)[1].versions)


async def test_a_restart_after_a_rejected_edit_serves_exactly_the_same_versions(
    config_dir: Path, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    before = plane_for(config_dir, state_dir=state_dir)
    await before.start()
    try:
        served = {"sidecar": versions(before, SIDECAR), "gateway": versions(before, GATEWAY)}
        hello = config_dir / "hello.yaml"
        hello.write_text(hello.read_text().replace("  ports:\n", "  prots:\n", 1))
        await eventually(lambda: any(d.code == "PF110" for d in before.store.diagnostics))
        assert {"sidecar": versions(before, SIDECAR), "gateway": versions(before, GATEWAY)} == (
            served
        )
    finally:
        await before.stop(grace=0.1)

    with capture_logs() as logs:
        after = plane_for(config_dir, state_dir=state_dir)
        await after.start()
    try:
        assert {"sidecar": versions(after, SIDECAR), "gateway": versions(after, GATEWAY)} == (
            served
        )
        assert [e["file"] for e in logs if e["event"] == "config_stale_served"] == ["hello.yaml"]
    finally:
        await after.stop(grace=0.1)

    # Without the record, the broken file gives nothing (as before there was one).
    fresh = plane_for(config_dir)
    await fresh.start()
    try:
        assert fresh.store.mesh.services == ()
        assert versions(fresh, SIDECAR) != served["sidecar"]
    finally:
        await fresh.stop(grace=0.1)


async def test_a_directory_emptied_and_refilled_within_the_grace_publishes_nothing(
    config_dir: Path,
) -> None:
    plane = plane_for(config_dir, withdraw_grace=0.4)
    await plane.start()
    published: list[str] = []
    try:
        served = versions(plane, SIDECAR)
        plane.cache.add_listener(lambda key, snapshot: published.append(key))
        text = (config_dir / "hello.yaml").read_text()
        with capture_logs() as logs:
            shutil.rmtree(config_dir)
            config_dir.mkdir()
            await eventually(lambda: any(e["event"] == "config_withdrawal_held" for e in logs))
            (config_dir / "hello.yaml").write_text(text)
            await eventually(lambda: any(e["event"] == "config_withdrawal_cancelled" for e in logs))
            await asyncio.sleep(0.6)  # past the grace
        assert published == []
        assert versions(plane, SIDECAR) == served
        assert not any(e["event"] == "config_withdrawal_applied" for e in logs)
    finally:
        await plane.stop(grace=0.1)


async def test_a_held_withdrawal_applies_after_the_grace_without_another_file_event(
    config_dir: Path,
) -> None:
    plane = plane_for(config_dir, withdraw_grace=0.3)
    await plane.start()
    try:
        served = versions(plane, SIDECAR)
        with capture_logs() as logs:
            (config_dir / "hello.yaml").unlink()
            await eventually(lambda: any(e["event"] == "config_withdrawal_held" for e in logs))
            assert versions(plane, SIDECAR) == served
            await eventually(lambda: plane.store.mesh.services == ())
        assert versions(plane, SIDECAR) != served
        applied = [e for e in logs if e["event"] == "config_withdrawal_applied"]
        assert [(e["withdrawn"], e["resources"]) for e in applied] == [(7, 7)]
    finally:
        await plane.stop(grace=0.1)


API_ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: api
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports:
  - {number: 443, name: https, protocol: TLS}
"""


def duplicate_clusters_of(
    host: str, monkeypatch: pytest.MonkeyPatch, role: ProxyRole | None = None
) -> None:
    """A translator bug: the cluster of ``host`` comes out twice (as in issue 13)."""
    real = Translator.translate

    def translate(self: Translator, mesh: Any, proxy: ProxyClass) -> dict[str, list[Any]]:
        out = real(self, mesh, proxy)
        if role is not None and proxy.role is not role:
            return out
        twice = [c for c in out[CLUSTER_TYPE] if host in c.name]
        return {**out, CLUSTER_TYPE: [*out[CLUSTER_TYPE], *twice]}

    monkeypatch.setattr(Translator, "translate", translate)


async def test_a_file_that_breaks_translation_is_held_back_and_a_new_sidecar_gets_the_last_good(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    duplicate_clusters_of("api.example.com", monkeypatch)
    plane = plane_for(config_dir)
    await plane.start()
    try:
        good = Snapshot.from_resources(Translator().translate(plane.store.mesh, ProxyClass()))
        with capture_logs() as logs:
            (config_dir / "api.yaml").write_text(API_ENTRY)
            await eventually(lambda: any(d.code == "PF212" for d in plane.store.diagnostics))
        (diagnostic,) = plane.store.diagnostics
        assert (diagnostic.file, diagnostic.line) == ("api.yaml", 1)
        assert diagnostic.message == (
            "the file's resources could not be translated: InconsistentSnapshotError for proxy "
            "class gateway|0.0.0.0|{}: duplicate type.googleapis.com/envoy.config.cluster.v3."
            "Cluster resource name 'outbound|443||api.example.com'; the last good version is served"
        )
        (failed,) = [e for e in logs if e["event"] == "config_translation_failed"]
        assert (failed["file"], failed["resources"]) == ("api.yaml", ["ServiceEntry default/api"])
        assert not any(e["event"] == "snapshot_rejected" for e in logs)

        # A sidecar that connects now, over gRPC, gets the last good configuration.
        options = [("grpc.max_receive_message_length", 16 * MiB)]
        async with grpc.aio.insecure_channel(plane.address, options=options) as channel:
            call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
            request.node.CopyFrom(SIDECAR)
            await call.write(request)
            response = await read(call)
            call.cancel()
        assert response.version_info == good.version(CLUSTER)
        assert "outbound|8080||hello.default.svc.cluster.local" in {
            r.name for r in good.resources(CLUSTER).values()
        }
        assert len(response.resources) == len(good.resources(CLUSTER))
    finally:
        await plane.stop(grace=0.1)


async def test_with_only_gateways_connected_a_change_that_breaks_sidecars_is_held_back(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    duplicate_clusters_of("api.example.com", monkeypatch, role=ProxyRole.SIDECAR)
    plane = plane_for(config_dir)
    await plane.start()
    try:
        served = versions(plane, GATEWAY)
        (config_dir / "api.yaml").write_text(API_ENTRY)
        await eventually(lambda: any(d.code == "PF212" for d in plane.store.diagnostics))
        (diagnostic,) = plane.store.diagnostics
        assert "for proxy class sidecar|0.0.0.0|{}" in diagnostic.message
        assert versions(plane, GATEWAY) == served
        assert plane.cache.snapshot_for(SIDECAR)[1] is not None
    finally:
        await plane.stop(grace=0.1)


async def test_a_proxy_class_that_never_translates_does_not_hold_edits_back(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Translator.translate

    def translate(self: Translator, mesh: Any, proxy: ProxyClass) -> dict[str, list[Any]]:
        if ("evil", "1") in proxy.labels:
            raise ValueError("the translator cannot handle this proxy")
        return real(self, mesh, proxy)

    monkeypatch.setattr(Translator, "translate", translate)
    plane = plane_for(config_dir)
    await plane.start()
    try:
        evil = base_pb2.Node(id="evil-gateway")
        evil.metadata.update({"pilotfish.io/role": "gateway", "labels": {"evil": "1"}})
        with pytest.raises(InconsistentSnapshotError):
            plane.cache.snapshot_for(evil)
        # The class whose first build failed is forgotten at once, so it is not even
        # among the classes verified.
        keys = plane.cache.keys()
        assert 'gateway|0.0.0.0|{"evil":"1"}' not in keys
        (config_dir / "api.yaml").write_text(API_ENTRY)
        await eventually(lambda: plane.store.mesh.service("api.example.com") is not None)
        assert plane.store.diagnostics == ()
    finally:
        await plane.stop(grace=0.1)


async def test_a_model_whose_resources_exceed_the_message_limit_is_held_back(
    config_dir: Path,
) -> None:
    plane = plane_for(config_dir, server=XdsServerOptions(max_message_bytes=16 * 1024))
    await plane.start()
    try:
        served = versions(plane, SIDECAR)
        many = "\n---\n".join(
            API_ENTRY.replace("name: api", f"name: api-{i}").replace("api.example", f"api{i}.ex")
            for i in range(300)
        )
        (config_dir / "many.yaml").write_text(many)
        await eventually(lambda: any(d.code == "PF212" for d in plane.store.diagnostics))
        (diagnostic,) = plane.store.diagnostics
        assert diagnostic.file == "many.yaml"
        assert "more than the 16384-byte message limit (--max-message-bytes)" in (
            diagnostic.message
        )
        assert versions(plane, SIDECAR) == served
    finally:
        await plane.stop(grace=0.1)
