"""Clusters: one Envoy ``Cluster`` per upstream, plus the black hole.

Each :class:`~controlplane.translate.upstreams.Upstream` becomes a cluster
whose discovery type follows the service's resolution and whose settings
follow its effective traffic policy:

* load balancer: ``ROUND_ROBIN`` (also the default), ``RANDOM``,
  ``LEAST_REQUEST``, ``RING_HASH`` (or ``MAGLEV``) for consistent hashing (the hash key
  itself is a route setting, see :mod:`~controlplane.translate.routes`);
  ``PASSTHROUGH`` makes an ``ORIGINAL_DST`` cluster, which must use
  ``CLUSTER_PROVIDED``. Pilotfish's latency-aware balancer (a
  DestinationRule annotation) becomes a ``load_balancing_policy`` whose
  first policy is ``pilotfish.lb.v1.LatencyAware`` and whose second is
  least request: Pilotfish's agents take the first, Envoy and gRPC skip a
  policy whose type they do not know and take the next they support. The
  first is wrapped in an ``xds.type.v3.TypedStruct``: Envoy ACKs it packed
  as is too, but then cannot render its ``/config_dump`` at all (an unknown
  type in an ``Any`` has no JSON form), while a TypedStruct is plain JSON.
  An interop test checks that Envoy ACKs the cluster and routes by it;
* outlier detection: ``consecutive_5xx`` (0 switches its enforcement off),
  ``consecutive_gateway_failure`` with enforcement at 100 % (Envoy's default
  enforcement for it is 0, which would make the setting a no-op), interval,
  base ejection time and maximum ejection percentage;
* connection pool: circuit-breaker thresholds, the connect timeout (10 s by
  default, as in Istio), and for HTTP ports the idle timeout and requests per
  connection as ``HttpProtocolOptions``, which also carry explicit HTTP/2 for
  HTTP2 and GRPC ports.

Every cluster but the black hole names the control plane itself as its
``lrs_server`` (a ``self`` config source): proxyless gRPC then reports the
cluster's load to the server it gets xDS from; Envoy ignores the field and
reports to the bootstrap's ``cluster_manager.load_stats_config`` instead.

The black hole cluster is a ``STATIC`` cluster without hosts; destinations
that name no existing cluster are routed to it.
"""

from __future__ import annotations

import functools
from datetime import timedelta

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import json_format
from xds.type.v3 import typed_struct_pb2

from controlplane.model import (
    ConnectionPool,
    LoadBalancer,
    LoadBalancerKind,
    Mesh,
    OutlierDetection,
    Protocol,
    TrafficPolicy,
)
from controlplane.translate.endpoints import load_assignment
from controlplane.translate.names import BLACKHOLE_CLUSTER
from controlplane.translate.protos import Message, ads, duration, pack, uint32
from controlplane.translate.upstreams import Discovery, Upstream, upstreams
from pilotfish.lb.v1 import latency_aware_pb2

DEFAULT_CONNECT_TIMEOUT = timedelta(seconds=10)
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
LATENCY_AWARE_POLICY = "pilotfish.lb.latency_aware"
LEAST_REQUEST_POLICY = "envoy.load_balancing_policies.least_request"

Cluster = cluster_pb2.Cluster

_LB_POLICIES = {
    LoadBalancerKind.ROUND_ROBIN: Cluster.ROUND_ROBIN,
    LoadBalancerKind.RANDOM: Cluster.RANDOM,
    LoadBalancerKind.LEAST_REQUEST: Cluster.LEAST_REQUEST,
    LoadBalancerKind.CONSISTENT_HASH: Cluster.RING_HASH,
}

_DNS_TYPES = {Discovery.STRICT_DNS: Cluster.STRICT_DNS, Discovery.LOGICAL_DNS: Cluster.LOGICAL_DNS}


def build_clusters(mesh: Mesh) -> list[Message]:
    """Every cluster of ``mesh`` and the black hole, sorted by name."""
    clusters = [blackhole_cluster(), *(build_cluster(u) for u in upstreams(mesh))]
    return sorted(clusters, key=lambda c: str(c.name))


