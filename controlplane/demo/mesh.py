"""What ``pilotfish demo`` runs for a config directory, read from the directory itself.

:func:`plan` reads every ``*.yaml``/``*.yml`` file of a mesh and derives
the processes that make it real on this machine:

- one program per ``WorkloadEntry`` on a loopback address, listening on its
  first port (:mod:`controlplane.demo.storefront`): a frontend when the
  entry's ``demo.pilotfish.io/calls`` annotation names a ``HOST:PORT`` to
  ask, a plain instance answering its name otherwise, slowed down by
  ``demo.pilotfish.io/delay``;
- one sidecar agent per distinct ``demo.pilotfish.io/sidecar`` address: the
  loopback address its listeners bind, so that sidecars beside different
  services do not fight over the service ports (every sidecar listens on
  every service port);
- the gateway's port: the first server port of the Gateway that selects
  ``istio: ingressgateway``.

A directory the demo cannot run (a workload on another machine, no such
Gateway, YAML that does not parse) raises :class:`MeshError` with one line
naming the file and the resource. Validation proper is the control plane's
job: the plan reads only what it needs and leaves the rest to it.

:func:`write_example` writes the storefront example shipped with the package,
with its ports moved when asked (tests run it on free ports).
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from controlplane.errors import PilotfishError

CONFIG_SUFFIXES = (".yaml", ".yml")
GATEWAY_LABELS = {"istio": "ingressgateway"}
CALLS = "demo.pilotfish.io/calls"
SIDECAR = "demo.pilotfish.io/sidecar"
DELAY = "demo.pilotfish.io/delay"
EXAMPLE_GATEWAY_PORT = 8080


class MeshError(PilotfishError):
    """The demo cannot run this directory."""


@dataclass(frozen=True)
class Workload:
    name: str
    port: int
    delay: str | None = None
    calls: str | None = None
    """``HOST:PORT`` a frontend asks for each request."""
    sidecar: str | None = None
    """The bind address of the sidecar agent its calls go through."""

    @property
    def calls_port(self) -> int | None:
        return None if self.calls is None else int(self.calls.rpartition(":")[2])


@dataclass(frozen=True)
class MeshPlan:
    config_dir: Path
    gateway_port: int
    workloads: tuple[Workload, ...]
    service_ports: tuple[int, ...]
    """Every port a sidecar listens on (each Service's and ServiceEntry's ports)."""

    @property
    def sidecars(self) -> tuple[str, ...]:
        return tuple(sorted({w.sidecar for w in self.workloads if w.sidecar is not None}))

    @property
    def edit_target(self) -> Path:
        """The file a person edits first: the one holding the gateway's VirtualService."""
        for path, docs in _files(self.config_dir):
            for doc in docs:
                if doc.get("kind") == "VirtualService" and (doc.get("spec") or {}).get("gateways"):
                    return path
        return self.config_dir


def example_dir() -> Path:
    """The storefront example shipped inside the package (a copy of examples/storefront)."""
    return Path(str(resources.files("controlplane.demo") / "example"))


def has_config(directory: Path) -> bool:
    return any(p.suffix in CONFIG_SUFFIXES and p.is_file() for p in directory.rglob("*"))


def write_example(target: Path, ports: Mapping[int, int] | None = None) -> None:
    """Copy the storefront example into ``target``, every port number in ``ports`` moved."""
    target.mkdir(parents=True, exist_ok=True)
    moves = {old: new for old, new in (ports or {}).items() if old != new}
    pattern = re.compile(r"(?<![\d.])(" + "|".join(map(str, moves)) + r")(?![\d.])")
    for source in sorted(example_dir().iterdir()):
        if source.suffix not in CONFIG_SUFFIXES:
            continue
        text = source.read_text()
        if moves:
            text = pattern.sub(lambda match: str(moves[int(match.group(1))]), text)
        (target / source.name).write_text(text)


def copy_example(target: Path) -> None:
    shutil.copytree(example_dir(), target, dirs_exist_ok=True)


