"""Helpers for the agent's xDS tests: a live control plane on an example, a recording sink."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.backoff import Backoff
from agents.cache import HeldConfig
from agents.errors import ConfigRejected
from agents.xds_client import Resources
from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions
from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

FORBIDDEN_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: forbidden
  namespace: bookinfo
spec:
  ports:
  - name: http
    port: 9080
"""


def fast_backoff() -> Backoff:
    return Backoff(initial=0.05, maximum=0.2, jitter=0.0)


def copy_example(name: str, tmp_path: Path) -> Path:
    config = tmp_path / "config"
    shutil.copytree(EXAMPLES / name, config)
    return config


async def start_plane(config: Path, address: str = "127.0.0.1:0") -> ControlPlane:
    plane = ControlPlane(
        ControlPlaneOptions(config, xds_address=address, debounce=0.05, settle=0.01, max_delay=0.3)
    )
    await plane.start()
    return plane


async def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def names(resources: Resources) -> dict[str, list[str]]:
    return {url: sorted(resources[url]) for url in TYPES}


@dataclass
class FakeTable:
    resources: dict[str, dict[str, Any]]
    version: str = ""
    versions: dict[str, str] = field(default_factory=dict)


@dataclass
class RecordingSink:
    """A ConfigSink that builds a FakeTable, refusing what ``reject`` names, and records commits."""

    reject: Callable[[Resources], ConfigRejected | None] = lambda resources: None
    prepared: list[FakeTable] = field(default_factory=list)
    committed: list[FakeTable] = field(default_factory=list)
    helds: list[HeldConfig] = field(default_factory=list)

    def prepare(self, resources: Resources, versions: Mapping[str, str]) -> FakeTable:
        refusal = self.reject(resources)
        if refusal is not None:
            raise refusal
        table = FakeTable({url: dict(resources[url]) for url in TYPES}, versions=dict(versions))
        self.prepared.append(table)
        return table

    async def commit(self, prepared: Any | None, held: HeldConfig) -> None:
        if prepared is not None:
            self.committed.append(prepared)
        self.helds.append(held)

    @property
    def current(self) -> FakeTable | None:
        return self.committed[-1] if self.committed else None

    def complete(self) -> bool:
        """A table holds every type, and every referenced route and load assignment arrived."""
        table = self.current
        return table is not None and all(table.resources[url] for url in TYPES)


def reject_cluster(word: str) -> Callable[[Resources], ConfigRejected | None]:
    def reject(resources: Resources) -> ConfigRejected | None:
        for name in resources[CLUSTER]:
            if word in name:
                return ConfigRejected(f"Cluster {name}", "lb_policy", "MAGLEV is not supported")
        return None

    return reject
