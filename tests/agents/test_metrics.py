"""The agent's metrics: hot-path counts, balancer and table state read at scrape time."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from agents.balancers import make_balancer
from agents.lb_config import parse_lb, parse_outlier
from agents.metrics import AgentMetrics
from agents.table import ForwardingTable, LbHooks, build_table
from tests.agents.table_support import example_mesh, resources_of

REVIEWS = "outbound|9080||reviews.bookinfo.svc.cluster.local"
DETAILS = "outbound|9080||details.bookinfo.svc.cluster.local"
SUBSETS = tuple(f"outbound|9080|v{n}|reviews.bookinfo.svc.cluster.local" for n in (1, 2, 3))


def samples(metrics: AgentMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample named ``name``, by its sorted labels."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def bookinfo_table(clock: Clock) -> ForwardingTable:
    hooks = LbHooks(parse_lb, parse_outlier, functools.partial(make_balancer, clock=clock))
    return build_table(resources_of(example_mesh("bookinfo")), lb=hooks)


def test_request_done_counts_each_cluster_and_status_exactly() -> None:
    metrics = AgentMetrics()
    for _ in range(3):
        metrics.request_done(REVIEWS, 200)
    metrics.request_done(REVIEWS, 503)
    metrics.request_done(DETAILS, 200)
    metrics.request_done("", 404)
    assert samples(metrics, "pilotfish_agent_requests_total") == {
        (("cluster", ""), ("code", "404")): 1.0,
        (("cluster", DETAILS), ("code", "200")): 1.0,
        (("cluster", REVIEWS), ("code", "200")): 3.0,
        (("cluster", REVIEWS), ("code", "503")): 1.0,
    }


def test_connect_errors_and_retries_are_counted_per_cluster() -> None:
    metrics = AgentMetrics()
    metrics.connect_error(REVIEWS)
    metrics.connect_error(REVIEWS)
    metrics.retry(REVIEWS)
    metrics.retry(DETAILS)
    assert samples(metrics, "pilotfish_agent_upstream_connect_errors_total") == {
        (("cluster", REVIEWS),): 2.0
    }
    assert samples(metrics, "pilotfish_agent_retries_total") == {
        (("cluster", DETAILS),): 1.0,
        (("cluster", REVIEWS),): 1.0,
    }


def test_two_agents_count_apart_and_the_global_registry_stays_untouched() -> None:
    first, second = AgentMetrics(), AgentMetrics()
    first.request_done(REVIEWS, 200)
    assert samples(second, "pilotfish_agent_requests_total") == {}
    assert samples(first, "pilotfish_agent_requests_total") == {
        (("cluster", REVIEWS), ("code", "200")): 1.0
    }
    assert not any(m.name.startswith("pilotfish_agent") for m in REGISTRY.collect())


def test_a_cluster_gone_from_the_applied_table_loses_its_counts() -> None:
    clock = Clock()
    table = bookinfo_table(clock)
    metrics = AgentMetrics()
    metrics.request_done(REVIEWS, 200)
    metrics.request_done("outbound|9080||gone.bookinfo.svc.cluster.local", 200)
    metrics.request_done("", 404)
    metrics.retry("outbound|9080||gone.bookinfo.svc.cluster.local")
    metrics.table_applied(table)
    assert samples(metrics, "pilotfish_agent_requests_total") == {
        (("cluster", ""), ("code", "404")): 1.0,
        (("cluster", REVIEWS), ("code", "200")): 1.0,
    }
    assert samples(metrics, "pilotfish_agent_retries_total") == {}


def test_ejections_and_returns_are_read_from_the_balancers_of_the_table_in_force() -> None:
    clock = Clock()
    table = bookinfo_table(clock)
    metrics = AgentMetrics(table=lambda: table)
    entry = table.cluster(REVIEWS)
    assert entry is not None
    balancer = entry.balancer
    target = entry.endpoints[0]
    for _ in range(5):  # the DestinationRule's consecutive5xxErrors
        balancer.started(target)
        balancer.finished(target, 0.01, 503)
    # Only the clusters with outlier detection: reviews and its subsets.
    untouched = {(("cluster", name),): 0.0 for name in SUBSETS}
    assert samples(metrics, "pilotfish_agent_outlier_ejections_total") == {
        **untouched,
        (("cluster", REVIEWS),): 1.0,
    }
    assert samples(metrics, "pilotfish_agent_outlier_returns_total") == {
        **untouched,
        (("cluster", REVIEWS),): 0.0,
    }
    endpoints = samples(metrics, "pilotfish_agent_cluster_endpoints")
    assert {k: v for k, v in endpoints.items() if ("cluster", REVIEWS) in k} == {
        (("cluster", REVIEWS), ("state", "ejected")): 1.0,
        (("cluster", REVIEWS), ("state", "in_use")): 2.0,
        (("cluster", REVIEWS), ("state", "unhealthy")): 0.0,
    }
    clock.now += 31.0  # past baseEjectionTime 30s
    balancer.pick()
    assert samples(metrics, "pilotfish_agent_outlier_returns_total") == {
        **untouched,
        (("cluster", REVIEWS),): 1.0,
    }
    assert (
        samples(metrics, "pilotfish_agent_cluster_endpoints")[
            (("cluster", REVIEWS), ("state", "in_use"))
        ]
        == 3.0
    )


def test_outstanding_requests_are_gauged_per_cluster() -> None:
    table = bookinfo_table(Clock())
    metrics = AgentMetrics(table=lambda: table)
    entry = table.cluster(DETAILS)
    assert entry is not None
    entry.balancer.started(entry.endpoints[0])
    entry.balancer.started(entry.endpoints[0])
    active = samples(metrics, "pilotfish_agent_cluster_requests_active")
    assert active[(("cluster", DETAILS),)] == 2.0
    assert active[(("cluster", REVIEWS),)] == 0.0


@dataclass
class TableLike:
    ignored: tuple[str, ...]
    pending: tuple[str, ...]


def test_table_build_time_is_a_histogram_and_ignored_and_pending_lines_are_gauged() -> None:
    table = TableLike(("Listener a: access_log: not supported, ignored",), ("b", "c"))
    metrics = AgentMetrics(table=lambda: table)
    metrics.table_built(0.003)
    metrics.table_built(0.2)
    buckets = samples(metrics, "pilotfish_agent_table_build_seconds_bucket")
    assert buckets[(("le", "0.0025"),)] == 0.0
    assert buckets[(("le", "0.005"),)] == 1.0
    assert buckets[(("le", "0.25"),)] == 2.0
    assert samples(metrics, "pilotfish_agent_table_build_seconds_count") == {(): 2.0}
    assert samples(metrics, "pilotfish_agent_table_ignored") == {(): 1.0}
    assert samples(metrics, "pilotfish_agent_table_pending") == {(): 2.0}


def test_without_a_table_or_client_nothing_is_reported_and_nothing_fails() -> None:
    metrics = AgentMetrics()
    assert samples(metrics, "pilotfish_agent_table_ignored") == {}
    assert samples(metrics, "pilotfish_agent_xds_acks_total") == {}
    assert samples(metrics, "pilotfish_agent_ready") == {}


class ProxyStats:
    """Shaped like the data plane's ``http_proxy.Stats``: Counters it updates itself."""

    def __init__(self) -> None:
        self.requests = 0
        self.responses: Counter[tuple[str, int]] = Counter()
        self.errors: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.upstream_connect_errors: Counter[str] = Counter()


