"""``pilotfish demo``: a whole mesh on one machine, with a file to edit.

:class:`Demo` starts, in order:

1. a temporary directory with a copy of the example configuration (the
   packaged ``hello-world/hello.yaml`` unless :attr:`DemoOptions.config_dir`
   names another directory): the file the person edits to change routing;
2. three backends ``hello-1..3`` on ``127.0.0.1`` (ports 9101-9103), the
   workloads the example's WorkloadEntries point at;
3. the control plane, watching the copy and serving xDS on
   ``127.0.0.1:<xds_port>``;
4. a real Envoy as the ingress gateway (node metadata ``pilotfish.io/role:
   gateway`` and label ``istio: ingressgateway``, listeners bound to
   ``127.0.0.1``), whose Gateway listener is the demo's front door;

and :meth:`Demo.start` returns once a GET through the gateway is answered by
a backend. When the demo runs on other ports than the example's (the
gateway's 8080, the backends' 9101-9103), the copy is rewritten to match:
Gateway servers on 8080 move to :attr:`DemoOptions.port`, and workload
ports 9101-9103 (WorkloadEntry ports, ServiceEntry endpoint ports) move to
:attr:`DemoOptions.backend_ports`. An unchanged copy keeps its comments.

Everything runs in one process and one event loop: the control plane is
asyncio-native, the backends are threads, Envoy is a child process whose
blocking waits run in worker threads one short poll at a time, so that
cancelling a start (Ctrl-C while Envoy boots) is prompt.
:meth:`Demo.stop` undoes whatever was started, in reverse order, and removes
the temporary directory; it is safe to call at any point and more than once.

Before anything starts, :meth:`Demo.start` checks that Envoy is installed
(:class:`EnvoyMissingError`) and that every port is free
(:class:`PortInUseError`), so that the two likely problems are reported
plainly instead of as a timeout.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import yaml

from controlplane.demo import envoy as envoy_module
from controlplane.demo.backends import Backends, Client, port_is_free
from controlplane.demo.envoy import (
    INSTALL_HINT,
    Envoy,
    EnvoyError,
    WaitTimeoutError,
    gateway_metadata,
)
from controlplane.errors import PilotfishError
from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions

EXAMPLE_GATEWAY_PORT = 8080
EXAMPLE_BACKEND_PORTS = (9101, 9102, 9103)
EXAMPLE_FILE = "hello.yaml"
GATEWAY_LABELS = {"istio": "ingressgateway"}
LOOPBACK = "127.0.0.1"
CONFIG_SUFFIXES = (".yaml", ".yml")


class DemoError(PilotfishError):
    """The demo could not start."""


class EnvoyMissingError(DemoError):
    def __init__(self) -> None:
        super().__init__(
            "no envoy binary found on PATH or next to the Python interpreter; "
            f"install it with: {INSTALL_HINT}"
        )


class PortInUseError(DemoError):
    def __init__(self, port: int, role: str, hint: str) -> None:
        self.port = port
        self.role = role
        super().__init__(f"port {port} ({role}) is already in use on {LOOPBACK}; {hint}")


def packaged_example() -> Path:
    """The hello-world example shipped inside the package."""
    return Path(str(resources.files("controlplane.demo") / "hello-world"))


@dataclass(frozen=True)
class DemoOptions:
    config_dir: Path | None = None
    """The directory to copy; ``None``: the packaged hello-world example."""
    port: int = EXAMPLE_GATEWAY_PORT
    xds_port: int = 18000
    backend_ports: tuple[int, ...] = EXAMPLE_BACKEND_PORTS
    envoy_binary: str | None = None
    """``None``: :func:`controlplane.demo.envoy.find_envoy`."""
    ready_timeout: float = 60.0
    debounce: float = 0.1

    @property
    def backend_names(self) -> tuple[str, ...]:
        return tuple(f"hello-{index}" for index in range(1, len(self.backend_ports) + 1))

    def port_roles(self) -> Iterator[tuple[int, str, str]]:
        """Every port the demo listens on: (port, what it is, how to choose another)."""
        yield self.port, "the Envoy gateway", "pick another with --port"
        yield self.xds_port, "the control plane's xDS server", "pick another with --xds-port"
        for name, port in zip(self.backend_names, self.backend_ports, strict=True):
            yield port, f"backend {name}", "pick others with --backend-ports"


def check_ports(options: DemoOptions) -> None:
    """Raise :class:`DemoError` for a port used twice, :class:`PortInUseError` for a taken one."""
    seen: dict[int, str] = {}
    for port, role, hint in options.port_roles():
        if port in seen:
            raise DemoError(f"port {port} is given both to {seen[port]} and to {role}")
        seen[port] = role
        if not port_is_free(port, LOOPBACK):
            raise PortInUseError(port, role, hint)


def preflight(options: DemoOptions) -> tuple[str, Path]:
    """The Envoy binary and the directory to copy, once Envoy, the ports and the directory are ok.

    Raises :class:`EnvoyMissingError`, :class:`PortInUseError` or
    :class:`DemoError`; starts nothing.
    """
    binary = options.envoy_binary or envoy_module.find_envoy()
    if binary is None:
        raise EnvoyMissingError()
    check_ports(options)
    source = options.config_dir if options.config_dir is not None else packaged_example()
    if not source.is_dir():
        raise DemoError(f"{source} is not a directory")
    return binary, source


# -- the config copy ---------------------------------------------------------------


def _relocate_docs(
    docs: list[dict[str, Any]], gateway_ports: Mapping[int, int], workload_ports: Mapping[int, int]
) -> None:
    for doc in docs:
        kind, spec = doc.get("kind"), doc.get("spec") or {}
        if kind == "Gateway":
            for server in spec.get("servers") or []:
                port = server.get("port") or {}
                if port.get("number") in gateway_ports:
                    port["number"] = gateway_ports[port["number"]]
        elif kind == "WorkloadEntry":
            ports = spec.get("ports") or {}
            for name, number in ports.items():
                ports[name] = workload_ports.get(number, number)
        elif kind == "ServiceEntry":
            for endpoint in spec.get("endpoints") or []:
                ports = endpoint.get("ports") or {}
                for name, number in ports.items():
                    ports[name] = workload_ports.get(number, number)


def prepare_config(source: Path, target: Path, options: DemoOptions) -> None:
    """Copy ``source`` to ``target`` and move the example's ports to the demo's ports.

    Files are copied byte for byte when the demo runs on the example's ports;
    otherwise every YAML file is re-serialized with its ports moved, under a
    comment that says so.
    """
    shutil.copytree(source, target)
    gateway_ports = {EXAMPLE_GATEWAY_PORT: options.port}
    workload_ports = dict(zip(EXAMPLE_BACKEND_PORTS, options.backend_ports, strict=False))
    if all(old == new for old, new in (*gateway_ports.items(), *workload_ports.items())):
        return
    for path in sorted(target.rglob("*")):
        if path.suffix not in CONFIG_SUFFIXES or not path.is_file():
            continue
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if isinstance(doc, dict)]
        _relocate_docs(docs, gateway_ports, workload_ports)
        moved = ", ".join(f"{old} -> {new}" for old, new in sorted(workload_ports.items()))
        header = (
            f"# Copied by pilotfish demo from {source / path.relative_to(target)}\n"
            f"# with ports moved: gateway {EXAMPLE_GATEWAY_PORT} -> {options.port}; "
            f"workloads {moved}.\n"
        )
        path.write_text(header + yaml.safe_dump_all(docs, sort_keys=False))


# -- the demo ------------------------------------------------------------------------


async def wait_until(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    *,
    alive: Callable[[], None] | None = None,
    interval: float = 0.1,
) -> None:
    """Poll a blocking ``condition`` in a worker thread, one call at a time, until it holds.

    Like :func:`controlplane.demo.envoy.wait_for`, but the event loop keeps
    running between polls (the control plane lives on it) and a cancelled
    wait stops polling at once.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if alive is not None:
            alive()
        try:
            if await asyncio.to_thread(condition):
                return
        except (OSError, PilotfishError) as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise WaitTimeoutError(f"timed out after {timeout}s waiting for {what}{detail}")
        await asyncio.sleep(interval)


