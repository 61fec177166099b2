"""Proxy classes: which proxies receive the same configuration.

Translation does not depend on a proxy's identity, only on its *class*: its
role (a sidecar sees every service; a gateway sees the Gateways whose
selector matches its labels; a proxyless gRPC client sees every service as
``api_listener`` listeners, see :mod:`~controlplane.translate.grpc_listeners`),
the labels that drive that selection, the address its listeners bind to, and
its namespace, which decides what it sees (Istio's ``exportTo``, see
:mod:`controlplane.model.visibility`). All nodes of one class share one
snapshot, keyed by :attr:`ProxyClass.key`.

The class is read from the ``Node``:

``pilotfish.io/role`` (metadata)
    ``"sidecar"``, ``"gateway"`` or ``"grpc"``. Without it (or with a value
    that is none of these) the node is a gRPC client when its
    ``user_agent_name`` starts with ``gRPC`` (grpcio sends ``"gRPC C-core
    linux Python"``, Go and Java ``"gRPC Go"`` and ``"gRPC Java"``: every gRPC
    xDS client names itself, while few bootstraps carry metadata), and a
    sidecar otherwise (Envoy says ``"envoy"``). Roles are read case-insensitively.
``labels``
    A struct of string labels; read for gateways only, since a sidecar's
    output does not depend on them and keeping them would split snapshots.
``pilotfish.io/bind-address``
    An IPv4 or IPv6 address for the listeners (default ``0.0.0.0``).
``NAMESPACE`` (metadata), else ``pilotfish.io/namespace``, else the node id
    The proxy's namespace: Istio's Envoy bootstraps carry ``NAMESPACE``; a
    node id in Istio's form
    ``sidecar~10.0.0.1~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local``
    gives the namespace of its third part. Without any, or with one that is
    not a DNS label, the namespace is ``default``.

Metadata is written by whoever deploys the proxy, so malformed values
(wrong types, unknown roles, addresses that do not parse) fall back to the
defaults instead of raising.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from controlplane.model import DEFAULT_NAMESPACE, Labels

ROLE_KEY = "pilotfish.io/role"
LABELS_KEY = "labels"
BIND_ADDRESS_KEY = "pilotfish.io/bind-address"
NAMESPACE_KEYS = ("NAMESPACE", "pilotfish.io/namespace")
DEFAULT_BIND_ADDRESS = "0.0.0.0"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
GRPC_USER_AGENT_PREFIX = "grpc"


class ProxyRole(enum.Enum):
    SIDECAR = "sidecar"
    GATEWAY = "gateway"
    GRPC = "grpc"


@dataclass(frozen=True, slots=True)
class ProxyClass:
    role: ProxyRole = ProxyRole.SIDECAR
    labels: Labels = ()
    bind_address: str = DEFAULT_BIND_ADDRESS
    namespace: str = DEFAULT_NAMESPACE

    @classmethod
    def from_node(cls, node: Any) -> ProxyClass:
        """The class of an ``envoy.config.core.v3.Node``; never raises on bad metadata."""
        fields = node.metadata.fields
        role = _role(_string(fields, ROLE_KEY), str(node.user_agent_name))
        namespace = _namespace(fields, str(node.id))
        if role is ProxyRole.GRPC:
            # A gRPC client binds nothing and selects nothing: one class per namespace.
            return cls(role=role, namespace=namespace)
        labels = _labels(fields) if role is ProxyRole.GATEWAY else ()
        bind = _address(_string(fields, BIND_ADDRESS_KEY))
        return cls(role=role, labels=labels, bind_address=bind, namespace=namespace)

    @property
    def key(self) -> str:
        """A stable, unambiguous string naming this class (the snapshot key).

        The namespace is appended only when it is not the default, so keys of
        proxies that do not name one stay what they were.
        """
        labels = json.dumps(dict(self.labels), sort_keys=True, separators=(",", ":"))
        key = f"{self.role.value}|{self.bind_address}|{labels}"
        return key if self.namespace == DEFAULT_NAMESPACE else f"{key}|{self.namespace}"


def _string(fields: Any, key: str) -> str | None:
    if key not in fields:
        return None
    value = fields[key]
    if value.WhichOneof("kind") != "string_value":
        return None
    text: str = value.string_value
    return text


def _namespace(fields: Any, node_id: str) -> str:
    for key in NAMESPACE_KEYS:
        text = _string(fields, key)
        if text is not None and _DNS_LABEL.match(text.strip()):
            return text.strip()
    parts = node_id.split("~")
    if len(parts) == 4 and "." in parts[2]:
        candidate = parts[2].rsplit(".", 1)[1]
        if _DNS_LABEL.match(candidate):
            return candidate
    return DEFAULT_NAMESPACE


def _role(text: str | None, user_agent: str) -> ProxyRole:
    if text is not None:
        try:
            return ProxyRole(text.strip().lower())
        except ValueError:
            pass
    if user_agent.strip().lower().startswith(GRPC_USER_AGENT_PREFIX):
        return ProxyRole.GRPC
    return ProxyRole.SIDECAR


def _labels(fields: Any) -> Labels:
    if LABELS_KEY not in fields or fields[LABELS_KEY].WhichOneof("kind") != "struct_value":
        return ()
    labels = fields[LABELS_KEY].struct_value.fields
    return tuple(
        sorted(
            (key, value.string_value)
            for key, value in labels.items()
            if value.WhichOneof("kind") == "string_value"
        )
    )


def _address(text: str | None) -> str:
    if text is None:
        return DEFAULT_BIND_ADDRESS
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return DEFAULT_BIND_ADDRESS
