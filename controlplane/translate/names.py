"""Resource names: how translated resources find each other.

Envoy resources refer to each other by name only (a route names a cluster, a
listener names a route configuration, an EDS cluster names its load
assignment), so every name is made here and nowhere else. Cluster names
follow Istio (``outbound|<port>|<subset>|<host>``) so that stats and admin
output read the same as in an Istio mesh.
"""

from __future__ import annotations

BLACKHOLE_CLUSTER = "BlackHoleCluster"
"""Where traffic for a destination that does not exist goes: a cluster with no hosts."""

GATEWAY_ROUTE_PREFIX = "http."


def cluster_name(port: int, host: str, subset: str | None = None) -> str:
    return f"outbound|{port}|{subset or ''}|{host}"


def route_config_name(port: int) -> str:
    """The sidecar route configuration shared by every HTTP service on ``port``."""
    return str(port)


def gateway_route_config_name(port: int) -> str:
    return f"{GATEWAY_ROUTE_PREFIX}{port}"


def virtual_host_name(host: str, port: int) -> str:
    return f"{host}:{port}"


def listener_name(bind_address: str, port: int) -> str:
    return f"{bind_address}_{port}"