def test_watched_data_plane_counts_are_exported_and_summed_with_the_typed_calls() -> None:
    metrics = AgentMetrics()
    stats = ProxyStats()
    metrics.watch(stats)
    metrics.watch(stats)  # once only
    stats.requests += 3
    stats.responses[(REVIEWS, 200)] += 2
    stats.responses[("", 404)] += 1
    stats.errors["route_not_found"] += 1
    stats.retries[REVIEWS] += 1
    stats.upstream_connect_errors[REVIEWS] += 1
    metrics.request_started()
    metrics.request_done(REVIEWS, 200)
    metrics.local_error("route_not_found")
    metrics.local_error("no_healthy_upstream")
    metrics.retry(DETAILS)
    assert samples(metrics, "pilotfish_agent_downstream_requests_total") == {(): 4.0}
    assert samples(metrics, "pilotfish_agent_requests_total") == {
        (("cluster", ""), ("code", "404")): 1.0,
        (("cluster", REVIEWS), ("code", "200")): 3.0,
    }
    assert samples(metrics, "pilotfish_agent_local_errors_total") == {
        (("reason", "no_healthy_upstream"),): 1.0,
        (("reason", "route_not_found"),): 2.0,
    }
    assert samples(metrics, "pilotfish_agent_retries_total") == {
        (("cluster", DETAILS),): 1.0,
        (("cluster", REVIEWS),): 1.0,
    }
    assert samples(metrics, "pilotfish_agent_upstream_connect_errors_total") == {
        (("cluster", REVIEWS),): 1.0
    }


def test_applying_a_table_prunes_gone_clusters_in_watched_counts_too() -> None:
    table = bookinfo_table(Clock())
    metrics = AgentMetrics()
    stats = ProxyStats()
    metrics.watch(stats)
    gone = "outbound|9080||gone.bookinfo.svc.cluster.local"
    stats.responses[(gone, 200)] += 1
    stats.responses[(REVIEWS, 200)] += 1
    stats.upstream_connect_errors[gone] += 1
    metrics.table_applied(table)
    assert dict(stats.responses) == {(REVIEWS, 200): 1}
    assert dict(stats.upstream_connect_errors) == {}
