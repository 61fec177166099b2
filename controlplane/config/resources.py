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
:func:`slot_constructor` does the same for the model's records that the
one-pass read of the common document makes (routes, destinations, subsets):
a function with the class's own signature that sets the slots directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ParamSpec, TypeVar

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


P = ParamSpec("P")
T = TypeVar("T")


def slot_constructor(cls: Callable[P, T]) -> Callable[P, T]:
    """A function that makes a ``cls`` as ``cls(...)`` does, two to three times quicker.

    For a frozen slotted dataclass whose fields are all set by ``__init__``
    (with plain defaults) and that has no ``__post_init__``: the function,
    with the same parameters and defaults, sets each slot directly instead of
    through ``object.__setattr__``. The result is the same value in every way.
    """
    if (
        not isinstance(cls, type)
        or "__slots__" not in cls.__dict__
        or hasattr(cls, "__post_init__")
    ):
        raise TypeError(f"{cls!r} is not a slotted dataclass without __post_init__")
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    parameters: list[str] = []
    body: list[str] = []
    for item in fields(cls):
        if not item.init or item.default_factory is not MISSING:
            raise TypeError(f"{cls.__name__}.{item.name} is not a plain __init__ field")
        namespace[f"_set_{item.name}"] = getattr(cls, item.name).__set__
        if item.default is MISSING:
            parameters.append(item.name)
        else:
            namespace[f"_default_{item.name}"] = item.default
            parameters.append(f"{item.name}=_default_{item.name}")
        body.append(f"    _set_{item.name}(self, {item.name})\n")
    source = "".join(
        [
            f"def make({', '.join(parameters)}):\n",
            "    self = _new(_cls)\n",
            *body,
            "    return self\n",
        ]
    )
    exec(source, namespace)  # generated from the class's own fields, as dataclasses does
    make: Callable[P, T] = namespace["make"]
    make.__qualname__ = make.__name__ = f"make_{cls.__name__}"
    return make


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
