"""A real Envoy: CSDS reports its config status, and an update it refuses shows in ``status``,
in ``/metrics`` and on the dashboard.

Envoy NACKs a listener it cannot bind; a Service added on a port another
socket holds is such a listener. ``pilotfish status`` then names the NACK and
Envoy's reason, and CSDS reports the listener type as ``ERROR``/``NACKED``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc

from controlplane.demo.envoy import sidecar_metadata
from controlplane.xds.types import CLUSTER, LISTENER
from tests.agents.live_support import free_port
from tests.interop.conftest import ControlPlaneThread, start_envoy, write_text

pytestmark = pytest.mark.slow


def service(name: str, port: int) -> str:
    return f"""apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: {port}, targetPort: 9}}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}-1, namespace: default}}
spec: {{address: 127.0.0.1, labels: {{app: {name}}}, ports: {{http: 9}}}}
"""


def pilotfish_status(port: int, *flags: str) -> str:
    command = [sys.executable, "-m", "controlplane", "status", "--server", f"127.0.0.1:{port}"]
    done = subprocess.run(
        [*command, *flags], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout


def status(port: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(pilotfish_status(port, "-o", "json"))
    return data


def wait_until(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_envoy_nack_shows_in_status_and_csds_reports_its_config(
    envoy_binary: str, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    alpha = free_port()
    write_text(config / "a.yaml", service("alpha", alpha))
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    with ControlPlaneThread(config, admin_address="127.0.0.1:0") as plane:
        envoy = start_envoy(envoy_binary, tmp_path, plane.port, "sidecar", sidecar_metadata())
        try:

            def synced() -> dict[str, Any] | None:
                proxies = status(plane.port)["proxies"]
                if proxies and all(t["state"] == "SYNCED" for t in proxies[0]["types"].values()):
                    return dict(proxies[0])
                return None

            proxy = wait_until(synced)
            assert proxy["node_id"] == envoy.node_id
            assert (proxy["role"], proxy["protocol"]) == ("sidecar", "sotw")

            with grpc.insecure_channel(f"127.0.0.1:{plane.port}") as channel:
                stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
                [client] = stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=10).config
            assert client.node.id == envoy.node_id
            clusters = {
                e.name: (e.config_status, e.client_status)
                for e in client.generic_xds_configs
                if e.type_url == CLUSTER
            }
            assert clusters[f"outbound|{alpha}||alpha.default.svc.cluster.local"] == (
                csds_pb2.SYNCED,
                3,  # ACKED
            )

            write_text(config / "b.yaml", service("beta", taken))

            def nacked() -> dict[str, Any] | None:
                lds = status(plane.port)["proxies"][0]["types"]["LDS"]
                return dict(lds) if lds["state"] == "NACKED" else None

            lds = wait_until(nacked)
            assert lds["acked"] != lds["sent"]
            assert f"127.0.0.1:{taken}" in lds["nack"]["message"]
            assert "ddress already in use" in lds["nack"]["message"]

            table = pilotfish_status(plane.port)
            assert f"{envoy.node_id} LDS NACKED at " in table

            with grpc.insecure_channel(f"127.0.0.1:{plane.port}") as channel:
                stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
                [client] = stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=10).config
            listeners = [e for e in client.generic_xds_configs if e.type_url == LISTENER]
            assert {(e.config_status, e.client_status) for e in listeners} == {(csds_pb2.ERROR, 4)}
            assert "ddress already in use" in listeners[0].error_state.details

            assert plane.plane.http_admin is not None
            admin = f"http://{plane.plane.http_admin.address}"
            with urllib.request.urlopen(f"{admin}/metrics", timeout=10) as response:
                metrics = response.read().decode()
            [nacks] = [
                line
                for line in metrics.splitlines()
                if line.startswith("pilotfish_xds_nacks_total")
            ]
            assert nacks.startswith('pilotfish_xds_nacks_total{type="LDS"} ')
            assert float(nacks.rsplit(" ", 1)[1]) >= 1
            with urllib.request.urlopen(f"{admin}/dashboard/state", timeout=10) as response:
                shown = json.loads(response.read())["proxies"]
            assert (shown["total"], shown["states"]) == (1, {"NACKED": 1})
            [row] = shown["proxies"]
            assert (row["node_id"], row["types"]["LDS"]["state"]) == (envoy.node_id, "NACKED")
            assert row["types"]["LDS"]["nack"]["message"] == lds["nack"]["message"]
        finally:
            envoy.stop()
            holder.close()
