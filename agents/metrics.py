"""The agent's Prometheus metrics: one registry per agent, counted cheaply, read at scrape time.

:class:`AgentMetrics` owns a :class:`prometheus_client.CollectorRegistry` of
its own (never the process-global one), so several agents in one process,
and tests, keep separate counts. ``/metrics`` on the admin endpoint renders
it with :func:`AgentMetrics.render`.

Three sources, each counted where it is cheapest:

* Traffic is counted by the data plane in plain dicts (or Counters) shaped
  like :class:`TrafficCounts` (``http_proxy.Stats`` of the listener manager
  is one): no lock, no label lookup, one dict update per event. The agent
  hands the listener manager's counts to :meth:`AgentMetrics.watch`; code
  without such an object calls the typed methods
  :meth:`AgentMetrics.request_done`, :meth:`AgentMetrics.connect_error`,
  :meth:`AgentMetrics.retry` and so on, which count into the metrics' own
  :class:`TrafficCounts`. Every watched source is summed when scraped. The
  event loop is the only writer and the scrape runs on it too, so plain ints
  are exact. A cluster's counts are dropped when a table without it is
  applied, so the series follow the configuration and stay bounded.
* The control path (table builds, xDS responses) uses ordinary
  prometheus-client metrics, or counts the xDS client keeps anyway
  (:class:`~agents.xds_client.ClientStats`).
* What the current table already knows is read when scraped, never counted
  per request: the balancers' ejections and returns (kept by their outlier
  detectors, which survive table swaps), endpoints in use, ejected and
  busy, the versions in force, and the ignored and pending lines.

Series (all prefixed ``pilotfish_agent_``; counters end in ``_total``):

* ``requests_total{cluster,code}``: responses sent, by the cluster the
  request went to (``""`` when answered locally) and HTTP status;
* ``downstream_requests_total``: HTTP requests and TCP connections received;
* ``upstream_connect_errors_total{cluster}``, ``retries_total{cluster}``;
* ``local_errors_total{reason}``: failures the agent answered itself, by
  their ``x-pilotfish-error`` reason;
* ``outlier_ejections_total{cluster}``, ``outlier_returns_total{cluster}``
  (clusters with outlier detection);
* ``cluster_endpoints{cluster,state}``: endpoints ``in_use``, ``ejected``,
  ``unhealthy``; ``cluster_requests_active{cluster}``: requests outstanding;
* ``xds_acks_total{type}``, ``xds_nacks_total{type}`` (CDS, EDS, LDS, RDS);
  ``xds_version_info{type,version}``: 1 for the version in force;
  ``xds_connects_total``, ``config_applies_total``, ``ready``;
* ``table_build_seconds`` (histogram), ``table_ignored`` and
  ``table_pending``: the lines the table in force ignored and still waits for.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.cache import HeldConfig
from controlplane.xds.types import push_rank, short_name

PREFIX = "pilotfish_agent_"
BUILD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class TrafficSource(Protocol):
    """Traffic counts a data plane keeps (``http_proxy.Stats`` has this shape)."""

    @property
    def requests(self) -> int: ...

    @property
    def responses(self) -> Mapping[tuple[str, int], int]:
        """By (cluster or "", status)."""

    @property
    def errors(self) -> Mapping[str, int]:
        """By x-pilotfish-error reason."""

    @property
    def retries(self) -> Mapping[str, int]: ...

    @property
    def upstream_connect_errors(self) -> Mapping[str, int]: ...


class TrafficCounts:
    """Traffic counts in plain dicts (see :class:`TrafficSource`).

    ``d[k] = d.get(k, 0) + 1`` on a dict costs about half of ``c[k] += 1`` on a
    ``collections.Counter``, whose missing-key hook makes every lookup slower.
    """

    __slots__ = ("errors", "requests", "responses", "retries", "upstream_connect_errors")

    def __init__(self) -> None:
        self.requests = 0
        self.responses: dict[tuple[str, int], int] = {}
        self.errors: dict[str, int] = {}
        self.retries: dict[str, int] = {}
        self.upstream_connect_errors: dict[str, int] = {}


class XdsState(Protocol):
    """What the metrics read from the xDS client at scrape time."""

    @property
    def stats(self) -> Any: ...

    @property
    def held(self) -> HeldConfig: ...

    @property
    def ready(self) -> asyncio.Event: ...


class AgentMetrics:
    """An agent's metrics; ``table`` and ``xds`` give the current table and client when scraped."""

    __slots__ = (
        "_build",
        "_connect_errors",
        "_responses",
        "_retries",
        "_sources",
        "_table",
        "_xds",
        "counts",
        "registry",
    )

    def __init__(
        self,
        table: Callable[[], Any | None] = lambda: None,
        xds: Callable[[], XdsState | None] = lambda: None,
    ) -> None:
        self._table = table
        self._xds = xds
        self.counts = counts = TrafficCounts()
        """What the typed methods below count into."""
        self._responses = counts.responses
        self._connect_errors = counts.upstream_connect_errors
        self._retries = counts.retries
        self._sources: list[Any] = [counts]
        self.registry = CollectorRegistry(auto_describe=False)
        self._build = Histogram(
            PREFIX + "table_build_seconds",
            "Time to build a forwarding table from the resources held.",
            buckets=BUILD_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Collector(self))

    def watch(self, source: TrafficSource) -> None:
        """Export ``source``'s traffic counts too (summed with the others when scraped)."""
        if all(s is not source for s in self._sources):
            self._sources.append(source)

    # -- the data plane's hot path --------------------------------------------------

    def request_started(self) -> None:
        """A request (or TCP connection) was received."""
        self.counts.requests += 1

    def request_done(self, cluster: str, status: int) -> None:
        """A response with ``status`` went to the client (``cluster`` "" when answered locally)."""
        key = (cluster, status)
        responses = self._responses
        responses[key] = responses.get(key, 0) + 1

    def connect_error(self, cluster: str) -> None:
        """A connection to one of ``cluster``'s endpoints failed (refused, reset, timed out)."""
        errors = self._connect_errors
        errors[cluster] = errors.get(cluster, 0) + 1

    def retry(self, cluster: str) -> None:
        """A request to ``cluster`` is sent again."""
        retries = self._retries
        retries[cluster] = retries.get(cluster, 0) + 1

    def local_error(self, reason: str) -> None:
        """The agent answered a failure itself (``reason`` as in ``x-pilotfish-error``)."""
        errors = self.counts.errors
        errors[reason] = errors.get(reason, 0) + 1

    # -- the control path ---------------------------------------------------------

    def table_built(self, seconds: float) -> None:
        self._build.observe(seconds)

    def table_applied(self, table: Any) -> None:
        """Forget the per-cluster traffic counts of clusters ``table`` no longer has."""
        clusters = getattr(table, "clusters", None)
        if clusters is None:
            return
        for source in self._sources:
            for counts in (source.retries, source.upstream_connect_errors):
                for name in [n for n in counts if n and n not in clusters]:
                    del counts[name]
            responses = source.responses
            for key in [k for k in responses if k[0] and k[0] not in clusters]:
                del responses[key]

    def cluster_outcomes(self) -> dict[str, tuple[int, int]]:
        """Per cluster, the responses so far: (successful, errors); errors are 5xx."""
        outcomes: dict[str, tuple[int, int]] = {}
        for source in self._sources:
            for (cluster, status), count in list(source.responses.items()):
                if not cluster:
                    continue
                ok, failed = outcomes.get(cluster, (0, 0))
                if status >= 500:
                    failed += count
                else:
                    ok += count
                outcomes[cluster] = (ok, failed)
        return outcomes

    def cluster_in_progress(self) -> dict[str, int]:
        """Per cluster, the requests outstanding to its endpoints now."""
        return {
            name: sum(int(h.get("outstanding", 0)) for h in entry.balancer.snapshot())
            for name, entry in _cluster_entries(self._table())
        }

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    # -- read when scraped --------------------------------------------------------

    def _collect(self) -> Iterator[Metric]:
        responses: Counter[tuple[str, int]] = Counter()
        errors: Counter[str] = Counter()
        retries: Counter[str] = Counter()
        connect_errors: Counter[str] = Counter()
        received = 0
        for source in self._sources:
            received += source.requests
            responses.update(source.responses)
            errors.update(source.errors)
            retries.update(source.retries)
            connect_errors.update(source.upstream_connect_errors)
        requests = CounterMetricFamily(
            PREFIX + "requests",
            "Responses sent, by upstream cluster (empty: answered locally) and status code.",
            labels=("cluster", "code"),
        )
        for (cluster, status), count in sorted(responses.items()):
            requests.add_metric((cluster, str(status)), count)
        yield requests
        yield CounterMetricFamily(
            PREFIX + "downstream_requests",
            "HTTP requests and TCP connections received.",
            value=received,
        )
        yield _labelled(
            "upstream_connect_errors",
            "Connections to an upstream endpoint that failed.",
            "cluster",
            connect_errors,
        )
        yield _labelled("retries", "Retries sent.", "cluster", retries)
        yield _labelled(
            "local_errors",
            "Failures the agent answered itself, by x-pilotfish-error reason.",
            "reason",
            errors,
        )
        yield from self._clusters()
        yield from self._xds_metrics()
        table = self._table()
        ignored = GaugeMetricFamily(
            PREFIX + "table_ignored", "Settings the forwarding table in force ignored."
        )
        pending = GaugeMetricFamily(
            PREFIX + "table_pending",
            "Resources the table in force references but has not received yet.",
        )
        if table is not None:
            ignored.add_metric((), len(getattr(table, "ignored", ())))
            pending.add_metric((), len(getattr(table, "pending", ())))
        yield ignored
        yield pending

    def _clusters(self) -> Iterator[Metric]:
        ejections = CounterMetricFamily(
            PREFIX + "outlier_ejections",
            "Endpoints ejected by outlier detection.",
            labels=("cluster",),
        )
        returns = CounterMetricFamily(
            PREFIX + "outlier_returns",
            "Ejected endpoints put back in use.",
            labels=("cluster",),
        )
        endpoints = GaugeMetricFamily(
            PREFIX + "cluster_endpoints",
            "Endpoints by state: in_use (receiving requests), ejected, unhealthy.",
            labels=("cluster", "state"),
        )
        active = GaugeMetricFamily(
            PREFIX + "cluster_requests_active",
            "Requests outstanding to the cluster's endpoints.",
            labels=("cluster",),
        )
        for name, entry in _cluster_entries(self._table()):
            balancer = entry.balancer
            if entry.outlier is not None:
                ejections.add_metric((name,), getattr(balancer, "ejections_total", 0))
                returns.add_metric((name,), getattr(balancer, "returns_total", 0))
            hosts = balancer.snapshot()
            for state, count in (
                ("in_use", sum(1 for h in hosts if h.get("in_use"))),
                ("ejected", sum(1 for h in hosts if h.get("ejected"))),
                ("unhealthy", sum(1 for h in hosts if not h.get("healthy", True))),
            ):
                endpoints.add_metric((name, state), count)
            active.add_metric((name,), sum(int(h.get("outstanding", 0)) for h in hosts))
        yield from (ejections, returns, endpoints, active)

    def _xds_metrics(self) -> Iterator[Metric]:
        acks = CounterMetricFamily(
            PREFIX + "xds_acks", "xDS responses ACKed, by type.", labels=("type",)
        )
        nacks = CounterMetricFamily(
            PREFIX + "xds_nacks", "xDS responses NACKed, by type.", labels=("type",)
        )
        versions = GaugeMetricFamily(
            PREFIX + "xds_version_info",
            "1 for the version in force of each resource type.",
            labels=("type", "version"),
        )
        connects = CounterMetricFamily(
            PREFIX + "xds_connects", "xDS streams that received a first response."
        )
        applies = CounterMetricFamily(
            PREFIX + "config_applies", "Configurations put in force (cached one included)."
        )
        ready = GaugeMetricFamily(PREFIX + "ready", "1 once a configuration is in force.")
        xds = self._xds()
        if xds is not None:
            stats = xds.stats
            for url, count in sorted(stats.acks_by_type.items(), key=_by_rank):
                acks.add_metric((short_name(url),), count)
            for url, count in sorted(stats.nacks_by_type.items(), key=_by_rank):
                nacks.add_metric((short_name(url),), count)
            held = xds.held
            for url in sorted(held.types, key=push_rank):
                versions.add_metric((short_name(url), held.types[url].version), 1)
            connects.add_metric((), stats.connects)
            applies.add_metric((), stats.applies)
            ready.add_metric((), 1 if xds.ready.is_set() else 0)
        yield from (acks, nacks, versions, connects, applies, ready)


class _Collector(Collector):
    def __init__(self, metrics: AgentMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics._collect()


def _labelled(name: str, documentation: str, label: str, counts: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(PREFIX + name, documentation, labels=(label,))
    for value, count in sorted(counts.items()):
        family.add_metric((value,), count)
    return family


def _cluster_entries(table: Any | None) -> list[tuple[str, Any]]:
    clusters = getattr(table, "clusters", None)
    if not clusters:
        return []
    return sorted(clusters.items())


def _by_rank(item: tuple[str, int]) -> int:
    return push_rank(item[0])