class Demo:
    """Backends, control plane and gateway Envoy; :meth:`start`, then :meth:`stop`."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.workdir: Path | None = None
        self.backends: Backends | None = None
        self.plane: ControlPlane | None = None
        self.envoy: Envoy | None = None

    @property
    def config_dir(self) -> Path:
        if self.workdir is None:
            raise DemoError("the demo has not started")
        return self.workdir / "config"

    @property
    def config_file(self) -> Path:
        """The file to edit: the copy of ``hello.yaml`` (or the first YAML file copied)."""
        example = self.config_dir / EXAMPLE_FILE
        if example.exists():
            return example
        found = sorted(p for p in self.config_dir.rglob("*") if p.suffix in CONFIG_SUFFIXES)
        return found[0] if found else self.config_dir

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.options.port}/"

    async def start(self) -> None:
        """Start everything and wait until the gateway answers; on failure, undo and raise."""
        binary, source = preflight(self.options)
        try:
            await self._start(binary, source)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, binary: str, source: Path) -> None:
        options = self.options
        self.workdir = Path(tempfile.mkdtemp(prefix="pilotfish-demo-"))
        prepare_config(source, self.config_dir, options)
        ports = dict(zip(options.backend_names, options.backend_ports, strict=True))
        self.backends = Backends(options.backend_names, ports).start()
        self.plane = ControlPlane(
            ControlPlaneOptions(
                self.config_dir,
                xds_address=f"{LOOPBACK}:{options.xds_port}",
                debounce=options.debounce,
                max_delay=max(options.debounce, 1.0),
            )
        )
        await self.plane.start()
        self.envoy = Envoy(
            binary,
            self.workdir / "envoy",
            self.plane.port,
            node_id="demo-gateway",
            node_cluster="pilotfish-demo",
            metadata=gateway_metadata(GATEWAY_LABELS, LOOPBACK),
        )
        envoy = self.envoy
        envoy.spawn()
        deadline = time.monotonic() + options.ready_timeout

        def remaining() -> float:
            return max(deadline - time.monotonic(), 0.0)

        try:
            await wait_until(
                envoy.admin_port_known, remaining(), "Envoy to start", alive=envoy.check_alive
            )
            await wait_until(envoy.is_ready, remaining(), "Envoy /ready", alive=envoy.check_alive)
            await wait_until(
                self._gateway_answers,
                remaining(),
                f"a backend to answer {self.url}",
                alive=envoy.check_alive,
            )
        except (EnvoyError, WaitTimeoutError) as exc:
            log = f"--- envoy log ({envoy.log_path}) ---\n{envoy.log_tail()}"
            raise DemoError(f"{exc}\n{log}") from exc

    def _gateway_answers(self) -> bool:
        with Client(self.options.port, timeout=2.0) as client:
            return client.get("/").backend is not None

    async def stop(self) -> None:
        """Stop Envoy, the control plane and the backends, and remove the temporary directory."""
        envoy, self.envoy = self.envoy, None
        if envoy is not None:
            await asyncio.to_thread(envoy.stop)
        plane, self.plane = self.plane, None
        if plane is not None:
            await plane.stop(grace=1.0)
        backends, self.backends = self.backends, None
        if backends is not None:
            await asyncio.to_thread(backends.stop)
        workdir, self.workdir = self.workdir, None
        if workdir is not None:
            await asyncio.to_thread(shutil.rmtree, workdir, True)


async def run_demo(
    options: DemoOptions,
    *,
    stop: asyncio.Event,
    ready: Callable[[Demo], Awaitable[None] | None] | None = None,
) -> Demo:
    """Start a demo, call ``ready`` with it, run until ``stop`` is set, then stop it.

    ``stop`` may be set at any time: during the start (which is then
    abandoned and undone) or while ``ready`` runs. Returns the stopped
    demo, so that callers can check what it ran; start failures propagate.
    """
    demo = Demo(options)
    starting = asyncio.ensure_future(demo.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return demo
        starting.result()
        try:
            if ready is not None:
                result = ready(demo)
                if result is not None:
                    await result
            await stopping
        finally:
            await demo.stop()
        return demo
    finally:
        for task in (starting, stopping):
            if not task.done():
                task.cancel()


def print_guide(demo: Demo, out: TextIO = sys.stdout) -> None:
    """The few lines a person needs to play with the running demo."""
    options = demo.options
    names = ", ".join(options.backend_names)
    editor = os.environ.get("EDITOR", "$EDITOR")
    print(
        f"""
Pilotfish demo is up: an Envoy gateway on {demo.url} routes to {names}.

  curl {demo.url}
      run it a few times: the backends answer in turn (round robin)
  {editor} {demo.config_file}
      change the routing (drop a WorkloadEntry, add a subset, a fault...);
      Envoy follows when you save, and mistakes are reported here
  Ctrl-C
      stop everything
""",
        file=out,
        flush=True,
    )
