"""DestinationRule documents -> :class:`controlplane.model.DestinationPolicy`.

Besides the spec, two annotations of the DestinationRule's metadata select
Pilotfish's own latency-aware load balancer, which Istio's API cannot
express (see docs/agents.md, "Load balancing"):

* ``pilotfish.io/load-balancer: latency-aware`` makes it the host-wide load
  balancer, in place of ``spec.trafficPolicy.loadBalancer`` (which is then
  ignored, with a warning); port-level and subset load balancers still
  override it for their traffic, as any host-wide setting;
* ``pilotfish.io/latency-decay: <duration>`` sets the time constant of its
  response time average (10 s when absent).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from controlplane.config.durations import parse_duration
from controlplane.config.report import Path, Reporter
from controlplane.config.resources import slot_constructor
from controlplane.config.services import check_labels, clean_labels, labels_clean
from controlplane.config.visibility import export_to
from controlplane.config.yamlsource import share
from controlplane.model import (
    EXPORTED_EVERYWHERE,
    ConnectionPool,
    ConsistentHash,
    DestinationPolicy,
    ExportTo,
    HttpConnectionPool,
    LoadBalancer,
    LoadBalancerKind,
    OutlierDetection,
    PortTrafficPolicy,
    Subset,
    TcpConnectionPool,
    TrafficPolicy,
    fqdn,
)

_SIMPLE = {
    "ROUND_ROBIN": LoadBalancerKind.ROUND_ROBIN,
    "RANDOM": LoadBalancerKind.RANDOM,
    "LEAST_REQUEST": LoadBalancerKind.LEAST_REQUEST,
    "LEAST_CONN": LoadBalancerKind.LEAST_REQUEST,
    "PASSTHROUGH": LoadBalancerKind.PASSTHROUGH,
}


def _dur(value: str | None) -> Any:
    return parse_duration(value) if value is not None else None


def _check_warmup(value: Any, path: Path, report: Reporter) -> None:
    """Istio's bounds on ``warmup``, which Pilotfish does not act on (PF111) but checks."""
    if not isinstance(value, dict):
        return
    if value.get("duration") is None:
        report.error("PF113", path, "warmup needs a duration")
    percent = value.get("minimumPercent")
    if isinstance(percent, (int, float)) and not 0 <= percent <= 100:
        report.error(
            "PF114", (*path, "minimumPercent"), f"minimumPercent must be 0 to 100, not {percent}"
        )
    aggression = value.get("aggression")
    if isinstance(aggression, (int, float)) and aggression < 1:
        report.error(
            "PF114", (*path, "aggression"), f"aggression must be at least 1, not {aggression}"
        )


def _load_balancer(value: dict[str, Any], path: Path, report: Reporter) -> LoadBalancer | None:
    if (warmup := value.get("warmup")) is not None:
        _check_warmup(warmup, (*path, "warmup"), report)
    simple = value.get("simple")
    hashing = value.get("consistentHash")
    if hashing is not None:
        keys = [
            k
            for k in ("httpHeaderName", "httpCookie", "useSourceIp", "httpQueryParameterName")
            if hashing.get(k) is not None and hashing.get(k) is not False
        ]
        if not keys:
            report.error(
                "PF113",
                (*path, "consistentHash"),
                "consistentHash needs one of httpHeaderName, httpCookie, useSourceIp, "
                "httpQueryParameterName",
            )
            return None
        cookie = hashing.get("httpCookie") or {}
        if hashing.get("httpCookie") is not None and not cookie.get("name"):
            report.error(
                "PF113",
                (*path, "consistentHash", "httpCookie", "name"),
                "a hash cookie needs a name",
            )
        ring = (hashing.get("ringHash") or {}).get("minimumRingSize") or hashing.get(
            "minimumRingSize"
        )
        maglev = hashing.get("maglev")
        table = (maglev or {}).get("tableSize")
        if table is not None and not _is_prime(int(table)):
            report.error(
                "PF114",
                (*path, "consistentHash", "maglev", "tableSize"),
                f"the maglev table size must be a prime number, not {table} (65537 is the default)",
            )
        return LoadBalancer(
            LoadBalancerKind.CONSISTENT_HASH,
            ConsistentHash(
                http_header_name=hashing.get("httpHeaderName"),
                http_cookie_name=cookie.get("name"),
                http_cookie_path=cookie.get("path"),
                http_cookie_ttl=_dur(cookie.get("ttl")),
                use_source_ip=bool(hashing.get("useSourceIp")),
                http_query_parameter_name=hashing.get("httpQueryParameterName"),
                minimum_ring_size=int(ring) if ring is not None else None,
                maglev=maglev is not None,
                maglev_table_size=int(table) if table is not None else None,
            ),
        )
    if simple is None or simple == "UNSPECIFIED":
        return None
    return LoadBalancer(_SIMPLE[simple])


