"""The forwarding table: xDS resources compiled into one immutable routing structure.

:func:`build_table` runs once per accepted update. It reads the Listeners,
RouteConfigurations, Clusters and ClusterLoadAssignments the agent holds and
decides everything that does not depend on the request: each listener's
kind and address, each route configuration's virtual host index and its
routes as compiled matchers (:mod:`agents.matching`) leading to
:data:`~agents.actions.Action` values with cumulative weights, durations in
seconds and header edits merged, and each cluster's endpoints and balancer.
The data plane swaps the whole table at once, so a request sees the old
table or the new one, never a mix.

Three outcomes for what the resources say:

* applied: what the data plane carries out (see ``docs/agents.md``);
* ignored and counted in :attr:`ForwardingTable.ignored` (``"<resource>: <field>: why"``):
  settings that change nothing a request could notice if left out (stats,
  access logs, tracing, upstream HTTP/2, optional filters);
* refused with :class:`~agents.errors.ConfigRejected`, naming resource and
  field, when applying the rest without it would send traffic where the
  configuration does not: an HTTP filter other than fault and router, a
  route to a cluster that does not exist, a regex that does not compile or
  means something else in RE2, TLS, subset load balancing, an unsupported
  load balancing policy.

What is referenced but not received yet (a route configuration a listener
fetches by RDS, the assignment of an EDS cluster) is listed in
:attr:`ForwardingTable.pending`: its listener answers 404, its cluster 503,
until it arrives, as in Envoy.

Balancers come from the load-balancing module through :class:`LbHooks`; a
cluster whose resource and assignment are unchanged since ``previous`` keeps
its :class:`ClusterEntry`, balancer included, so outstanding-request counts,
latency estimates and ejections survive an update that did not touch it. A
route configuration unchanged since ``previous`` (same bytes, same listener
settings, every cluster it names still there) keeps its compiled router, so
an endpoint change costs the parse of one assignment, not of every route.
"""

from __future__ import annotations

import bisect
import importlib
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, Protocol

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from agents.actions import (
    NO_EDITS,
    Action,
    DirectResponse,
    Fault,
    FaultAbort,
    FaultDelay,
    Forward,
    HashPolicy,
    HeaderEdits,
    HeaderValue,
    Mirror,
    Redirect,
    RetryPolicy,
    WeightedCluster,
)
from agents.endpoints import Endpoint, Locality
from agents.errors import ConfigRejected
from agents.matching import (
    HostIndex,
    RouteMatcher,
    all_of,
    compile_regex,
    header_test,
    host_index,
    path_test,
    query_test,
    re2_substitution,
    select,
)
from controlplane.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE

Message = Any

HTTP_CONNECTION_MANAGER = (
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
TCP_PROXY = "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
FAULT = "envoy.extensions.filters.http.fault.v3.HTTPFault"
ROUTER = "envoy.extensions.filters.http.router.v3.Router"
FILTER_CONFIG = "envoy.config.route.v3.FilterConfig"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"

DEFAULT_ROUTE_TIMEOUT = 15.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_UPSTREAM_IDLE_TIMEOUT = 3600.0
DEFAULT_TCP_IDLE_TIMEOUT = 3600.0

_REDIRECT_CODES = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}
_DENOMINATORS = {0: 100, 1: 10_000, 2: 1_000_000}
_APPEND, _ADD_IF_ABSENT, _OVERWRITE, _OVERWRITE_IF_EXISTS = 0, 1, 2, 3
_HEALTHY_STATUSES = frozenset({0, 1, 5})
"""UNKNOWN, HEALTHY, DEGRADED: Envoy routes to these."""
_CLUSTER_KINDS = {0: "static", 1: "strict_dns", 2: "logical_dns", 3: "eds", 4: "original_dst"}

_LB_FIELDS = frozenset(
    {
        "lb_policy",
        "load_balancing_policy",
        "ring_hash_lb_config",
        "maglev_lb_config",
        "least_request_lb_config",
        "round_robin_lb_config",
        "common_lb_config",
        "original_dst_lb_config",
        "outlier_detection",
    }
)
"""Cluster fields the load-balancing module reads (:class:`LbHooks`)."""


class Balancer(Protocol):
    """What the data plane asks of a cluster's balancer (made by :class:`LbHooks`)."""

    def pick(self, hash_key: int | None = None) -> Endpoint | None: ...

    def started(self, endpoint: Endpoint) -> None: ...

    def finished(self, endpoint: Endpoint, seconds: float, status: int | None) -> None: ...

    def snapshot(self) -> list[dict[str, Any]]: ...


class MakeBalancer(Protocol):
    def __call__(
        self,
        lb: Any,
        endpoints: tuple[Endpoint, ...],
        outlier: Any,
        previous: Any,
        *,
        cluster: str = "",
    ) -> Balancer: ...


@dataclass(frozen=True, slots=True)
class LbHooks:
    """The load-balancing module's entry points, passed in so each side is testable alone.

    ``parse_lb(cluster)`` and ``parse_outlier(cluster)`` read a ``Cluster``
    (raising :class:`ConfigRejected` on what they cannot apply);
    ``make_balancer(lb, endpoints, outlier, previous, cluster=name)`` makes the
    balancer, carrying per-endpoint state over from ``previous`` when given.
    """

    parse_lb: Callable[[Message], Any]
    parse_outlier: Callable[[Message], Any]
    make_balancer: MakeBalancer


def default_lb_hooks() -> LbHooks:
    """The hooks of :mod:`agents.lb_config` and :mod:`agents.balancers`."""
    lb_config = importlib.import_module("agents.lb_config")
    balancers = importlib.import_module("agents.balancers")
    return LbHooks(lb_config.parse_lb, lb_config.parse_outlier, balancers.make_balancer)


