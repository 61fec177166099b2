"""Validated resources: one typed record per accepted YAML document.

A :class:`Resource` pairs :class:`Meta` (kind, namespace, name and where the
document came from) with a typed spec. VirtualService, DestinationRule and
Gateway specs are already model values; Service, WorkloadEntry and
ServiceEntry specs are records here, because a model :class:`Service` needs
several documents (a Service and the WorkloadEntries it selects) to exist.

The records made once per document (:class:`Meta`, :class:`Resource`,
:class:`WorkloadSpec`) have a hand-written ``__init__`` that sets their slots
directly: a frozen dataclass's generated one goes through
``object.__setattr__`` for every field, which is a large part of the cost of
reading a document. They stay frozen dataclasses in every other respect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


def _slot_setters(cls: type, names: str) -> tuple[Callable[[Any, Any], None], ...]:
    return tuple(getattr(cls, name).__set__ for name in names.split())


@dataclass(frozen=True, slots=True, init=False)
class Meta:
    kind: str
    namespace: str
    name: str
    file: str
    doc: int
    line: int
    labels: Labels = ()
    key: tuple[str, str, str] = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        kind: str,
        namespace: str,
        name: str,
        file: str,
        doc: int,
        line: int,
        labels: Labels = (),
    ) -> None:
        set_kind, set_namespace, set_name, set_file, set_doc, set_line, set_labels, set_key = (
            _META_SLOTS
        )
        set_kind(self, kind)
        set_namespace(self, namespace)
        set_name(self, name)
        set_file(self, file)
        set_doc(self, doc)
        set_line(self, line)
        set_labels(self, labels)
        set_key(self, (kind, namespace, name))

    @property
    def label(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


_META_SLOTS = _slot_setters(Meta, "kind namespace name file doc line labels key")


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


_NOWHERE = Locality()


@dataclass(frozen=True, slots=True, init=False)
class WorkloadSpec:
    """A WorkloadEntry, or one ``endpoints[]`` item of a ServiceEntry."""

    address: str
    ports: tuple[tuple[str, int], ...] = ()
    labels: Labels = ()
    weight: int = 1
    locality: Locality = _NOWHERE

    def __init__(
        self,
        address: str,
        ports: tuple[tuple[str, int], ...] = (),
        labels: Labels = (),
        weight: int = 1,
        locality: Locality = _NOWHERE,
    ) -> None:
        set_address, set_ports, set_labels, set_weight, set_locality = _WORKLOAD_SLOTS
        set_address(self, address)
        set_ports(self, ports)
        set_labels(self, labels)
        set_weight(self, weight)
        set_locality(self, locality)

    def port_named(self, name: str) -> int | None:
        for port_name, number in self.ports:
            if port_name == name:
                return number
        return None


_WORKLOAD_SLOTS = _slot_setters(WorkloadSpec, "address ports labels weight locality")


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


@dataclass(frozen=True, slots=True, init=False)
class Resource:
    meta: Meta
    spec: Spec

    def __init__(self, meta: Meta, spec: Spec) -> None:
        _set_meta(self, meta)
        _set_spec(self, spec)


_set_meta, _set_spec = _slot_setters(Resource, "meta spec")
