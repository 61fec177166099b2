"""The ``Node`` an agent presents to the control plane.

The control plane classifies proxies by their node metadata
(:mod:`controlplane.translate.proxy` reads it), under the keys an Envoy
bootstrap uses: ``pilotfish.io/role`` (``sidecar`` or ``gateway``),
``labels`` (a struct of strings, which select Gateways) and
``pilotfish.io/bind-address`` (where listeners bind), and ``NAMESPACE``
(what Istio's bootstraps carry: the namespace whose ``exportTo`` view the
proxy gets). An agent sends the same keys, so it receives exactly what an Envoy of the same class
receives. ``user_agent_name`` is ``pilotfish-agent``: not a gRPC client, so
never mistaken for a proxyless one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from envoy.config.core.v3 import base_pb2

from controlplane import __version__

ROLE_KEY = "pilotfish.io/role"
LABELS_KEY = "labels"
BIND_ADDRESS_KEY = "pilotfish.io/bind-address"
NAMESPACE_KEY = "NAMESPACE"
DEFAULT_NAMESPACE = "default"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
USER_AGENT_NAME = "pilotfish-agent"

Role = Literal["sidecar", "gateway"]
ROLES: tuple[Role, ...] = ("sidecar", "gateway")


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    node_id: str
    role: Role = "sidecar"
    labels: Mapping[str, str] = field(default_factory=dict)
    bind_address: str = "127.0.0.1"
    cluster: str = ""
    namespace: str = DEFAULT_NAMESPACE

    def to_node(self) -> Any:
        node = base_pb2.Node(
            id=self.node_id,
            cluster=self.cluster,
            user_agent_name=USER_AGENT_NAME,
            user_agent_version=__version__,
        )
        fields = node.metadata.fields
        fields[ROLE_KEY].string_value = self.role
        fields[BIND_ADDRESS_KEY].string_value = self.bind_address
        fields[NAMESPACE_KEY].string_value = self.namespace
        labels = fields[LABELS_KEY].struct_value
        for key, value in sorted(self.labels.items()):
            labels.fields[key].string_value = value
        return node

    def fingerprint(self) -> dict[str, Any]:
        """What decides the configuration received: a cache written for another is not used."""
        decides: dict[str, Any] = {
            "role": self.role,
            "labels": dict(sorted(self.labels.items())),
            "bind_address": self.bind_address,
        }
        if self.namespace != DEFAULT_NAMESPACE:  # caches written before namespaces stay valid
            decides["namespace"] = self.namespace
        return decides


def parse_namespace(text: str) -> str:
    """A Kubernetes namespace name (a DNS label); raises ValueError."""
    if not _DNS_LABEL.fullmatch(text):
        raise ValueError(
            f"{text!r} is not a namespace name (lowercase letters, digits and '-', at most 63)"
        )
    return text


def parse_labels(text: str) -> dict[str, str]:
    """``"app=web,version=v1"`` -> ``{"app": "web", "version": "v1"}``; raises ValueError."""
    labels: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"{part!r} is not a label like key=value")
        if key in labels and labels[key] != value:
            raise ValueError(f"label {key!r} is given twice")
        labels[key] = value
    return labels


def parse_bind_address(text: str) -> str:
    """An IPv4 or IPv6 address, normalized; raises ValueError."""
    try:
        return str(ipaddress.ip_address(text.strip().strip("[]")))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None
