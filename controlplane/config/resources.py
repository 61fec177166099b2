"""Validated resources: one typed record per accepted YAML document.

A :class:`Resource` pairs :class:`Meta` (kind, namespace, name and where the
document came from) with a typed spec. VirtualService, DestinationRule and
Gateway specs are already model values; Service, WorkloadEntry and
ServiceEntry specs are records here, because a model :class:`Service` needs
several documents (a Service and the WorkloadEntries it selects) to exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.model import (
    EXPORTED_EVERYWHERE,
    DestinationPolicy,
    ExportTo,
    Gateway,
    Labels,
    Locality,
    Protocol,
    Resolution,
    ServicePort,
    VirtualService,
)


@dataclass(frozen=True, slots=True)
class Meta:
    kind: str
    namespace: str
    name: str
    file: str
    doc: int
    line: int
    labels: Labels = ()
    key: tuple[str, str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.kind, self.namespace, self.name))

    @property
    def label(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class KubePort:
    name: str
    port: int
    target_port: int | str | None
    protocol: Protocol


@dataclass(frozen=True, slots=True)
class KubeServiceSpec:
    """A Kubernetes Service. ``selector`` None means it selects nothing (manual endpoints)."""

    selector: Labels | None
    ports: tuple[KubePort, ...]
    export_to: ExportTo = EXPORTED_EVERYWHERE


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """A WorkloadEntry, or one ``endpoints[]`` item of a ServiceEntry."""

    address: str
    ports: tuple[tuple[str, int], ...] = ()
    labels: Labels = ()
    weight: int = 1
    locality: Locality = Locality()  # noqa: RUF009 - frozen, safe to share

    def port_named(self, name: str) -> int | None:
        for port_name, number in self.ports:
            if port_name == name:
                return number
        return None


@dataclass(frozen=True, slots=True)
class ServiceEntrySpec:
    hosts: tuple[str, ...]
    addresses: tuple[str, ...]
    ports: tuple[ServicePort, ...]
    mesh_external: bool
    resolution: Resolution
    endpoints: tuple[WorkloadSpec, ...]
    workload_selector: Labels | None
    export_to: ExportTo = EXPORTED_EVERYWHERE


Spec = (
    KubeServiceSpec | WorkloadSpec | ServiceEntrySpec | VirtualService | DestinationPolicy | Gateway
)


@dataclass(frozen=True, slots=True)
class Resource:
    meta: Meta
    spec: Spec
