"""xDS protocol machinery with no I/O: resource types, snapshots, the snapshot
cache, and the sans-IO server and client stream cores for state-of-the-world
and incremental (delta) xDS."""

from controlplane.xds.cache import SnapshotCache
from controlplane.xds.client import SotwClient, Validator
from controlplane.xds.delta import REMOVE_ORDER, DeltaStream
from controlplane.xds.delta_client import DeltaClient
from controlplane.xds.snapshot import Resource, Snapshot, content_version, resource_references
from controlplane.xds.sotw import SotwStream
from controlplane.xds.stream import Ack, Nack, StaleRequest, StreamEvent, TypeStatus
from controlplane.xds.subscription import Subscription
from controlplane.xds.types import (
    CLUSTER,
    ENDPOINT,
    FULL_STATE_TYPES,
    LISTENER,
    PUSH_ORDER,
    RESOURCE_TYPES,
    ROUTE,
    WILDCARD,
    ResourceType,
    is_full_state,
    push_rank,
    short_name,
)

__all__ = [
    "CLUSTER",
    "ENDPOINT",
    "FULL_STATE_TYPES",
    "LISTENER",
    "PUSH_ORDER",
    "REMOVE_ORDER",
    "RESOURCE_TYPES",
    "ROUTE",
    "WILDCARD",
    "Ack",
    "DeltaClient",
    "DeltaStream",
    "Nack",
    "Resource",
    "ResourceType",
    "Snapshot",
    "SnapshotCache",
    "SotwClient",
    "SotwStream",
    "StaleRequest",
    "StreamEvent",
    "Subscription",
    "TypeStatus",
    "Validator",
    "content_version",
    "is_full_state",
    "push_rank",
    "resource_references",
    "short_name",
]
