"""gRPC resources: the sidecar's clusters, endpoints and routes, as gRPC accepts them.

A proxyless gRPC client (:attr:`~controlplane.translate.proxy.ProxyRole.GRPC`)
is served the sidecar's route configurations, clusters and load
assignments, but gRPC validates more strictly than Envoy and NACKs a
resource over a value Envoy takes, so this module rewrites what gRPC
refuses (the rules are those of gRPC C-core's ``xds_*_parser.cc``, which
the gRFCs specify) and leaves alone what gRPC merely ignores.

Clusters (gRFC A27, A37, A42):

* gRPC knows only the ``EDS`` and ``LOGICAL_DNS`` discovery types (and
  aggregate clusters). ``STATIC`` clusters (the black hole, a subset that
  selects nothing) and ``ORIGINAL_DST`` clusters (``resolution: NONE``, a
  ``PASSTHROUGH`` balancer: a client has no original destination to keep)
  become EDS clusters over the upstream's IP endpoints, which may be none:
  gRPC then fails those calls with ``UNAVAILABLE``, as Envoy answers 503.
  A ``STRICT_DNS`` cluster becomes EDS when all its endpoints are IP
  addresses and ``LOGICAL_DNS`` on its first endpoint otherwise (gRPC
  resolves that name and balances over every address it returns).
* The legacy ``lb_policy`` may only be ``ROUND_ROBIN`` or ``RING_HASH``
  (C-core has no ``LEAST_REQUEST``): ``RANDOM``, ``LEAST_REQUEST`` and
  ``CLUSTER_PROVIDED`` become ``ROUND_ROBIN``. Ring sizes are kept within
  gRPC's ``[1, 8388608]``, and an outlier ``max_ejection_percent`` within 100.
* A typed ``load_balancing_policy`` (gRFC A52; Pilotfish's latency-aware
  policy, then least request) gets round robin appended: gRPC takes the
  first policy it supports, C-core knows neither of the first two and fails
  every call on a list without one (a gRPC with least request still takes
  that).

Load assignments: gRPC requires a ``locality`` on every
``LocalityLbEndpoints`` and skips one without ``load_balancing_weight``
(both always set, see :mod:`~controlplane.translate.endpoints`), and NACKs
an assignment that lists one address twice, so duplicate endpoints (two
WorkloadEntries for one address and port) are kept once, the first in
locality order.

Routes (gRFC A28, A31, A33, A44): gRPC ignores what it does not implement
(rewrites, mirrors, header operations, cookie and source-IP hash policies,
``per_try_timeout``, retry conditions other than gRPC status names) and
treats a redirect as a route that fails the call, so most routes pass
unchanged. Two things change:

* ``timeout`` means nothing to gRPC, which bounds a call by
  ``max_stream_duration`` instead (A31): a route with a timeout gets it
  there too (the ``timeout`` itself stays, ignored).
* an aborting fault's ``grpc_status`` must be a real gRPC code (0-16), else
  gRPC NACKs the route configuration; anything else becomes ``UNKNOWN``.

Weighted clusters need no change: weights are explicit, zero weights are
dropped (:mod:`~controlplane.translate.routes`), and gRPC, like Envoy,
takes the sum of the weights (``total_weight`` is never set).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from datetime import timedelta

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2

from controlplane.model import Endpoint, Mesh
from controlplane.translate.clusters import build_cluster
from controlplane.translate.endpoints import is_ip, load_assignment
from controlplane.translate.filters import FAULT_FILTER
from controlplane.translate.names import BLACKHOLE_CLUSTER
from controlplane.translate.protos import Message, ads, pack
from controlplane.translate.upstreams import Discovery, Upstream, upstreams

Cluster = cluster_pb2.Cluster

MAX_RING_SIZE = 8_388_608
MAX_GRPC_STATUS = 16
UNKNOWN_GRPC_STATUS = 2
GRPC_LB_POLICIES = (Cluster.ROUND_ROBIN, Cluster.RING_HASH)
ROUND_ROBIN_POLICY = "envoy.load_balancing_policies.round_robin"


def grpc_clusters(mesh: Mesh) -> tuple[list[Message], list[Message]]:
    """Every cluster of ``mesh`` as gRPC accepts it, and the load assignments of the EDS ones.

    Both lists are sorted by (cluster) name; the black hole is an EDS
    cluster without endpoints.
    """
    clusters = [_eds_cluster(Cluster(name=BLACKHOLE_CLUSTER))]
    assignments = [load_assignment(BLACKHOLE_CLUSTER, ())]
    for upstream in upstreams(mesh):
        cluster, endpoints = _grpc_cluster(upstream)
        clusters.append(cluster)
        if endpoints is not None:
            assignments.append(load_assignment(cluster.name, _unique_ips(endpoints)))
    clusters.sort(key=lambda c: str(c.name))
    assignments.sort(key=lambda a: str(a.cluster_name))
    return clusters, assignments


def grpc_route_configs(route_configs: Iterable[Message]) -> list[Message]:
    """Copies of sidecar ``route_configs`` that gRPC accepts and whose timeouts it honours."""
    result = []
    for original in route_configs:
        config = type(original)()
        config.CopyFrom(original)
        for virtual_host in config.virtual_hosts:
            for route in virtual_host.routes:
                _adapt_route(route)
        result.append(config)
    return result


def _grpc_cluster(upstream: Upstream) -> tuple[Message, Sequence[Endpoint] | None]:
    """The cluster, and the endpoints of its load assignment when it is an EDS cluster."""
    cluster = build_cluster(upstream)
    discovery = upstream.discovery
    endpoints: Sequence[Endpoint] | None = None
    if discovery is Discovery.EDS:
        endpoints = upstream.endpoints
    elif discovery in (Discovery.STATIC, Discovery.ORIGINAL_DST):
        endpoints = upstream.endpoints if discovery is Discovery.ORIGINAL_DST else ()
        _eds_cluster(cluster)
    elif discovery is Discovery.STRICT_DNS:
        dns = upstream.dns_endpoints
        if all(is_ip(e.address) for e in dns):
            endpoints = dns
            _eds_cluster(cluster)
        else:
            cluster.type = Cluster.LOGICAL_DNS
            cluster.load_assignment.CopyFrom(load_assignment(upstream.name, dns[:1]))
    _adapt_load_balancer(cluster)
    return cluster, endpoints


def _eds_cluster(cluster: Message) -> Message:
    cluster.type = Cluster.EDS
    cluster.ClearField("load_assignment")
    cluster.ClearField("dns_lookup_family")
    cluster.eds_cluster_config.eds_config.CopyFrom(ads())
    cluster.eds_cluster_config.service_name = cluster.name
    return cluster


def _adapt_load_balancer(cluster: Message) -> None:
    if cluster.HasField("load_balancing_policy"):
        policies = cluster.load_balancing_policy.policies
        fallback = policies.add().typed_extension_config
        fallback.name = ROUND_ROBIN_POLICY
        fallback.typed_config.Pack(round_robin_pb2.RoundRobin())
    if cluster.lb_policy == Cluster.MAGLEV:
        # gRPC has no maglev: keep the requests' affinity with its ring hash.
        cluster.lb_policy = Cluster.RING_HASH
        cluster.ClearField("maglev_lb_config")
        cluster.ring_hash_lb_config.SetInParent()
    if cluster.lb_policy not in GRPC_LB_POLICIES:
        cluster.lb_policy = Cluster.ROUND_ROBIN
    if cluster.HasField("ring_hash_lb_config"):
        ring = cluster.ring_hash_lb_config
        if ring.HasField("minimum_ring_size"):
            ring.minimum_ring_size.value = min(max(ring.minimum_ring_size.value, 1), MAX_RING_SIZE)
    if cluster.HasField("outlier_detection"):
        outlier = cluster.outlier_detection
        if outlier.HasField("max_ejection_percent"):
            outlier.max_ejection_percent.value = min(outlier.max_ejection_percent.value, 100)


def _adapt_route(route: Message) -> None:
    if route.HasField("route"):
        action = route.route
        if action.HasField("timeout") and action.timeout.ToTimedelta() > timedelta(0):
            action.max_stream_duration.max_stream_duration.CopyFrom(action.timeout)
    if FAULT_FILTER in route.typed_per_filter_config:
        packed = route.typed_per_filter_config[FAULT_FILTER]
        fault = fault_pb2.HTTPFault()
        if packed.Unpack(fault) and fault.abort.grpc_status > MAX_GRPC_STATUS:
            fault.abort.grpc_status = UNKNOWN_GRPC_STATUS
            packed.CopyFrom(pack(fault))


def _unique_ips(endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    """The endpoints with an IP address, each address and port once (the first wins)."""
    seen: set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = set()
    result = []
    for endpoint in sorted(endpoints, key=_locality_order):
        if not is_ip(endpoint.address):
            continue
        key = (ipaddress.ip_address(endpoint.address), endpoint.port)
        if key not in seen:
            seen.add(key)
            result.append(endpoint)
    return result


def _locality_order(endpoint: Endpoint) -> tuple[str, str, str, str, int]:
    locality = endpoint.locality
    return (locality.region, locality.zone, locality.subzone, endpoint.address, endpoint.port)