def blackhole_cluster() -> Message:
    return Cluster(
        name=BLACKHOLE_CLUSTER,
        type=Cluster.STATIC,
        connect_timeout=duration(DEFAULT_CONNECT_TIMEOUT),
    )


def build_cluster(upstream: Upstream) -> Message:
    discovery = upstream.discovery
    if discovery is Discovery.EDS:
        # EDS clusters of one policy and protocol differ only in their name: a copy of
        # one template costs a fraction of setting their fields one by one.
        cluster = Cluster()
        cluster.CopyFrom(_template_for(upstream.policy, upstream.port.protocol))
        name = upstream.name
        cluster.name = name
        cluster.eds_cluster_config.service_name = name
        return cluster
    cluster = Cluster(name=upstream.name)
    _set_policy(cluster, upstream.policy, upstream.port.protocol, discovery)
    _set_discovery(cluster, upstream, discovery)
    return cluster


def _template_for(policy: TrafficPolicy, protocol: Protocol) -> Message:
    # The upstreams of a service mostly share one policy object: checked by identity
    # before the policies are hashed. One tuple, so that threads read a consistent one.
    global _last_template
    last = _last_template
    if last[0] is policy and last[1] is protocol:
        return last[2]
    template = _eds_template(policy, protocol)
    _last_template = (policy, protocol, template)
    return template


_last_template: tuple[object, object, Message] = (None, None, None)


@functools.lru_cache(maxsize=1024)
def _eds_template(policy: TrafficPolicy, protocol: Protocol) -> Message:
    cluster = Cluster(type=Cluster.EDS)
    cluster.eds_cluster_config.eds_config.CopyFrom(ads())
    _set_policy(cluster, policy, protocol, Discovery.EDS)
    return cluster


def _set_policy(
    cluster: Message, policy: TrafficPolicy, protocol: Protocol, discovery: Discovery
) -> None:
    """Everything of a cluster that follows from its traffic policy and port protocol."""
    pool = policy.connection_pool or ConnectionPool()
    connect_timeout = DEFAULT_CONNECT_TIMEOUT
    if pool.tcp is not None and pool.tcp.connect_timeout is not None:
        connect_timeout = pool.tcp.connect_timeout
    cluster.connect_timeout.CopyFrom(duration(connect_timeout))
    cluster.lrs_server.self.SetInParent()
    if discovery is not Discovery.ORIGINAL_DST and policy.load_balancer is not None:
        _set_load_balancer(cluster, policy.load_balancer)
    if policy.outlier_detection is not None:
        cluster.outlier_detection.CopyFrom(_outlier_detection(policy.outlier_detection))
    thresholds = _thresholds(pool)
    if thresholds is not None:
        cluster.circuit_breakers.thresholds.append(thresholds)
    options = _http_protocol_options(protocol, pool)
    if options is not None:
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].CopyFrom(pack(options))


def _set_discovery(cluster: Message, upstream: Upstream, discovery: Discovery) -> None:
    if discovery is Discovery.ORIGINAL_DST:
        cluster.type = Cluster.ORIGINAL_DST
        cluster.lb_policy = Cluster.CLUSTER_PROVIDED
    elif discovery is Discovery.STATIC:
        cluster.type = Cluster.STATIC
        cluster.load_assignment.CopyFrom(
            endpoint_pb2.ClusterLoadAssignment(cluster_name=upstream.name)
        )
    else:
        cluster.type = _DNS_TYPES[discovery]
        cluster.dns_lookup_family = Cluster.V4_PREFERRED
        cluster.load_assignment.CopyFrom(load_assignment(upstream.name, upstream.dns_endpoints))


