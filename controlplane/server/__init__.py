"""The gRPC side: xDS servicers and the server that hosts them."""

from controlplane.server.ads import (
    DELTA,
    SOTW,
    AggregatedDiscoveryService,
    add_sotw_services,
    add_xds_services,
)
from controlplane.server.grpc_server import (
    ServerStartError,
    XdsServer,
    XdsServerOptions,
    start_xds_server,
)

__all__ = [
    "DELTA",
    "SOTW",
    "AggregatedDiscoveryService",
    "ServerStartError",
    "XdsServer",
    "XdsServerOptions",
    "add_sotw_services",
    "add_xds_services",
    "start_xds_server",
]
