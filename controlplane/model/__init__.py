"""The mesh model: immutable, typed, protobuf-free.

The config layer builds a :class:`Mesh` from validated files; translation
reads it. Every value is a frozen dataclass, collections are tuples sorted by
a stable key, and label sets are sorted tuples of pairs, so two models built
from the same files compare equal whatever order the files were read in.
"""

from controlplane.model.gateway import Gateway, GatewayServer
from controlplane.model.mesh import Mesh
from controlplane.model.names import DEFAULT_DOMAIN, canonical_host, fqdn, host_aliases
from controlplane.model.policy import (
    ConnectionPool,
    ConsistentHash,
    DestinationPolicy,
    HttpConnectionPool,
    LoadBalancer,
    LoadBalancerKind,
    OutlierDetection,
    PortTrafficPolicy,
    Subset,
    TcpConnectionPool,
    TrafficPolicy,
)
from controlplane.model.routing import (
    Abort,
    Delay,
    Fault,
    HeaderOperations,
    HttpMatch,
    HttpRoute,
    Redirect,
    Retries,
    Rewrite,
    RouteDestination,
    StringMatch,
    StringMatchKind,
    TcpMatch,
    TcpRoute,
    VirtualService,
)
from controlplane.model.service import (
    Endpoint,
    Labels,
    Locality,
    Protocol,
    Resolution,
    Service,
    ServicePort,
    labels_match,
)
from controlplane.model.visibility import (
    DEFAULT_NAMESPACE,
    EVERYWHERE,
    EXPORTED_EVERYWHERE,
    ExportTo,
    overlap,
    visible,
)

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_NAMESPACE",
    "EVERYWHERE",
    "EXPORTED_EVERYWHERE",
    "Abort",
    "ConnectionPool",
    "ConsistentHash",
    "Delay",
    "DestinationPolicy",
    "Endpoint",
    "ExportTo",
    "Fault",
    "Gateway",
    "GatewayServer",
    "HeaderOperations",
    "HttpConnectionPool",
    "HttpMatch",
    "HttpRoute",
    "Labels",
    "LoadBalancer",
    "LoadBalancerKind",
    "Locality",
    "Mesh",
    "OutlierDetection",
    "PortTrafficPolicy",
    "Protocol",
    "Redirect",
    "Resolution",
    "Retries",
    "Rewrite",
    "RouteDestination",
    "Service",
    "ServicePort",
    "StringMatch",
    "StringMatchKind",
    "Subset",
    "TcpConnectionPool",
    "TcpMatch",
    "TcpRoute",
    "TrafficPolicy",
    "VirtualService",
    "canonical_host",
    "fqdn",
    "host_aliases",
    "labels_match",
    "overlap",
    "visible",
]
