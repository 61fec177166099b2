"""Fixtures for interop tests: config directories, a control plane, Envoy processes.

The control plane runs in a background thread with its own event loop, so
that tests (and the admin and HTTP calls they make) can block freely while
Envoy streams its configuration from it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from controlplane.demo.envoy import Envoy, find_envoy, wait_for
from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions
from controlplane.server.grpc_server import XdsServerOptions

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

_node_ids = itertools.count(1)

T = TypeVar("T")


class ControlPlaneThread:
    """A :class:`ControlPlane` serving on ``127.0.0.1:0`` from its own thread and loop."""

    def __init__(
        self,
        config_dir: Path,
        debounce: float = 0.05,
        *,
        load_report_interval: float = 10.0,
        admin_address: str | None = None,
    ) -> None:
        options = ControlPlaneOptions(
            config_dir,
            xds_address="127.0.0.1:0",
            admin_address=admin_address,
            debounce=debounce,
            max_delay=0.5,
            server=XdsServerOptions(load_report_interval=load_report_interval),
        )
        self.plane = ControlPlane(options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="control-plane", daemon=True
        )

    @property
    def port(self) -> int:
        return self.plane.port

    def on_loop(self, call: Callable[[], T]) -> T:
        """``call()`` run on the control plane's loop (its state is not thread-safe)."""

        async def run() -> T:
            return call()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def start(self) -> ControlPlaneThread:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.plane.start(), self._loop).result(30)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.plane.stop(grace=0.5), self._loop).result(30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()

    def __enter__(self) -> ControlPlaneThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def envoy_binary() -> str:
    binary = find_envoy()
    if binary is None:
        pytest.skip("no envoy binary on PATH or next to the interpreter")
    return binary


class ServeProcess:
    """``pilotfish serve`` on ``127.0.0.1:0`` as a child process; :attr:`port` once started."""

    READY = re.compile(r"serving xDS on [^\s]+:(\d+)")

    def __init__(self, config_dir: Path, workdir: Path) -> None:
        self.config_dir = config_dir
        self.log_path = workdir / "pilotfish-serve.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServeProcess:
        command = [sys.executable, "-m", "controlplane", "serve", "--config-dir"]
        command += [str(self.config_dir), "--xds-address", "127.0.0.1:0", "--debounce", "50ms"]
        command += ["--admin-address", "127.0.0.1:0"]
        command += ["--state-dir", str(self.log_path.parent / "pilotfish-state")]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.port = int(wait_for(self._announced_port, timeout, "pilotfish serve to listen"))
        return self

    def _announced_port(self) -> str | None:
        assert self._process is not None
        if self._process.poll() is not None:
            raise AssertionError(f"pilotfish serve exited:\n{self.log()}")
        found = self.READY.search(self.log())
        return found.group(1) if found else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; the exit code."""
        process, self._process = self._process, None
        assert process is not None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        return process.returncode


def start_envoy(
    binary: str, workdir: Path, xds_port: int, name: str, metadata: Mapping[str, Any]
) -> Envoy:
    """A started Envoy on the control plane at ``xds_port`` that reached ``/ready``."""
    envoy = Envoy(binary, workdir, xds_port, node_id=f"{name}-{next(_node_ids)}", metadata=metadata)
    envoy.start()
    try:
        envoy.wait_ready()
    except BaseException:
        envoy.stop()
        raise
    return envoy


# -- config files --------------------------------------------------------------


def load_example(*parts: str) -> list[dict[str, Any]]:
    with (EXAMPLES.joinpath(*parts)).open() as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` atomically, so the watcher never reads a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_docs(path: Path, docs: list[dict[str, Any]]) -> None:
    write_text(path, yaml.safe_dump_all(docs, sort_keys=False))


def read_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def edit_docs(path: Path, kind: str, name: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite ``path`` with ``change`` applied to the spec of the ``kind`` named ``name``."""
    docs = read_docs(path)
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind} {name} not in {path}"
    change(matches[0]["spec"])
    write_docs(path, docs)


def relocate(
    docs: list[dict[str, Any]],
    *,
    service_ports: Mapping[int, int],
    gateway_ports: Mapping[int, int],
    workload_ports: Mapping[str, int],
) -> list[dict[str, Any]]:
    """The example docs moved to free ports: service and gateway ports, workload entry ports.

    ``workload_ports`` maps a WorkloadEntry name to the port of its backend
    (every named port of the entry points there); destination ports in
    VirtualServices follow ``service_ports``.
    """
    for doc in docs:
        spec = doc["spec"]
        kind = doc["kind"]
        if kind == "Service":
            for port in spec["ports"]:
                port["port"] = service_ports[port["port"]]
        elif kind == "WorkloadEntry":
            backend = workload_ports[doc["metadata"]["name"]]
            spec["ports"] = {name: backend for name in spec["ports"]}
        elif kind == "Gateway":
            for server in spec["servers"]:
                server["port"]["number"] = gateway_ports[server["port"]["number"]]
        elif kind == "VirtualService":
            for rule in spec.get("http", []):
                for route in rule.get("route", []):
                    port = route["destination"].get("port")
                    if port is not None:
                        port["number"] = service_ports[port["number"]]
    return docs
