"""The xDS resource types Pilotfish serves and the facts the protocol attaches to them.

Envoy names every resource type by a type URL. Two facts about a type drive
the state-of-the-world protocol:

* LDS and CDS responses carry the *full state*: a name missing from a response
  is a deletion, so a server always sends every subscribed resource.
* RDS and EDS responses *may be partial*: a response carries only some
  resources, and the client drops one when no parent references it any more.

When one change touches several types, responses go out make-before-break
(:data:`PUSH_ORDER`): clusters first, then their endpoints so they can finish
warming, then listeners, then the routes that point at the clusters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2

from controlplane.errors import ProtocolError

TYPE_PREFIX = "type.googleapis.com/"

LISTENER = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = TYPE_PREFIX + "envoy.config.route.v3.RouteConfiguration"
CLUSTER = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = TYPE_PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"

HTTP_CONNECTION_MANAGER = (
    TYPE_PREFIX
    + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)

WILDCARD = "*"
"""The explicit wildcard resource name."""

PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
"""Make-before-break order for responses that one change produces."""

FULL_STATE_TYPES: frozenset[str] = frozenset({LISTENER, CLUSTER})


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One xDS resource type: its URL, short name and generated message class."""

    type_url: str
    short_name: str
    message_class: Any
    name_field: str

    @property
    def full_state(self) -> bool:
        return self.type_url in FULL_STATE_TYPES

    def name_of(self, message: Any) -> str:
        return str(getattr(message, self.name_field))

    def decode(self, body: Any) -> Any:
        """Unpack an ``Any`` of this type into a new message."""
        message = self.message_class()
        if not body.Unpack(message):
            raise ProtocolError(
                "server", f"an Any of type {body.type_url} is not a {self.short_name} resource"
            )
        return message


RESOURCE_TYPES: Mapping[str, ResourceType] = MappingProxyType(
    {
        CLUSTER: ResourceType(CLUSTER, "CDS", cluster_pb2.Cluster, "name"),
        ENDPOINT: ResourceType(ENDPOINT, "EDS", endpoint_pb2.ClusterLoadAssignment, "cluster_name"),
        LISTENER: ResourceType(LISTENER, "LDS", listener_pb2.Listener, "name"),
        ROUTE: ResourceType(ROUTE, "RDS", route_pb2.RouteConfiguration, "name"),
    }
)


def is_full_state(type_url: str) -> bool:
    """True for types whose SotW responses list every resource (LDS, CDS)."""
    return type_url in FULL_STATE_TYPES


def push_rank(type_url: str) -> int:
    """Sort key placing known types in :data:`PUSH_ORDER` and unknown ones last."""
    try:
        return PUSH_ORDER.index(type_url)
    except ValueError:
        return len(PUSH_ORDER)


def short_name(type_url: str) -> str:
    """``"CDS"`` for the cluster URL and so on; unknown URLs are returned unchanged."""
    known = RESOURCE_TYPES.get(type_url)
    return known.short_name if known else type_url


def type_url_of(message: Any) -> str:
    """The type URL of a generated protobuf message."""
    return TYPE_PREFIX + str(message.DESCRIPTOR.full_name)