def _connection_pool(value: dict[str, Any]) -> ConnectionPool:
    tcp = value.get("tcp")
    http = value.get("http")
    return ConnectionPool(
        tcp=TcpConnectionPool(
            max_connections=tcp.get("maxConnections"),
            connect_timeout=_dur(tcp.get("connectTimeout")),
        )
        if tcp
        else None,
        http=HttpConnectionPool(
            http1_max_pending_requests=http.get("http1MaxPendingRequests"),
            http2_max_requests=http.get("http2MaxRequests"),
            max_requests_per_connection=http.get("maxRequestsPerConnection"),
            max_retries=http.get("maxRetries"),
            idle_timeout=_dur(http.get("idleTimeout")),
        )
        if http
        else None,
    )


def _outlier(value: dict[str, Any], path: Path, report: Reporter) -> OutlierDetection:
    percent = value.get("maxEjectionPercent")
    if percent is not None and not 0 <= percent <= 100:
        report.error("PF114", (*path, "maxEjectionPercent"), f"{percent} is not a percentage 0-100")
    return OutlierDetection(
        consecutive_5xx_errors=value.get("consecutive5xxErrors"),
        consecutive_gateway_errors=value.get("consecutiveGatewayErrors"),
        interval=_dur(value.get("interval")),
        base_ejection_time=_dur(value.get("baseEjectionTime")),
        max_ejection_percent=percent,
    )


def traffic_policy(value: dict[str, Any], path: Path, report: Reporter) -> TrafficPolicy:
    levels: list[PortTrafficPolicy] = []
    seen: set[int] = set()
    for index, level in enumerate(value.get("portLevelSettings") or ()):
        here = (*path, "portLevelSettings", index)
        port = ((level or {}).get("port") or {}).get("number")
        if port is None:
            report.error(
                "PF113", (*here, "port", "number"), "a port-level setting needs a port number"
            )
            continue
        if not 1 <= port <= 65535:
            report.error("PF114", (*here, "port", "number"), f"port {port} is not 1-65535")
        if port in seen:
            report.error("PF114", (*here, "port", "number"), f"port {port} is configured twice")
        seen.add(port)
        levels.append(
            PortTrafficPolicy(
                port=port,
                load_balancer=_load_balancer(level["loadBalancer"], (*here, "loadBalancer"), report)
                if level.get("loadBalancer")
                else None,
                connection_pool=_connection_pool(level["connectionPool"])
                if level.get("connectionPool")
                else None,
                outlier_detection=_outlier(
                    level["outlierDetection"], (*here, "outlierDetection"), report
                )
                if level.get("outlierDetection")
                else None,
            )
        )
    return TrafficPolicy(
        load_balancer=_load_balancer(value["loadBalancer"], (*path, "loadBalancer"), report)
        if value.get("loadBalancer")
        else None,
        connection_pool=_connection_pool(value["connectionPool"])
        if value.get("connectionPool")
        else None,
        outlier_detection=_outlier(value["outlierDetection"], (*path, "outlierDetection"), report)
        if value.get("outlierDetection")
        else None,
        port_level=tuple(sorted(levels, key=lambda p: p.port)) if levels else (),
    )


def destination_rule(
    spec: dict[str, Any], namespace: str, name: str, report: Reporter
) -> DestinationPolicy:
    host = spec.get("host")
    if not host:
        report.error("PF113", ("spec", "host"), "a DestinationRule needs a host")
        host = ""
    subsets: list[Subset] = []
    first: dict[str, int] = {}
    for index, subset in enumerate(spec.get("subsets") or ()):
        here: Path = ("spec", "subsets", index)
        subset = subset or {}
        subset_name = subset.get("name")
        if not subset_name:
            report.error("PF113", (*here, "name"), "a subset needs a name")
            continue
        if subset_name in first:
            report.error(
                "PF119",
                (*here, "name"),
                f"subset {subset_name!r} is already defined at spec.subsets[{first[subset_name]}]; "
                "subset names must be unique",
            )
            continue
        first[subset_name] = index
        if not labels_clean(subset.get("labels")):
            check_labels(subset.get("labels"), (*here, "labels"), report)
        policy = subset.get("trafficPolicy")
        subsets.append(
            Subset(
                name=subset_name,
                labels=tuple(sorted((subset.get("labels") or {}).items())),
                traffic_policy=traffic_policy(policy, (*here, "trafficPolicy"), report)
                if policy
                else None,
            )
        )
    policy = spec.get("trafficPolicy")
    return DestinationPolicy(
        host=fqdn(host, namespace) if host else "",
        namespace=namespace,
        name=name,
        traffic_policy=traffic_policy(policy, ("spec", "trafficPolicy"), report)
        if policy
        else TrafficPolicy(),
        subsets=tuple(subsets),
        export_to=_rule_export_to(spec, namespace, report),
    )


_new_destination_policy = slot_constructor(DestinationPolicy)
_new_subset = slot_constructor(Subset)
_new_traffic_policy = slot_constructor(TrafficPolicy)
_new_load_balancer = slot_constructor(LoadBalancer)
_NO_TRAFFIC_POLICY = TrafficPolicy()