def _files(directory: Path) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    for path in sorted(directory.rglob("*")):
        if path.suffix not in CONFIG_SUFFIXES or not path.is_file():
            continue
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise MeshError(
                f"{path}: cannot read it ({problem}); `pilotfish validate {directory}` says more"
            ) from exc
        yield path, [doc for doc in docs if isinstance(doc, dict)]


def _label(doc: dict[str, Any]) -> str:
    metadata = doc.get("metadata") or {}
    return f"{doc.get('kind')} {metadata.get('namespace', 'default')}/{metadata.get('name')}"


def _is_loopback(address: object) -> bool:
    try:
        return ipaddress.ip_address(str(address)).is_loopback
    except ValueError:
        return False


def _workload(path: Path, doc: dict[str, Any]) -> Workload:
    metadata = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    name = str(metadata.get("name"))
    where = f"{path}: {_label(doc)}"
    if not _is_loopback(spec.get("address")):
        raise MeshError(
            f"{where} is at {spec.get('address')!r}, not on this machine: "
            "pilotfish demo runs only workloads on 127.0.0.1 (serve this mesh with pilotfish serve)"
        )
    ports = [p for p in (spec.get("ports") or {}).values() if isinstance(p, int)]
    if not ports:
        raise MeshError(f"{where} has no port to run it on")
    annotations = {str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()}
    calls, sidecar = annotations.get(CALLS), annotations.get(SIDECAR)
    if calls is not None and not re.fullmatch(r"[^:\s]+:\d{1,5}", calls):
        raise MeshError(f"{where}: annotation {CALLS}: {calls!r} is not HOST:PORT")
    if sidecar is not None and not _is_loopback(sidecar):
        raise MeshError(f"{where}: annotation {SIDECAR}: {sidecar!r} is not a loopback address")
    if calls is not None and sidecar is None:
        raise MeshError(f"{where}: annotation {CALLS} needs {SIDECAR}, the sidecar to call through")
    delay = annotations.get(DELAY)
    if delay is not None and not re.fullmatch(r"\d+(\.\d+)?(ms|s)", delay):
        raise MeshError(f"{where}: annotation {DELAY}: {delay!r} is not a duration like 100ms")
    return Workload(name, ports[0], delay, calls, sidecar)


def _matches_gateway(doc: dict[str, Any]) -> bool:
    selector = (doc.get("spec") or {}).get("selector") or {}
    return bool(selector) and all(GATEWAY_LABELS.get(k) == v for k, v in selector.items())


def _service_ports(doc: dict[str, Any]) -> list[int]:
    ports = (doc.get("spec") or {}).get("ports") or []
    numbers = (p.get("port", p.get("number")) for p in ports if isinstance(p, dict))
    return [n for n in numbers if isinstance(n, int)]


def plan(directory: Path) -> MeshPlan:
    """The processes that run ``directory``'s mesh on this machine; raises :class:`MeshError`."""
    workloads: list[Workload] = []
    gateway_ports: list[int] = []
    service_ports: set[int] = set()
    for path, docs in _files(directory):
        for doc in docs:
            kind = doc.get("kind")
            if kind == "WorkloadEntry":
                workloads.append(_workload(path, doc))
            elif kind == "Gateway" and _matches_gateway(doc):
                servers = (doc.get("spec") or {}).get("servers") or []
                gateway_ports += [
                    s["port"]["number"]
                    for s in servers
                    if isinstance(s, dict) and isinstance((s.get("port") or {}).get("number"), int)
                ]
            elif kind in ("Service", "ServiceEntry"):
                service_ports.update(_service_ports(doc))
    if not gateway_ports:
        raise MeshError(
            f"{directory} has no Gateway selecting istio: ingressgateway with a server port: "
            "the demo's gateway would have nothing to serve"
        )
    if not workloads:
        raise MeshError(f"{directory} has no WorkloadEntry: the demo would have nothing to run")
    return MeshPlan(directory, gateway_ports[0], tuple(workloads), tuple(sorted(service_ports)))
