"""Resources for forwarding-table tests: real translations and a balancer fake."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.endpoints import Endpoint
from agents.table import ForwardingTable, LbHooks, build_table
from controlplane.config.store import ConfigStore
from controlplane.model import Mesh
from controlplane.translate import ProxyClass, ProxyRole, resource_name, translate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
Resources = dict[str, dict[str, Any]]


def example_mesh(name: str) -> Mesh:
    store = ConfigStore(EXAMPLES / name)
    result = store.reload()
    assert result.rejected == ()
    return store.mesh


def resources_of(
    mesh: Mesh, role: str = "sidecar", labels: tuple[tuple[str, str], ...] = ()
) -> Resources:
    proxy = ProxyClass(role=ProxyRole(role), labels=labels)
    return {
        url: {resource_name(m): m for m in items} for url, items in translate(mesh, proxy).items()
    }


@dataclass
class FakeBalancer:
    lb: Any
    endpoints: tuple[Endpoint, ...]
    previous: Any

    def pick(self, hash_key: int | None = None) -> Endpoint | None:
        return self.endpoints[0] if self.endpoints else None

    def started(self, endpoint: Endpoint) -> None:
        pass

    def finished(self, endpoint: Endpoint, seconds: float, status: int | None) -> None:
        pass

    def snapshot(self) -> list[dict[str, Any]]:
        return []


@dataclass
class FakeLb:
    """Hooks that record what the table asked: lb config is the cluster's lb_policy number."""

    made: list[str] = field(default_factory=list)

    def parse_lb(self, cluster: Any) -> int:
        return int(cluster.lb_policy)

    def parse_outlier(self, cluster: Any) -> Any:
        return cluster.outlier_detection if cluster.HasField("outlier_detection") else None

    def make_balancer(
        self,
        lb: Any,
        endpoints: tuple[Endpoint, ...],
        outlier: Any,
        previous: Any,
        *,
        cluster: str = "",
    ) -> FakeBalancer:
        self.made.append(cluster)
        return FakeBalancer(lb, endpoints, previous)

    @property
    def hooks(self) -> LbHooks:
        return LbHooks(self.parse_lb, self.parse_outlier, self.make_balancer)


def table_of(
    resources: Resources, previous: ForwardingTable | None = None, lb: FakeLb | None = None
) -> ForwardingTable:
    return build_table(resources, previous, lb=(lb or FakeLb()).hooks)