def _set_load_balancer(cluster: Message, balancer: LoadBalancer) -> None:
    if balancer.kind is LoadBalancerKind.LATENCY_AWARE:
        _set_latency_aware(cluster, balancer)
        return
    policy = _LB_POLICIES.get(balancer.kind)
    if policy is None:
        return
    cluster.lb_policy = policy
    hashing = balancer.consistent_hash
    if balancer.kind is LoadBalancerKind.CONSISTENT_HASH:
        if hashing is not None and hashing.maglev:
            cluster.lb_policy = Cluster.MAGLEV
            maglev = cluster.maglev_lb_config
            maglev.SetInParent()
            if hashing.maglev_table_size is not None:
                maglev.table_size.value = hashing.maglev_table_size
            return
        ring = cluster.ring_hash_lb_config
        ring.SetInParent()
        if hashing is not None and hashing.minimum_ring_size is not None:
            ring.minimum_ring_size.value = hashing.minimum_ring_size


def _set_latency_aware(cluster: Message, balancer: LoadBalancer) -> None:
    config = latency_aware_pb2.LatencyAware()
    if balancer.latency_decay is not None:
        config.decay.CopyFrom(duration(balancer.latency_decay))
    wrapper = typed_struct_pb2.TypedStruct(
        type_url=f"type.googleapis.com/{config.DESCRIPTOR.full_name}"
    )
    wrapper.value.update(json_format.MessageToDict(config))
    policies = cluster.load_balancing_policy.policies
    first = policies.add().typed_extension_config
    first.name = LATENCY_AWARE_POLICY
    first.typed_config.Pack(wrapper)
    second = policies.add().typed_extension_config
    second.name = LEAST_REQUEST_POLICY
    second.typed_config.Pack(least_request_pb2.LeastRequest())


def _outlier_detection(outlier: OutlierDetection) -> Message:
    result = outlier_detection_pb2.OutlierDetection()
    if outlier.consecutive_5xx_errors is not None:
        if outlier.consecutive_5xx_errors > 0:
            result.consecutive_5xx.value = outlier.consecutive_5xx_errors
        else:
            result.enforcing_consecutive_5xx.value = 0
    if outlier.consecutive_gateway_errors:
        result.consecutive_gateway_failure.value = outlier.consecutive_gateway_errors
        result.enforcing_consecutive_gateway_failure.value = 100
    if outlier.interval is not None:
        result.interval.CopyFrom(duration(outlier.interval))
    if outlier.base_ejection_time is not None:
        result.base_ejection_time.CopyFrom(duration(outlier.base_ejection_time))
    if outlier.max_ejection_percent is not None:
        result.max_ejection_percent.value = outlier.max_ejection_percent
    return result


def _thresholds(pool: ConnectionPool) -> Message | None:
    limits = {
        "max_connections": pool.tcp.max_connections if pool.tcp else None,
        "max_pending_requests": pool.http.http1_max_pending_requests if pool.http else None,
        "max_requests": pool.http.http2_max_requests if pool.http else None,
        "max_retries": pool.http.max_retries if pool.http else None,
    }
    if all(value is None for value in limits.values()):
        return None
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds()
    for field, value in limits.items():
        if value is not None:
            getattr(thresholds, field).CopyFrom(uint32(value))
    return thresholds


def _http_protocol_options(protocol: Protocol, pool: ConnectionPool) -> Message | None:
    if not protocol.is_http:
        return None
    http2 = protocol in (Protocol.HTTP2, Protocol.GRPC)
    http = pool.http
    idle_timeout = http.idle_timeout if http else None
    per_connection = http.max_requests_per_connection if http else None
    if not http2 and idle_timeout is None and per_connection is None:
        return None
    options = http_protocol_options_pb2.HttpProtocolOptions()
    if http2:
        options.explicit_http_config.http2_protocol_options.SetInParent()
    else:
        options.explicit_http_config.http_protocol_options.SetInParent()
    common = protocol_pb2.HttpProtocolOptions()
    if idle_timeout is not None:
        common.idle_timeout.CopyFrom(duration(idle_timeout))
    if per_connection is not None:
        common.max_requests_per_connection.CopyFrom(uint32(per_connection))
    if idle_timeout is not None or per_connection is not None:
        options.common_http_protocol_options.CopyFrom(common)
    return options
