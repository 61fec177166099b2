"""Services, their ports and their endpoints.

A :class:`Service` is what a Kubernetes ``Service`` plus the
``WorkloadEntry`` objects it selects, or an Istio ``ServiceEntry``, becomes:
one host with ports, and per port the endpoints that serve it (the endpoint
port can differ per service port, through ``targetPort`` or a workload's
named ports).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from controlplane.model.visibility import EXPORTED_EVERYWHERE, ExportTo

Labels = tuple[tuple[str, str], ...]
"""A label set as a tuple of ``(key, value)`` pairs sorted by key."""


def labels_match(selector: Labels, labels: Labels) -> bool:
    """True when every pair of ``selector`` is in ``labels`` (an empty selector matches all)."""
    if not selector:
        return True
    for pair in selector:
        if pair not in labels:
            return False  # the label is missing or has another value: the common miss
    have = dict(labels)  # the last value of a key counts
    for k, v in selector:  # noqa: SIM110 - a loop, not all() over a generator: on hot paths
        if have.get(k) != v:
            return False
    return True


class Protocol(enum.Enum):
    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    GRPC = "GRPC"
    HTTPS = "HTTPS"
    TLS = "TLS"
    TCP = "TCP"
    UDP = "UDP"
    MONGO = "MONGO"
    REDIS = "REDIS"
    MYSQL = "MYSQL"

    @property
    def is_http(self) -> bool:
        return self in (Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC)


class Resolution(enum.Enum):
    STATIC = "STATIC"
    DNS = "DNS"
    DNS_ROUND_ROBIN = "DNS_ROUND_ROBIN"
    NONE = "NONE"


@dataclass(frozen=True, slots=True)
class Locality:
    region: str = ""
    zone: str = ""
    subzone: str = ""

    @classmethod
    def parse(cls, text: str) -> Locality:
        """Parse Istio's ``region/zone/subzone`` form (trailing parts optional)."""
        parts = [*text.split("/"), "", ""]
        return cls(parts[0], parts[1], parts[2])

    def __str__(self) -> str:
        return "/".join(p for p in (self.region, self.zone, self.subzone) if p)


_NOWHERE = Locality()


@dataclass(frozen=True, slots=True, init=False)
class Endpoint:
    """One address and port serving a service port.

    Made once per workload and service port when the mesh is built, so its
    ``__init__`` sets the slots directly: a frozen dataclass's generated one
    goes through ``object.__setattr__`` for every field.
    """

    address: str
    port: int
    labels: Labels = ()
    weight: int = 1
    locality: Locality = _NOWHERE

    def __init__(
        self,
        address: str,
        port: int,
        labels: Labels = (),
        weight: int = 1,
        locality: Locality = _NOWHERE,
    ) -> None:
        set_address, set_port, set_labels, set_weight, set_locality = _ENDPOINT_SLOTS
        set_address(self, address)
        set_port(self, port)
        set_labels(self, labels)
        set_weight(self, weight)
        set_locality(self, locality)


_ENDPOINT_SLOTS = tuple(
    getattr(Endpoint, name).__set__ for name in ("address", "port", "labels", "weight", "locality")
)


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    protocol: Protocol
    target_port: int | str | None = None


@dataclass(frozen=True, slots=True)
class Service:
    """One host of the mesh.

    ``endpoints`` holds, per service port number, the endpoints sorted by
    address then port. ``source`` says which resource made it
    (``"Service default/reviews"``, ``"ServiceEntry default/httpbin"``).
    """

    host: str
    namespace: str
    name: str
    ports: tuple[ServicePort, ...]
    endpoints: tuple[tuple[int, tuple[Endpoint, ...]], ...]
    resolution: Resolution = Resolution.STATIC
    addresses: tuple[str, ...] = ()
    mesh_external: bool = False
    source: str = ""
    export_to: ExportTo = EXPORTED_EVERYWHERE
    """The namespaces that see this host (``exportTo``; see :mod:`.visibility`)."""

    def port(self, number: int) -> ServicePort | None:
        """The port ``number``; of a number served over TCP and UDP, the TCP one."""
        udp = None
        for p in self.ports:
            if p.port == number:
                if p.protocol is not Protocol.UDP:
                    return p
                udp = p
        return udp

    def endpoints_for(self, port: int) -> tuple[Endpoint, ...]:
        for number, endpoints in self.endpoints:
            if number == port:
                return endpoints
        return ()
