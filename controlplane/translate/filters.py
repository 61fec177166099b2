"""Filters: the network and HTTP filter configurations listeners and routes carry.

An HTTP listener runs one ``HttpConnectionManager`` (codec ``AUTO``, so
HTTP/1.1 and prior-knowledge HTTP/2 clients both work) that fetches its
routes by RDS over the ADS stream. Its HTTP filter chain is always
``fault`` then ``router``: the fault filter is present, with an empty
configuration, even when no route injects faults, because routes switch it
on per route through ``typed_per_filter_config`` and a listener whose
filters changed with the routes would be replaced, draining its
connections, at every such edit. The router is last, as Envoy requires.

A TCP listener runs ``tcp_proxy`` to one cluster or a weighted set.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from controlplane.model import Fault
from controlplane.translate.protos import Message, ads, duration, fraction, pack

HTTP_CONNECTION_MANAGER = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
FAULT_FILTER = "envoy.filters.http.fault"
ROUTER_FILTER = "envoy.filters.http.router"

GRPC_STATUS_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}


def http_connection_manager(
    stat_prefix: str, route_config: str, *, use_remote_address: bool = False
) -> Message:
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=route_config),
        http_filters=[
            hcm_pb2.HttpFilter(name=FAULT_FILTER, typed_config=pack(fault_pb2.HTTPFault())),
            hcm_pb2.HttpFilter(name=ROUTER_FILTER, typed_config=pack(router_pb2.Router())),
        ],
    )
    if use_remote_address:
        manager.use_remote_address.value = True
    return listener_components_pb2.Filter(name=HTTP_CONNECTION_MANAGER, typed_config=pack(manager))


def tcp_proxy(stat_prefix: str, clusters: Sequence[tuple[str, int]]) -> Message:
    """A ``tcp_proxy`` filter to ``clusters`` (name, weight); one cluster means no weights."""
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix)
    if len(clusters) == 1:
        proxy.cluster = clusters[0][0]
    else:
        for name, weight in clusters:
            proxy.weighted_clusters.clusters.append(
                tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(name=name, weight=weight)
            )
    return listener_components_pb2.Filter(name=TCP_PROXY, typed_config=pack(proxy))


def http_fault(fault: Fault) -> Message:
    """The fault filter's per-route configuration for an Istio ``fault``."""
    config = fault_pb2.HTTPFault()
    if fault.delay is not None:
        config.delay.CopyFrom(
            common_fault_pb2.FaultDelay(
                fixed_delay=duration(fault.delay.fixed_delay),
                percentage=fraction(fault.delay.percentage),
            )
        )
    abort = fault.abort
    if abort is not None and (abort.http_status is not None or abort.grpc_status is not None):
        config.abort.percentage.CopyFrom(fraction(abort.percentage))
        if abort.http_status is not None:
            config.abort.http_status = abort.http_status
        else:
            config.abort.grpc_status = _grpc_code(abort.grpc_status or "")
    return config


def _grpc_code(status: str) -> int:
    text = status.strip().upper()
    if text.isdigit():
        return int(text)
    return GRPC_STATUS_CODES.get(text, GRPC_STATUS_CODES["UNKNOWN"])
