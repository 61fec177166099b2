"""The gRPC side: xDS servicers and the server that hosts them."""

from controlplane.server.ads import AggregatedDiscoveryService, add_sotw_services
from controlplane.server.grpc_server import (
    ServerStartError,
    XdsServer,
    XdsServerOptions,
    start_xds_server,
)

__all__ = [
    "AggregatedDiscoveryService",
    "ServerStartError",
    "XdsServer",
    "XdsServerOptions",
    "add_sotw_services",
    "start_xds_server",
]