@dataclass(frozen=True, slots=True)
class ListenerEntry:
    name: str
    address: str
    port: int
    kind: Literal["http", "tcp"]
    route_config: str | None
    """The route configuration an HTTP listener routes by (None for TCP)."""
    tcp: Forward | None
    """Where a TCP listener sends its connections (None for HTTP)."""
    use_remote_address: bool = False
    """HTTP: the peer is the client (an edge proxy): x-forwarded-for gets the peer address."""


@dataclass(frozen=True, slots=True)
class ClusterEntry:
    name: str
    endpoints: tuple[Endpoint, ...]
    balancer: Balancer
    connect_timeout: float
    lb: Any
    """The load-balancing module's ``LbConfig``."""
    outlier: Any
    """The load-balancing module's ``OutlierConfig``, or None."""
    kind: str = "eds"
    """static, strict_dns, logical_dns (addresses resolved at connect time), eds, original_dst."""
    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_requests: int = 1024
    max_retries: int = 3
    idle_timeout: float | None = DEFAULT_UPSTREAM_IDLE_TIMEOUT
    """How long a pooled upstream connection may sit unused (None: forever)."""
    max_requests_per_connection: int | None = None
    fingerprint: bytes = field(default=b"", repr=False, compare=False)
    """The cluster and assignment resources, to tell an unchanged cluster at the next build."""
    ignored: tuple[str, ...] = field(default=(), repr=False, compare=False)
    pending: tuple[str, ...] = field(default=(), repr=False, compare=False)
    """This cluster's share of the table's ``ignored`` and ``pending``."""


