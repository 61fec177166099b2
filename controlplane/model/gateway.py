"""Gateways: which ports an ingress proxy opens and for which hosts."""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.model.service import Labels, Protocol


@dataclass(frozen=True, slots=True)
class GatewayServer:
    port: int
    port_name: str
    protocol: Protocol
    hosts: tuple[str, ...]
    https_redirect: bool = False


@dataclass(frozen=True, slots=True)
class Gateway:
    """A ``Gateway``; ``selector`` picks the gateway proxies (by their node labels)."""

    namespace: str
    name: str
    selector: Labels
    servers: tuple[GatewayServer, ...]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"