def clean_destination_rule(
    spec: dict[str, Any], namespace: str, name: str
) -> DestinationPolicy | None:
    """:func:`destination_rule` of a spec it would report nothing about, else None ("not sure").

    For a spec the schema check passed: one pass without paths; exportTo is left to
    :func:`destination_rule`.
    """
    host = spec.get("host")
    if not host or spec.get("exportTo"):
        return None
    subsets: list[Subset] = []
    names: set[str] = set()
    for subset in spec.get("subsets") or ():
        subset_name = subset.get("name") if subset else None
        if not subset_name or subset_name in names:
            return None
        names.add(subset_name)
        labels = clean_labels(subset.get("labels"))
        policy = subset.get("trafficPolicy")
        traffic = _clean_traffic_policy(policy) if policy else None
        if labels is None or (policy and traffic is None):
            return None
        subsets.append(_new_subset(share(subset_name), labels, traffic))
    policy = spec.get("trafficPolicy")
    traffic = _clean_traffic_policy(policy) if policy else _NO_TRAFFIC_POLICY
    if traffic is None:
        return None
    return _new_destination_policy(
        share(fqdn(host, namespace)), namespace, name, traffic, tuple(subsets), EXPORTED_EVERYWHERE
    )


def _clean_traffic_policy(value: dict[str, Any]) -> TrafficPolicy | None:
    balancer = value.get("loadBalancer")
    if (
        value.get("portLevelSettings")
        or value.get("outlierDetection")
        or (
            balancer
            and (balancer.get("consistentHash") is not None or balancer.get("warmup") is not None)
        )
    ):
        # Rarer settings, with checks of their own: the reporting conversion decides.
        report = Reporter("", 0, "")
        policy = traffic_policy(value, (), report)
        return None if report.findings else policy
    simple = balancer.get("simple") if balancer else None
    pool = value.get("connectionPool")
    return _new_traffic_policy(
        _new_load_balancer(_SIMPLE[simple], None, None)
        if simple is not None and simple != "UNSPECIFIED"
        else None,
        _connection_pool(pool) if pool else None,
        None,
        (),
    )


def _rule_export_to(spec: dict[str, Any], namespace: str, report: Reporter) -> ExportTo:
    exported = export_to(
        spec.get("exportTo") or (), namespace, ("spec", "exportTo"), report, allow_nobody=False
    )
    selective = spec.get("workloadSelector") is not None
    if selective and spec.get("exportTo") and exported != (namespace,):
        # As in Istio: a rule for some workloads cannot reach into other namespaces.
        report.error(
            "PF114",
            ("spec", "exportTo"),
            "a DestinationRule with a workloadSelector can be exported only to its own "
            "namespace: set exportTo: ['.']",
        )
    return exported


LOAD_BALANCER_ANNOTATION = "pilotfish.io/load-balancer"
LATENCY_DECAY_ANNOTATION = "pilotfish.io/latency-decay"
_ANNOTATED_BALANCERS = {"latency-aware": LoadBalancerKind.LATENCY_AWARE}


def annotated_policy(
    policy: DestinationPolicy, annotations: Mapping[str, Any], report: Reporter
) -> DestinationPolicy:
    """``policy`` with the load balancer the DestinationRule's ``annotations`` select, if any."""
    chosen = annotations.get(LOAD_BALANCER_ANNOTATION)
    decay_text = annotations.get(LATENCY_DECAY_ANNOTATION)
    here: Path = ("metadata", "annotations")
    if chosen is None:
        if decay_text is not None:
            report.warn(
                "PF111",
                (*here, LATENCY_DECAY_ANNOTATION),
                f"{LATENCY_DECAY_ANNOTATION} has no effect without "
                f"{LOAD_BALANCER_ANNOTATION}: latency-aware",
            )
        return policy
    kind = _ANNOTATED_BALANCERS.get(chosen)
    if kind is None:
        report.error(
            "PF114",
            (*here, LOAD_BALANCER_ANNOTATION),
            f"{chosen!r} is not a load balancer Pilotfish provides; use "
            + " or ".join(sorted(_ANNOTATED_BALANCERS)),
        )
        return policy
    decay = None
    if decay_text is not None:
        decay = parse_duration(decay_text)
        if decay is None or decay.total_seconds() <= 0:
            report.error(
                "PF114",
                (*here, LATENCY_DECAY_ANNOTATION),
                f"{decay_text!r} is not a positive duration such as 10s or 500ms",
            )
            return policy
    if policy.traffic_policy.load_balancer is not None:
        report.warn(
            "PF111",
            ("spec", "trafficPolicy", "loadBalancer"),
            f"ignored: the annotation {LOAD_BALANCER_ANNOTATION}: {chosen} selects the "
            "host-wide load balancer",
        )
    balancer = LoadBalancer(kind, latency_decay=decay)
    return replace(policy, traffic_policy=replace(policy.traffic_policy, load_balancer=balancer))


def _is_prime(number: int) -> bool:
    if number < 2:
        return False
    return all(number % divisor for divisor in range(2, int(number**0.5) + 1))