Router = HostIndex[tuple[RouteMatcher[Action], ...]]


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A compiled route configuration, kept for the next build to reuse while unchanged."""

    fingerprint: bytes
    router: Router
    clusters: frozenset[str]
    """Every cluster its routes name: all must still exist for it to be reused."""
    ignored: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ForwardingTable:
    version: str
    listeners: tuple[ListenerEntry, ...]
    clusters: Mapping[str, ClusterEntry]
    ignored: tuple[str, ...]
    """What was left out, and where: ``"<resource>: <field>: why"``."""
    pending: tuple[str, ...]
    """What is referenced but not received yet."""
    routers: Mapping[str, Router] = field(repr=False)
    """Per HTTP listener name."""
    compiled: Mapping[tuple[str, Any], _Compiled] = field(
        default_factory=dict, repr=False, compare=False
    )

    def route(
        self,
        listener_name: str,
        host: str,
        path: str,
        method: str,
        headers: Mapping[str, str],
        query: str,
    ) -> Action | None:
        """The action for a request, or None: no virtual host or route matches (404)."""
        router = self.routers.get(listener_name)
        if router is None:
            return None
        routes = router.find(host)
        if routes is None:
            return None
        return select(routes, host, path, method, headers, query)

    def cluster(self, name: str) -> ClusterEntry | None:
        return self.clusters.get(name)


EMPTY_TABLE = ForwardingTable("", (), MappingProxyType({}), (), (), MappingProxyType({}))


def build_table(
    resources: Mapping[str, Mapping[str, Message]],
    previous: ForwardingTable | None = None,
    *,
    versions: Mapping[str, str] | None = None,
    lb: LbHooks | None = None,
) -> ForwardingTable:
    """One table from ``resources`` (type URL -> name -> decoded message); see the module doc."""
    builder = _Builder(lb or default_lb_hooks(), previous)
    clusters = builder.clusters(resources.get(CLUSTER, {}), resources.get(ENDPOINT, {}))
    route_configs = resources.get(ROUTE, {})
    listeners, routers = builder.listeners(resources.get(LISTENER, {}), route_configs)
    for name in sorted(route_configs):
        # Ones no listener uses yet are checked too, so what would be refused later is now.
        if f"RouteConfiguration {name}" not in builder.reported:
            builder.route_config(route_configs[name], _Settings())
    version = ",".join(
        f"{url.rsplit('.', 1)[-1]}={versions[url]}"
        for url in (LISTENER, ROUTE, CLUSTER, ENDPOINT)
        if versions and url in versions
    )
    return ForwardingTable(
        version=version,
        listeners=listeners,
        clusters=MappingProxyType(clusters),
        ignored=tuple(builder.ignored),
        pending=tuple(builder.pending),
        routers=MappingProxyType(routers),
        compiled=MappingProxyType(builder.compiled),
    )


@dataclass(frozen=True, slots=True)
class _Settings:
    """What an HTTP connection manager adds to the routes of its route configuration."""

    fault_filter: str = "envoy.filters.http.fault"
    default_fault: Fault | None = None
    upgrades: frozenset[str] = frozenset()
    strip_port: bool = False


@dataclass(frozen=True, slots=True)
class _Scope:
    """The enclosing levels of a route: its virtual host and route configuration."""

    resource: str
    settings: _Settings
    config: Message
    vhost: Message
    request_levels: tuple[Message, ...]
    response_levels: tuple[Message, ...]


def _refuse(message: Message, names: Iterable[str], resource: str, where: str) -> None:
    """Reject ``message`` if any of the fields ``names`` is set."""
    refused = frozenset(names)
    for descriptor, _ in message.ListFields():
        if descriptor.name in refused:
            field = f"{where}.{descriptor.name}" if where else str(descriptor.name)
            raise ConfigRejected(resource, field, "not supported")


def _seconds(duration: Message) -> float:
    return float(duration.seconds) + float(duration.nanos) / 1e9


def _percent(fraction: Message) -> float:
    denominator = _DENOMINATORS.get(int(fraction.denominator), 100)
    return min(100.0, 100.0 * float(fraction.numerator) / denominator)


def _fingerprint(*messages: Message | None) -> bytes:
    return b"\0".join(
        b"" if m is None else bytes(m.SerializeToString(deterministic=True)) for m in messages
    )


class _Builder:
    def __init__(self, lb: LbHooks, previous: ForwardingTable | None) -> None:
        self.lb = lb
        self.previous = previous
        self.ignored: list[str] = []
        self.pending: list[str] = []
        self.cluster_names: frozenset[str] = frozenset()
        self.compiled: dict[tuple[str, Any], _Compiled] = {}
        self.reported: set[str] = set()
        self.quiet = False
        """Set while a route configuration is compiled again for other listener settings."""
        self.noted: list[str] = []
        """Every ignore, quiet or not, so that a compiled unit can keep its own."""
        self.referenced: set[str] = set()

    def ignore(self, resource: str, field: str, why: str) -> None:
        line = f"{resource}: {field}: {why}"
        self.noted.append(line)
        if not self.quiet:
            self.ignored.append(line)

    def extra_fields(
        self, message: Message, handled: Iterable[str], resource: str, where: str
    ) -> None:
        known = frozenset(handled)
        for descriptor, _ in message.ListFields():
            if descriptor.name not in known:
                prefix = f"{where}." if where else ""
                self.ignore(resource, prefix + descriptor.name, "not supported, ignored")

    # Clusters and endpoints

    def clusters(
        self, clusters: Mapping[str, Message], assignments: Mapping[str, Message]
    ) -> dict[str, ClusterEntry]:
        self.cluster_names = frozenset(clusters)
        entries = {}
        for name in sorted(clusters):
            entries[name] = self.cluster(clusters[name], assignments)
        return entries

    def cluster(self, cluster: Message, assignments: Mapping[str, Message]) -> ClusterEntry:
        name = str(cluster.name)
        resource = f"Cluster {name}"
        _refuse(
            cluster,
            ("transport_socket", "transport_socket_matches", "cluster_type", "filters"),
            resource,
            "",
        )
        kind = _CLUSTER_KINDS.get(int(cluster.type), "static")
        service = str(cluster.eds_cluster_config.service_name) or name
        assignment = assignments.get(service) if kind == "eds" else None
        fingerprint = _fingerprint(cluster, assignment)
        old = self.previous.clusters.get(name) if self.previous is not None else None
        if old is not None and old.fingerprint == fingerprint:
            self.ignored.extend(old.ignored)
            self.pending.extend(old.pending)
            return old
        ignored, pending = len(self.ignored), len(self.pending)
        endpoints: tuple[Endpoint, ...] = ()
        if kind == "eds":
            if assignment is None:
                self.pending.append(f"{resource}: ClusterLoadAssignment {service}")
            else:
                endpoints = self.endpoints(assignment, f"ClusterLoadAssignment {service}")
        elif kind == "original_dst":
            self.ignore(
                resource,
                "type",
                "ORIGINAL_DST: the agent sees no original destination; requests get 503",
            )
        elif cluster.HasField("load_assignment"):
            endpoints = self.endpoints(cluster.load_assignment, resource + " load_assignment")
        connect_timeout = (
            _seconds(cluster.connect_timeout)
            if cluster.HasField("connect_timeout")
            else DEFAULT_CONNECT_TIMEOUT
        )
        limits = self.circuit_breakers(cluster, resource)
        idle, per_connection = self.protocol_options(cluster, resource)
        # The agent's load reporter (agents.load_reporter) reports to the xDS server
        # itself: an lrs_server of "self" is honoured, any other is not.
        reports = {"lrs_server"} if cluster.lrs_server.HasField("self") else set()
        self.extra_fields(
            cluster,
            _LB_FIELDS
            | reports
            | {
                "name",
                "type",
                "eds_cluster_config",
                "connect_timeout",
                "load_assignment",
                "circuit_breakers",
                "typed_extension_protocol_options",
                "max_requests_per_connection",
                "dns_lookup_family",
                "alt_stat_name",
                "metadata",
            },
            resource,
            "",
        )
        lb = self.lb.parse_lb(cluster)
        outlier = self.lb.parse_outlier(cluster)
        previous = old.balancer if old is not None else None
        balancer = self.lb.make_balancer(lb, endpoints, outlier, previous, cluster=name)
        return ClusterEntry(
            name=name,
            endpoints=endpoints,
            balancer=balancer,
            connect_timeout=connect_timeout,
            lb=lb,
            outlier=outlier,
            kind=kind,
            max_connections=limits[0],
            max_pending_requests=limits[1],
            max_requests=limits[2],
            max_retries=limits[3],
            idle_timeout=idle,
            max_requests_per_connection=per_connection,
            fingerprint=fingerprint,
            ignored=tuple(self.ignored[ignored:]),
            pending=tuple(self.pending[pending:]),
        )

    def circuit_breakers(self, cluster: Message, resource: str) -> tuple[int, int, int, int]:
        limits = [1024, 1024, 1024, 3]
        names = ("max_connections", "max_pending_requests", "max_requests", "max_retries")
        for index, thresholds in enumerate(cluster.circuit_breakers.thresholds):
            where = f"circuit_breakers.thresholds[{index}]"
            if thresholds.priority != 0:
                self.ignore(resource, where, "HIGH priority thresholds: no priority routing")
                continue
            for position, name in enumerate(names):
                if thresholds.HasField(name):
                    limits[position] = int(getattr(thresholds, name).value)
            self.extra_fields(thresholds, ("priority", *names), resource, where)
        return limits[0], limits[1], limits[2], limits[3]

    def protocol_options(self, cluster: Message, resource: str) -> tuple[float | None, int | None]:
        idle: float | None = DEFAULT_UPSTREAM_IDLE_TIMEOUT
        per_connection: int | None = None
        if cluster.HasField("max_requests_per_connection"):
            per_connection = int(cluster.max_requests_per_connection.value) or None
        for key, packed in cluster.typed_extension_protocol_options.items():
            where = f"typed_extension_protocol_options[{key}]"
            options = http_protocol_options_pb2.HttpProtocolOptions()
            if not packed.Unpack(options):
                self.ignore(resource, where, "not supported, ignored")
                continue
            common = options.common_http_protocol_options
            if common.HasField("idle_timeout"):
                idle = _seconds(common.idle_timeout) or None
            if common.HasField("max_requests_per_connection"):
                per_connection = int(common.max_requests_per_connection.value) or None
            if options.explicit_http_config.HasField("http2_protocol_options"):
                self.ignore(resource, where, "upstream HTTP/2: the agent speaks HTTP/1.1 upstream")
        return idle, per_connection

    def endpoints(self, assignment: Message, resource: str) -> tuple[Endpoint, ...]:
        if len(assignment.named_endpoints):
            raise ConfigRejected(resource, "named_endpoints", "not supported")
        if assignment.HasField("policy"):
            self.ignore(resource, "policy", "drop overloads and overprovisioning: not supported")
        result = []
        for group_index, group in enumerate(assignment.endpoints):
            locality = Locality(
                str(group.locality.region), str(group.locality.zone), str(group.locality.sub_zone)
            )
            locality_weight = (
                int(group.load_balancing_weight.value)
                if group.HasField("load_balancing_weight")
                else 0
            )
            for index, lb_endpoint in enumerate(group.lb_endpoints):
                where = f"endpoints[{group_index}].lb_endpoints[{index}]"
                if lb_endpoint.HasField("endpoint_name"):
                    raise ConfigRejected(resource, f"{where}.endpoint_name", "not supported")
                address = lb_endpoint.endpoint.address
                if not address.HasField("socket_address") or address.socket_address.HasField(
                    "named_port"
                ):
                    raise ConfigRejected(
                        resource, f"{where}.endpoint.address", "only socket addresses with a port"
                    )
                weight = (
                    int(lb_endpoint.load_balancing_weight.value)
                    if lb_endpoint.HasField("load_balancing_weight")
                    else 1
                )
                result.append(
                    Endpoint(
                        address=str(address.socket_address.address),
                        port=int(address.socket_address.port_value),
                        weight=weight,
                        locality=locality,
                        locality_weight=locality_weight,
                        priority=int(group.priority),
                        healthy=int(lb_endpoint.health_status) in _HEALTHY_STATUSES,
                    )
                )
        return tuple(result)

    # Listeners

    def listeners(
        self, listeners: Mapping[str, Message], route_configs: Mapping[str, Message]
    ) -> tuple[tuple[ListenerEntry, ...], dict[str, Router]]:
        entries = []
        routers: dict[str, Router] = {}
        for name in sorted(listeners):
            entry, router = self.listener(listeners[name], route_configs)
            entries.append(entry)
            if router is not None:
                routers[entry.name] = router
        return tuple(entries), routers

    def listener(
        self, listener: Message, route_configs: Mapping[str, Message]
    ) -> tuple[ListenerEntry, Router | None]:
        name = str(listener.name)
        resource = f"Listener {name}"
        _refuse(
            listener, ("api_listener", "udp_listener_config", "internal_listener"), resource, ""
        )
        address = listener.address
        if not address.HasField("socket_address") or address.socket_address.HasField("named_port"):
            raise ConfigRejected(resource, "address", "only socket addresses with a port")
        if listener.HasField("filter_chain_matcher") or len(listener.filter_chains) != 1:
            raise ConfigRejected(resource, "filter_chains", "exactly one filter chain is supported")
        chain = listener.filter_chains[0]
        if chain.HasField("transport_socket"):
            raise ConfigRejected(resource, "filter_chains[0].transport_socket", "TLS not supported")
        if chain.HasField("filter_chain_match") and chain.filter_chain_match.ByteSize():
            raise ConfigRejected(resource, "filter_chains[0].filter_chain_match", "not supported")
        self.extra_fields(chain, ("filters", "name", "metadata"), resource, "filter_chains[0]")
        self.extra_fields(
            listener,
            (
                "name",
                "address",
                "filter_chains",
                "traffic_direction",
                "stat_prefix",
                "metadata",
            ),
            resource,
            "",
        )
        if len(chain.filters) != 1:
            raise ConfigRejected(
                resource,
                "filter_chains[0].filters",
                "exactly one network filter (http_connection_manager or tcp_proxy) is supported",
            )
        network = chain.filters[0]
        where = "filter_chains[0].filters[0]"
        type_name = str(network.typed_config.type_url).rsplit("/", 1)[-1]
        socket = address.socket_address
        host, port = str(socket.address), int(socket.port_value)
        if type_name == HTTP_CONNECTION_MANAGER:
            manager = hcm_pb2.HttpConnectionManager()
            network.typed_config.Unpack(manager)
            return self.http_listener(name, host, port, manager, route_configs, resource, where)
        if type_name == TCP_PROXY:
            proxy = tcp_proxy_pb2.TcpProxy()
            network.typed_config.Unpack(proxy)
            tcp = self.tcp_proxy(proxy, resource, f"{where}.typed_config")
            return ListenerEntry(name, host, port, "tcp", None, tcp), None
        raise ConfigRejected(
            resource,
            f"{where}.typed_config",
            f"network filter {type_name or network.name} is not supported",
        )

    def http_listener(
        self,
        name: str,
        host: str,
        port: int,
        manager: Message,
        route_configs: Mapping[str, Message],
        resource: str,
        where: str,
    ) -> tuple[ListenerEntry, Router | None]:
        where = f"{where}.typed_config"
        settings = self.http_filters(manager, resource, where)
        self.extra_fields(
            manager,
            (
                "stat_prefix",
                "codec_type",
                "rds",
                "route_config",
                "http_filters",
                "use_remote_address",
                "upgrade_configs",
                "strip_any_host_port",
                "access_log",
            ),
            resource,
            where,
        )
        upgrades = set()
        for upgrade in manager.upgrade_configs:
            if not upgrade.HasField("enabled") or upgrade.enabled.value:
                upgrades.add(str(upgrade.upgrade_type).lower())
        settings = _Settings(
            settings.fault_filter,
            settings.default_fault,
            frozenset(upgrades),
            bool(manager.strip_any_host_port),
        )
        router: Router | None
        if manager.HasField("route_config"):
            config_name = str(manager.route_config.name)
            router = self.route_config(
                manager.route_config, settings, f"{resource} {where}.route_config"
            )
        elif manager.HasField("rds"):
            config_name = str(manager.rds.route_config_name)
            config = route_configs.get(config_name)
            if config is None:
                self.pending.append(f"{resource}: RouteConfiguration {config_name}")
                router = None
            else:
                router = self.route_config(config, settings)
        else:
            raise ConfigRejected(resource, f"{where}.scoped_routes", "not supported")
        entry = ListenerEntry(
            name, host, port, "http", config_name, None, bool(manager.use_remote_address.value)
        )
        return entry, router

    def http_filters(self, manager: Message, resource: str, where: str) -> _Settings:
        fault_name = "envoy.filters.http.fault"
        default_fault: Fault | None = None
        filters = list(manager.http_filters)
        for index, http_filter in enumerate(filters):
            field = f"{where}.http_filters[{index}]"
            if http_filter.disabled:
                continue
            type_name = str(http_filter.typed_config.type_url).rsplit("/", 1)[-1]
            if type_name == ROUTER:
                if index != len(filters) - 1:
                    raise ConfigRejected(resource, field, "the router must be the last filter")
            elif type_name == FAULT:
                fault_name = str(http_filter.name)
                config = fault_pb2.HTTPFault()
                http_filter.typed_config.Unpack(config)
                default_fault = self.fault(config, resource, f"{field}.typed_config")
            elif http_filter.is_optional:
                self.ignore(resource, field, f"optional filter {type_name or http_filter.name}")
            else:
                raise ConfigRejected(
                    resource,
                    field,
                    f"HTTP filter {http_filter.name} ({type_name or 'no typed_config'})"
                    " is not supported",
                )
        if not filters or str(filters[-1].typed_config.type_url).rsplit("/", 1)[-1] != ROUTER:
            raise ConfigRejected(
                resource, f"{where}.http_filters", "the last filter must be the router"
            )
        return _Settings(fault_name, default_fault)

    def tcp_proxy(self, proxy: Message, resource: str, where: str) -> Forward:
        _refuse(proxy, ("tunneling_config", "on_demand", "metadata_match"), resource, where)
        self.extra_fields(
            proxy,
            ("stat_prefix", "cluster", "weighted_clusters", "idle_timeout", "access_log"),
            resource,
            where,
        )
        if proxy.HasField("weighted_clusters"):
            pairs = []
            for index, weight in enumerate(proxy.weighted_clusters.clusters):
                field = f"{where}.weighted_clusters.clusters[{index}]"
                if weight.HasField("metadata_match"):
                    raise ConfigRejected(resource, f"{field}.metadata_match", "not supported")
                self.check_cluster(str(weight.name), resource, f"{field}.name")
                pairs.append(WeightedCluster(str(weight.name), int(weight.weight)))
            clusters = tuple(pairs)
        elif proxy.cluster:
            self.check_cluster(str(proxy.cluster), resource, f"{where}.cluster")
            clusters = (WeightedCluster(str(proxy.cluster)),)
        else:
            raise ConfigRejected(resource, f"{where}.cluster", "no cluster to proxy to")
        idle = DEFAULT_TCP_IDLE_TIMEOUT
        if proxy.HasField("idle_timeout"):
            idle = _seconds(proxy.idle_timeout)
        return Forward(
            clusters=clusters,
            cumulative_weights=self.cumulative(clusters, resource, f"{where}.weighted_clusters"),
            timeout=None,
            idle_timeout=idle or None,
        )

    def check_cluster(self, name: str, resource: str, field: str) -> None:
        if name not in self.cluster_names:
            raise ConfigRejected(resource, field, f"unknown cluster {name!r}")
        self.referenced.add(name)

    @staticmethod
    def cumulative(
        clusters: tuple[WeightedCluster, ...], resource: str, field: str
    ) -> tuple[int, ...]:
        sums = []
        total = 0
        for cluster in clusters:
            total += cluster.weight
            sums.append(total)
        if total <= 0:
            raise ConfigRejected(resource, field, "the weights add up to 0")
        return tuple(sums)

    # Route configurations

    def route_config(
        self, config: Message, settings: _Settings, resource: str | None = None
    ) -> Router:
        """The router of ``config``; ``resource`` names an inline one (by its listener)."""
        resource = resource or f"RouteConfiguration {config.name}"
        key = (resource, settings)
        done = self.compiled.get(key)
        if done is not None:
            return done.router
        _refuse(config, ("vhds", "cluster_specifier_plugins"), resource, "")
        self.quiet = resource in self.reported
        self.reported.add(resource)
        try:
            fingerprint = _fingerprint(config)
            old = self.previous.compiled.get(key) if self.previous is not None else None
            if (
                old is not None
                and old.fingerprint == fingerprint
                and old.clusters <= self.cluster_names
            ):
                done = old
                if not self.quiet:
                    self.ignored.extend(old.ignored)
            else:
                noted = len(self.noted)
                self.referenced = set()
                router = self._compile(config, settings, resource)
                done = _Compiled(
                    fingerprint, router, frozenset(self.referenced), tuple(self.noted[noted:])
                )
            self.compiled[key] = done
            return done.router
        finally:
            self.quiet = False

    def _compile(self, config: Message, settings: _Settings, resource: str) -> Router:
        self.extra_fields(
            config,
            (
                "name",
                "virtual_hosts",
                "request_headers_to_add",
                "request_headers_to_remove",
                "response_headers_to_add",
                "response_headers_to_remove",
                "most_specific_header_mutations_wins",
                "request_mirror_policies",
                "typed_per_filter_config",
                "ignore_port_in_host_matching",
                "validate_clusters",
                "metadata",
            ),
            resource,
            "",
        )
        hosts = []
        for vhost in config.virtual_hosts:
            levels = (vhost, config)
            if config.most_specific_header_mutations_wins:
                levels = (config, vhost)
            scope = _Scope(resource, settings, config, vhost, levels, levels)
            routes = tuple(
                self.route(route, scope, f"virtual_hosts[{vhost.name}].routes[{index}]")
                for index, route in enumerate(vhost.routes)
            )
            self.extra_fields(
                vhost,
                (
                    "name",
                    "domains",
                    "routes",
                    "request_headers_to_add",
                    "request_headers_to_remove",
                    "response_headers_to_add",
                    "response_headers_to_remove",
                    "retry_policy",
                    "request_mirror_policies",
                    "typed_per_filter_config",
                    "metadata",
                ),
                resource,
                f"virtual_hosts[{vhost.name}]",
            )
            hosts.append((str(vhost.name), [str(d) for d in vhost.domains], routes))
        index = host_index(hosts, resource)
        if settings.strip_port or config.ignore_port_in_host_matching:
            index = _PortStripping(index.exact, index.suffixes, index.prefixes, index.default)
        return index

    def route(self, route: Message, scope: _Scope, where: str) -> RouteMatcher[Action]:
        resource = scope.resource
        match = route.match
        _refuse(
            match,
            (
                "connect_matcher",
                "path_match_policy",
                "tls_context",
                "dynamic_metadata",
                "filter_state",
            ),
            resource,
            f"{where}.match",
        )
        path = path_test(match, resource, f"{where}.match")
        headers = all_of(
            tuple(
                header_test(h, resource, f"{where}.match.headers[{i}]")
                for i, h in enumerate(match.headers)
            )
        )
        query = tuple(
            query_test(q, resource, f"{where}.match.query_parameters[{i}]")
            for i, q in enumerate(match.query_parameters)
        )
        fraction = None
        if match.HasField("runtime_fraction"):
            fraction = _percent(match.runtime_fraction.default_value) / 100.0
        action = self.action(route, scope, where)
        return RouteMatcher(path, headers, query, fraction, match.HasField("grpc"), action)

    def action(self, route: Message, scope: _Scope, where: str) -> Action:
        resource = scope.resource
        self.extra_fields(
            route,
            (
                "name",
                "match",
                "route",
                "redirect",
                "direct_response",
                "typed_per_filter_config",
                "request_headers_to_add",
                "request_headers_to_remove",
                "response_headers_to_add",
                "response_headers_to_remove",
                "metadata",
                "decorator",
                "stat_prefix",
            ),
            resource,
            where,
        )
        kind = route.WhichOneof("action")
        response = self.header_edits((route, *scope.response_levels), "response", resource, where)
        if kind == "redirect":
            redirect = self.redirect(route.redirect, resource, f"{where}.redirect")
            if redirect.prefix_rewrite is None:
                return redirect
            matched = self.matched_prefix(route.match, resource, f"{where}.redirect")
            return replace(redirect, matched_prefix=matched)
        if kind == "direct_response":
            direct = route.direct_response
            body = b""
            if direct.HasField("body"):
                source = direct.body.WhichOneof("specifier")
                if source == "inline_string":
                    body = str(direct.body.inline_string).encode()
                elif source == "inline_bytes":
                    body = bytes(direct.body.inline_bytes)
                else:
                    raise ConfigRejected(
                        resource, f"{where}.direct_response.body.{source}", "not supported"
                    )
            return DirectResponse(int(direct.status), body, response)
        if kind != "route":
            raise ConfigRejected(resource, f"{where}.{kind or 'action'}", "not supported")
        return self.forward(route, scope, where, response)

    def forward(self, route: Message, scope: _Scope, where: str, response: HeaderEdits) -> Forward:
        resource = scope.resource
        action = route.route
        field = f"{where}.route"
        _refuse(
            action,
            (
                "cluster_header",
                "cluster_specifier_plugin",
                "inline_cluster_specifier_plugin",
                "metadata_match",
                "path_rewrite_policy",
                "auto_host_rewrite",
                "host_rewrite_header",
                "host_rewrite_path_regex",
            ),
            resource,
            field,
        )
        self.extra_fields(
            action,
            (
                "cluster",
                "weighted_clusters",
                "cluster_not_found_response_code",
                "prefix_rewrite",
                "regex_rewrite",
                "host_rewrite_literal",
                "timeout",
                "idle_timeout",
                "retry_policy",
                "request_mirror_policies",
                "hash_policy",
                "upgrade_configs",
            ),
            resource,
            field,
        )
        clusters = self.route_clusters(action, resource, field)
        regex_rewrite = None
        if action.HasField("regex_rewrite"):
            pattern = compile_regex(
                action.regex_rewrite.pattern.regex, resource, f"{field}.regex_rewrite.pattern"
            )
            regex_rewrite = (pattern, re2_substitution(str(action.regex_rewrite.substitution)))
        timeout: float | None = DEFAULT_ROUTE_TIMEOUT
        if action.HasField("timeout"):
            timeout = _seconds(action.timeout) or None
        idle: float | None = None
        if action.HasField("idle_timeout"):
            idle = _seconds(action.idle_timeout) or None
        retry = None
        if action.HasField("retry_policy"):
            retry = self.retry(action.retry_policy, resource, f"{field}.retry_policy")
        elif scope.vhost.HasField("retry_policy"):
            where_vhost = f"virtual_hosts[{scope.vhost.name}].retry_policy"
            retry = self.retry(scope.vhost.retry_policy, resource, where_vhost)
        upgrades = set(scope.settings.upgrades)
        for upgrade in action.upgrade_configs:
            kind = str(upgrade.upgrade_type).lower()
            if not upgrade.HasField("enabled") or upgrade.enabled.value:
                upgrades.add(kind)
            else:
                upgrades.discard(kind)
        return Forward(
            clusters=clusters,
            cumulative_weights=self.cumulative(clusters, resource, f"{field}.weighted_clusters"),
            timeout=timeout,
            idle_timeout=idle,
            retry=retry,
            prefix_rewrite=str(action.prefix_rewrite) if action.prefix_rewrite else None,
            matched_prefix=(
                self.matched_prefix(route.match, resource, field) if action.prefix_rewrite else None
            ),
            regex_rewrite=regex_rewrite,
            host_rewrite=str(action.host_rewrite_literal) or None,
            hash_policies=tuple(
                policy
                for index, spec in enumerate(action.hash_policy)
                if (policy := self.hash_policy(spec, resource, f"{field}.hash_policy[{index}]"))
                is not None
            ),
            mirrors=self.mirrors(action, scope, field),
            fault=self.route_fault(route, scope, where),
            upgrades=frozenset(upgrades),
            request_headers=self.header_edits(
                (route, *scope.request_levels), "request", resource, where
            ),
            response_headers=response,
        )

    def route_clusters(
        self, action: Message, resource: str, field: str
    ) -> tuple[WeightedCluster, ...]:
        if action.HasField("weighted_clusters"):
            weighted = action.weighted_clusters
            _refuse(
                weighted, ("header_name", "use_hash_policy"), resource, f"{field}.weighted_clusters"
            )
            result = []
            for index, weight in enumerate(weighted.clusters):
                where = f"{field}.weighted_clusters.clusters[{index}]"
                _refuse(weight, ("cluster_header", "metadata_match"), resource, where)
                if weight.host_rewrite_literal:
                    self.ignore(resource, f"{where}.host_rewrite_literal", "not supported, ignored")
                if len(weight.typed_per_filter_config):
                    self.ignore(
                        resource, f"{where}.typed_per_filter_config", "not supported, ignored"
                    )
                self.check_cluster(str(weight.name), resource, f"{where}.name")
                result.append(
                    WeightedCluster(
                        name=str(weight.name),
                        weight=int(weight.weight.value),
                        request_headers=self.header_edits((weight,), "request", resource, where),
                        response_headers=self.header_edits((weight,), "response", resource, where),
                    )
                )
            return tuple(result)
        if not action.cluster:
            raise ConfigRejected(resource, f"{field}.cluster", "no cluster to route to")
        self.check_cluster(str(action.cluster), resource, f"{field}.cluster")
        return (WeightedCluster(str(action.cluster)),)

    def header_edits(
        self, levels: tuple[Message, ...], direction: str, resource: str, where: str
    ) -> HeaderEdits:
        add: list[HeaderValue] = []
        remove: list[str] = []
        for level in levels:
            remove.extend(
                str(name).lower() for name in getattr(level, f"{direction}_headers_to_remove")
            )
            for index, option in enumerate(getattr(level, f"{direction}_headers_to_add")):
                field = f"{where}.{direction}_headers_to_add[{index}]"
                if option.HasField("append"):
                    append = bool(option.append.value)
                elif option.append_action == _APPEND:
                    append = True
                elif option.append_action == _OVERWRITE:
                    append = False
                else:
                    raise ConfigRejected(
                        resource,
                        f"{field}.append_action",
                        "only APPEND_IF_EXISTS_OR_ADD and OVERWRITE_IF_EXISTS_OR_ADD are supported",
                    )
                value = str(option.header.value) or bytes(option.header.raw_value).decode("latin-1")
                add.append(
                    HeaderValue(
                        str(option.header.key).lower(),
                        self.header_value(value, resource, field),
                        append,
                    )
                )
        if not add and not remove:
            return NO_EDITS
        return HeaderEdits(tuple(add), tuple(dict.fromkeys(remove)))

    def header_value(self, value: str, resource: str, field: str) -> str:
        if "%" not in value:
            return value
        plain = value.replace("%%", "")
        if "%" in plain:
            self.ignore(
                resource, f"{field}.header.value", "%-commands are not expanded; sent as written"
            )
            return value
        return value.replace("%%", "%")

    def retry(self, policy: Message, resource: str, where: str) -> RetryPolicy:
        self.extra_fields(
            policy,
            (
                "retry_on",
                "num_retries",
                "per_try_timeout",
                "retry_host_predicate",
                "host_selection_retry_max_attempts",
                "retriable_status_codes",
                "retry_back_off",
            ),
            resource,
            where,
        )
        for index, predicate in enumerate(policy.retry_host_predicate):
            if predicate.name != PREVIOUS_HOSTS:
                self.ignore(
                    resource,
                    f"{where}.retry_host_predicate[{index}]",
                    f"{predicate.name} not supported, ignored",
                )
        base, most = 0.025, 0.25
        if policy.HasField("retry_back_off"):
            base = _seconds(policy.retry_back_off.base_interval) or base
            most = (
                _seconds(policy.retry_back_off.max_interval)
                if policy.retry_back_off.HasField("max_interval")
                else 10 * base
            )
        per_try = _seconds(policy.per_try_timeout) if policy.HasField("per_try_timeout") else 0.0
        return RetryPolicy(
            retry_on=frozenset(c.strip() for c in str(policy.retry_on).split(",") if c.strip()),
            num_retries=int(policy.num_retries.value) if policy.HasField("num_retries") else 1,
            per_try_timeout=per_try or None,
            base_interval=base,
            max_interval=max(most, base),
            retriable_status_codes=frozenset(int(c) for c in policy.retriable_status_codes),
        )

    def hash_policy(self, spec: Message, resource: str, where: str) -> HashPolicy | None:
        kind = spec.WhichOneof("policy_specifier")
        terminal = bool(spec.terminal)
        if kind == "header":
            if spec.header.HasField("regex_rewrite"):
                self.ignore(resource, f"{where}.header.regex_rewrite", "not supported, ignored")
            return HashPolicy("header", str(spec.header.header_name).lower(), terminal)
        if kind == "cookie":
            cookie = spec.cookie
            if len(cookie.attributes):
                self.ignore(resource, f"{where}.cookie.attributes", "not supported, ignored")
            ttl = _seconds(cookie.ttl) if cookie.HasField("ttl") else None
            return HashPolicy("cookie", str(cookie.name), terminal, ttl, str(cookie.path))
        if kind == "connection_properties":
            if not spec.connection_properties.source_ip:
                return None
            return HashPolicy("source_ip", "", terminal)
        if kind == "query_parameter":
            return HashPolicy("query_parameter", str(spec.query_parameter.name), terminal)
        self.ignore(resource, f"{where}.{kind}", "not supported, ignored")
        return None

    def mirrors(self, action: Message, scope: _Scope, field: str) -> tuple[Mirror, ...]:
        for level, where in (
            (action, field),
            (scope.vhost, f"virtual_hosts[{scope.vhost.name}]"),
            (scope.config, ""),
        ):
            policies = level.request_mirror_policies
            if not len(policies):
                continue
            result = []
            for index, policy in enumerate(policies):
                spot = f"{where}.request_mirror_policies[{index}]".lstrip(".")
                if policy.cluster_header:
                    raise ConfigRejected(scope.resource, f"{spot}.cluster_header", "not supported")
                self.check_cluster(str(policy.cluster), scope.resource, f"{spot}.cluster")
                percent = 100.0
                if policy.HasField("runtime_fraction"):
                    percent = _percent(policy.runtime_fraction.default_value)
                result.append(Mirror(str(policy.cluster), percent))
            return tuple(result)
        return ()

    def route_fault(self, route: Message, scope: _Scope, where: str) -> Fault | None:
        """The most specific per-filter fault configuration, else the listener's."""
        name = scope.settings.fault_filter
        levels = (
            (route, where),
            (scope.vhost, f"virtual_hosts[{scope.vhost.name}]"),
            (scope.config, ""),
        )
        for level, spot in levels:
            for key in level.typed_per_filter_config:
                if key != name:
                    field = f"{spot}.typed_per_filter_config[{key}]".lstrip(".")
                    self.ignore(scope.resource, field, "no such filter in the chain, ignored")
        for level, spot in levels:
            packed = level.typed_per_filter_config.get(name)
            if packed is None:
                continue
            field = f"{spot}.typed_per_filter_config[{name}]".lstrip(".")
            type_name = str(packed.type_url).rsplit("/", 1)[-1]
            if type_name == FILTER_CONFIG:
                wrapper = route_components_pb2.FilterConfig()
                packed.Unpack(wrapper)
                if wrapper.disabled:
                    return None
                packed = wrapper.config
                type_name = str(packed.type_url).rsplit("/", 1)[-1]
            if type_name != FAULT:
                raise ConfigRejected(
                    scope.resource, field, f"{type_name} is not a fault configuration"
                )
            config = fault_pb2.HTTPFault()
            packed.Unpack(config)
            return self.fault(config, scope.resource, field)
        return scope.settings.default_fault

    def fault(self, config: Message, resource: str, where: str) -> Fault | None:
        _refuse(config, ("headers", "downstream_nodes", "upstream_cluster"), resource, where)
        self.extra_fields(
            config,
            (
                "delay",
                "abort",
                "delay_percent_runtime",
                "abort_percent_runtime",
                "delay_duration_runtime",
                "abort_http_status_runtime",
                "abort_grpc_status_runtime",
                "max_active_faults_runtime",
                "response_rate_limit_percent_runtime",
            ),
            resource,
            where,
        )
        delay = None
        if config.HasField("delay"):
            if config.delay.HasField("fixed_delay"):
                delay = FaultDelay(
                    _seconds(config.delay.fixed_delay), _percent(config.delay.percentage)
                )
            else:
                self.ignore(resource, f"{where}.delay.header_delay", "not supported, ignored")
        abort = None
        if config.HasField("abort"):
            kind = config.abort.WhichOneof("error_type")
            if kind == "http_status":
                abort = FaultAbort(int(config.abort.http_status), _percent(config.abort.percentage))
            else:
                self.ignore(resource, f"{where}.abort.{kind}", "only HTTP status aborts, ignored")
        if delay is None and abort is None:
            return None
        return Fault(delay, abort)

    @staticmethod
    def matched_prefix(match: Message, resource: str, where: str) -> str:
        """What a ``prefix_rewrite`` replaces: the route's prefix or path (Envoy's rule)."""
        kind = match.WhichOneof("path_specifier")
        if kind in ("prefix", "path", "path_separated_prefix"):
            return str(getattr(match, kind))
        raise ConfigRejected(
            resource,
            f"{where}.prefix_rewrite",
            "needs a prefix, path or path_separated_prefix match",
        )

    def redirect(self, redirect: Message, resource: str, where: str) -> Redirect:
        if redirect.HasField("regex_rewrite"):
            raise ConfigRejected(resource, f"{where}.regex_rewrite", "not supported")
        scheme = "https" if redirect.https_redirect else (str(redirect.scheme_redirect) or None)
        return Redirect(
            status=_REDIRECT_CODES.get(int(redirect.response_code), 301),
            scheme=scheme,
            host=str(redirect.host_redirect) or None,
            port=int(redirect.port_redirect) or None,
            path=str(redirect.path_redirect) or None,
            prefix_rewrite=str(redirect.prefix_rewrite) or None,
            strip_query=bool(redirect.strip_query),
        )


@dataclass(frozen=True, slots=True)
class _PortStripping(HostIndex[tuple[RouteMatcher[Action], ...]]):
    """A host index that drops ``:port`` from the host first (``strip_any_host_port``)."""

    def find(self, host: str) -> tuple[RouteMatcher[Action], ...] | None:
        if host.startswith("["):
            end = host.find("]")
            host = host[: end + 1] if end > 0 else host
        else:
            host = host.partition(":")[0]
        return HostIndex.find(self, host)


def pick_cluster(forward: Forward, draw: Callable[[], float] = random.random) -> WeightedCluster:
    """One of ``forward.clusters`` by weight (a bisect on the cumulative weights)."""
    clusters = forward.clusters
    if len(clusters) == 1:
        return clusters[0]
    weights = forward.cumulative_weights
    return clusters[bisect.bisect_right(weights, draw() * weights[-1])]
