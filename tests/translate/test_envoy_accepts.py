"""Envoy itself accepts what translation generates (``envoy --mode validate``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import json_format

from controlplane.model import Mesh
from controlplane.translate import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ProxyClass,
    ProxyRole,
    translate,
)
from controlplane.translate.protos import Message
from tests.translate.support import bookinfo_mesh, kitchen_sink_mesh
from tests.translate.test_export_to import exported_mesh

pytestmark = pytest.mark.slow


def envoy_binary() -> str | None:
    found = shutil.which("envoy")
    if found:
        return found
    beside = Path(sys.executable).parent / "envoy"
    return str(beside) if beside.exists() else None


def static_bootstrap(resources: dict[str, list[Message]]) -> Message:
    """The resources as static config: EDS clusters with their endpoints, RDS routes inline."""
    assignments = {a.cluster_name: a for a in resources[ENDPOINT_TYPE]}
    route_configs = {r.name: r for r in resources[ROUTE_TYPE]}
    bootstrap = bootstrap_pb2.Bootstrap(node=base_pb2.Node(id="validate", cluster="validate"))
    for translated in resources[CLUSTER_TYPE]:
        cluster = bootstrap.static_resources.clusters.add()
        cluster.CopyFrom(translated)
        if cluster.type == cluster.EDS:
            cluster.type = cluster.STATIC
            cluster.ClearField("eds_cluster_config")
            cluster.load_assignment.CopyFrom(assignments[cluster.name])
    for translated in resources[LISTENER_TYPE]:
        listener = bootstrap.static_resources.listeners.add()
        listener.CopyFrom(translated)
        for chain in listener.filter_chains:
            for network in chain.filters:
                manager = hcm_pb2.HttpConnectionManager()
                if not network.typed_config.Unpack(manager):
                    continue
                manager.route_config.CopyFrom(route_configs[manager.rds.route_config_name])
                network.typed_config.Pack(manager)
    return bootstrap


MESHES = {"bookinfo": bookinfo_mesh, "kitchen-sink": kitchen_sink_mesh}
PROXIES = {
    "sidecar": ProxyClass(),
    "bookinfo-gateway": ProxyClass(ProxyRole.GATEWAY, (("istio", "ingressgateway"),)),
    "edge-gateway": ProxyClass(ProxyRole.GATEWAY, (("app", "edge"),), "127.0.0.1"),
}


@pytest.mark.parametrize("proxy", PROXIES.values(), ids=PROXIES.keys())
@pytest.mark.parametrize("mesh", MESHES.values(), ids=MESHES.keys())
def test_envoy_validates_the_translated_resources(
    mesh: type[Mesh], proxy: ProxyClass, tmp_path: Path
) -> None:
    envoy = envoy_binary()
    if envoy is None:
        pytest.skip("no envoy binary on PATH or next to the interpreter")
    bootstrap = static_bootstrap(translate(mesh(), proxy))
    path = tmp_path / "bootstrap.json"
    path.write_text(json_format.MessageToJson(bootstrap))
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("namespace", ["shop", "other"])
def test_envoy_validates_what_a_namespace_sees_through_export_to(
    namespace: str, tmp_path: Path
) -> None:
    envoy = envoy_binary()
    if envoy is None:
        pytest.skip("no envoy binary on PATH or next to the interpreter")
    bootstrap = static_bootstrap(translate(exported_mesh(), ProxyClass(namespace=namespace)))
    path = tmp_path / "bootstrap.json"
    path.write_text(json_format.MessageToJson(bootstrap))
    result = subprocess.run(
        [envoy, "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
