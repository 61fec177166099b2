"""Load reports: live traffic per cluster and locality, as the proxies count it.

Envoy, proxyless gRPC clients and Pilotfish's agents speak the Load Reporting
Service (``envoy.service.load_stats.v3``): a client opens a stream, says who it
is, and the server answers once with which clusters to report on (here all of
them, ``send_all_clusters``) and how often. From then on the client sends, every
interval, the requests it issued, completed successfully, failed and dropped
since its previous report, and the requests in flight right now, per cluster
and locality.

:class:`LoadReports` is the sans-IO core: :meth:`LoadReports.response` is the
answer to a stream's first request; :meth:`LoadReports.report` takes every
request (the first carries no stats, later ones do) from a reporter (one
stream) and :meth:`LoadReports.close` forgets it. Issued, successful, error
and dropped counts are deltas and are added up, per cluster and locality,
into cumulative totals and into time buckets one interval wide, of which the
last ``window`` seconds give the rates (:meth:`LoadReports.rates`). Requests
in progress are a gauge: each reporter's latest report counts, summed over the
reporters still alive; a cluster or locality missing from it has none (Envoy
leaves out localities without traffic, and sends clusters without traffic
empty: those are skipped before anything else, as a large mesh has many).

The server hands the core each request as it came off the wire
(:meth:`LoadReports.report_wire`), because of what Envoy sends: every cluster
it holds, in every report, those without traffic too. Decoding the whole
request and looking at each cluster from Python costs about 1.7 µs a cluster,
which at tens of thousands of clusters is tens of milliseconds of the event
loop per report. So the request is first read as a message of its own (the
node, and the clusters as raw bytes: one pass of the C parser, no Python
object per field), and a cluster is decoded only if its bytes contain the tag
of the locality stats (field 2) or of the total dropped count (field 3). A
cluster without traffic has neither field, so none of those bytes in its tags;
one byte can also occur in a name's length or in the interval's varints, and
such a cluster is simply decoded and skipped as before. Same result as
:meth:`LoadReports.report` on the decoded request, at a fifth of the cost for
empty clusters (``bench/lrs_decode.py``).

Memory is bounded whatever clients send: at most ``max_clusters`` clusters and
``max_localities`` localities per cluster are tracked (reports on more are
counted in :attr:`LoadReports.ignored` and otherwise ignored), names are
clipped, at most ``max_reporters`` streams are tracked (each with at most
``max_clusters`` non-zero in-flight gauges), and a reporter silent
for three intervals is dropped with its in-flight gauges (checked at most once
an interval, so a report costs the same however many reporters there are).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import load_report_pb2
from envoy.service.load_stats.v3 import lrs_pb2
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message,
    message_factory,
)

MAX_NAME_CHARS = 256
STALE_INTERVALS = 3.0
_TRAFFIC_TAGS = (0x12, 0x18)
"""Tags of ``ClusterStats.upstream_locality_stats`` (2, length-delimited) and
``total_dropped_requests`` (3, varint): a cluster with neither has no traffic."""


class MalformedReport(ValueError):
    """A load report that is not a valid ``LoadStatsRequest``."""


def _skim_type() -> type[message.Message]:
    """``LoadStatsRequest`` with its node and each cluster left as bytes."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="pilotfish/lrs_skim.proto", package="pilotfish.lrs_skim", syntax="proto3"
    )
    request = proto.message_type.add(name="LoadStatsRequest")
    request.field.add(name="node", number=1, type=field.TYPE_BYTES, label=field.LABEL_OPTIONAL)
    request.field.add(
        name="cluster_stats", number=2, type=field.TYPE_BYTES, label=field.LABEL_REPEATED
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    skim: type[message.Message] = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("pilotfish.lrs_skim.LoadStatsRequest")
    )
    return skim


_SkimRequest = _skim_type()


@dataclass(frozen=True, slots=True)
class LoadCounts:
    """Cumulative request counts, and the requests in progress now."""

    issued: int = 0
    successful: int = 0
    errors: int = 0
    dropped: int = 0
    in_progress: int = 0


@dataclass(frozen=True, slots=True)
class ClusterLoad:
    """One cluster's totals, and the same per locality (``region/zone/sub_zone``)."""

    cluster: str
    counts: LoadCounts
    localities: Mapping[str, LoadCounts]


@dataclass(frozen=True, slots=True)
class ClusterRate:
    """One cluster's traffic over the recent window."""

    cluster: str
    requests_per_second: float
    errors_per_second: float
    dropped_per_second: float
    error_ratio: float
    """Errors over completed requests (successful + errors) in the window; 0 when none."""
    in_progress: int


class _Tally:
    __slots__ = ("dropped", "errors", "issued", "successful")

    def __init__(self) -> None:
        self.issued = 0
        self.successful = 0
        self.errors = 0
        self.dropped = 0

    def add(self, issued: int, successful: int, errors: int, dropped: int) -> None:
        self.issued += issued
        self.successful += successful
        self.errors += errors
        self.dropped += dropped


class _Cluster:
    __slots__ = ("buckets", "first_seen", "localities", "total")

    def __init__(self, now: float) -> None:
        self.total = _Tally()
        self.localities: dict[str, _Tally] = {}
        self.buckets: deque[tuple[int, _Tally]] = deque()
        self.first_seen = now


class _Reporter:
    __slots__ = ("in_progress", "last_seen", "node_id")

    def __init__(self, node_id: str, now: float) -> None:
        self.node_id = node_id
        self.last_seen = now
        self.in_progress: dict[tuple[str, str], int] = {}


def node_id(data: bytes) -> str:
    """The id of a serialized ``Node`` ("" if it cannot be read)."""
    try:
        node_id: str = base_pb2.Node.FromString(data).id
    except message.DecodeError:
        return ""
    return node_id


def request_node_id(data: bytes) -> str:
    """The node id of a serialized ``LoadStatsRequest`` ("" if it cannot be read)."""
    try:
        skim: Any = _SkimRequest.FromString(data)
    except message.DecodeError:
        return ""
    return node_id(skim.node)


def locality_key(locality: base_pb2.Locality) -> str:
    """``region/zone/sub_zone`` ("" for a report without locality)."""
    if not (locality.region or locality.zone or locality.sub_zone):
        return ""
    return _clip(f"{locality.region}/{locality.zone}/{locality.sub_zone}")


def _clip(name: str) -> str:
    return name[:MAX_NAME_CHARS]


class LoadReports:
    """Aggregated load reports of every connected reporter (see the module docstring)."""

    def __init__(
        self,
        interval: float = 10.0,
        *,
        window: float = 60.0,
        max_clusters: int = 10_000,
        max_localities: int = 100,
        max_reporters: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError("the load report interval must be positive")
        self.interval = interval
        self.window = max(window, interval)
        self.max_clusters = max_clusters
        self.max_localities = max_localities
        self.max_reporters = max_reporters
        self._clock = clock
        self._clusters: dict[str, _Cluster] = {}
        self._reporters: dict[str, _Reporter] = {}
        self._buckets = max(1, int(self.window / interval + 0.999999))
        self._next_expiry = 0.0
        self.ignored = 0
        """Cluster or locality stats dropped because a cap was reached, or reporters refused."""
        self._response = self._make_response()

    def _make_response(self) -> lrs_pb2.LoadStatsResponse:
        seconds = int(self.interval)
        nanos = round((self.interval - seconds) * 1e9)
        return lrs_pb2.LoadStatsResponse(
            send_all_clusters=True,
            load_reporting_interval=duration_pb2.Duration(seconds=seconds, nanos=nanos),
        )

    def response(self) -> lrs_pb2.LoadStatsResponse:
        """The answer to a stream's first request: report every cluster, every interval."""
        return self._response

    def report(
        self, reporter: str, request: lrs_pb2.LoadStatsRequest, now: float | None = None
    ) -> bool:
        """Take one decoded request of ``reporter``'s stream; False if refused (too many
        reporters)."""
        state = self._reporter(reporter, lambda: request.node.id, now)
        if state is None:
            return False
        clusters = (
            stats
            for stats in request.cluster_stats
            if stats.upstream_locality_stats or stats.total_dropped_requests
        )
        self._take(state, clusters)
        return True

    def report_wire(self, reporter: str, data: bytes, now: float | None = None) -> bool:
        """:meth:`report` for a request as serialized, decoding only the clusters with
        traffic; :class:`MalformedReport` if it is not a ``LoadStatsRequest``."""
        try:
            skim: Any = _SkimRequest.FromString(data)
            wanted = [
                load_report_pb2.ClusterStats.FromString(cluster)
                for cluster in skim.cluster_stats
                if _TRAFFIC_TAGS[0] in cluster or _TRAFFIC_TAGS[1] in cluster
            ]
        except message.DecodeError as exc:
            raise MalformedReport(f"malformed load report: {exc}") from None
        state = self._reporter(reporter, lambda: node_id(skim.node), now)
        if state is None:
            return False
        clusters = (
            stats
            for stats in wanted
            if stats.upstream_locality_stats or stats.total_dropped_requests
        )
        self._take(state, clusters)
        return True

    def _reporter(
        self, reporter: str, node: Callable[[], str], now: float | None
    ) -> _Reporter | None:
        now = self._clock() if now is None else now
        if now >= self._next_expiry:
            self.expire(now)
        state = self._reporters.get(reporter)
        if state is None:
            if len(self._reporters) >= self.max_reporters:
                self.ignored += 1
                return None
            state = _Reporter(_clip(node()), now)
            self._reporters[reporter] = state
        state.last_seen = now
        return state

    def _take(self, state: _Reporter, clusters: Iterable[load_report_pb2.ClusterStats]) -> None:
        now = state.last_seen
        bucket = int(now / self.interval)
        gauges: dict[tuple[str, str], int] = {}
        for stats in clusters:
            self._add_cluster(gauges, stats, bucket, now)
        state.in_progress = gauges

    def _add_cluster(
        self,
        gauges: dict[tuple[str, str], int],
        stats: load_report_pb2.ClusterStats,
        bucket: int,
        now: float,
    ) -> None:
        name = _clip(stats.cluster_name)
        cluster = self._clusters.get(name)
        if cluster is None:
            if len(self._clusters) >= self.max_clusters:
                self.ignored += 1
                return
            cluster = self._clusters[name] = _Cluster(now)
        if cluster.buckets and cluster.buckets[-1][0] == bucket:
            recent = cluster.buckets[-1][1]
        else:
            recent = _Tally()
            cluster.buckets.append((bucket, recent))
            while len(cluster.buckets) > self._buckets:
                cluster.buckets.popleft()
        dropped = stats.total_dropped_requests
        cluster.total.add(0, 0, 0, dropped)
        recent.add(0, 0, 0, dropped)
        for upstream in stats.upstream_locality_stats:
            key = locality_key(upstream.locality)
            locality = cluster.localities.get(key)
            if locality is None:
                if len(cluster.localities) >= self.max_localities:
                    self.ignored += 1
                    continue
                locality = cluster.localities[key] = _Tally()
            counts = (
                upstream.total_issued_requests,
                upstream.total_successful_requests,
                upstream.total_error_requests,
                0,
            )
            locality.add(*counts)
            cluster.total.add(*counts)
            recent.add(*counts)
            active = upstream.total_requests_in_progress
            if active:
                if len(gauges) < self.max_clusters:
                    gauges[(name, key)] = active
                else:
                    self.ignored += 1

    def close(self, reporter: str) -> None:
        """``reporter``'s stream ended: its in-flight requests no longer count."""
        self._reporters.pop(reporter, None)

    def expire(self, now: float | None = None) -> None:
        """Drop reporters silent for three intervals."""
        now = self._clock() if now is None else now
        self._next_expiry = now + self.interval
        limit = now - STALE_INTERVALS * self.interval
        stale = [key for key, state in self._reporters.items() if state.last_seen < limit]
        for key in stale:
            del self._reporters[key]

    def reporters(self) -> dict[str, str]:
        """Live reporters (stream key -> node id)."""
        return {key: state.node_id for key, state in self._reporters.items()}

    def _in_progress(self) -> dict[tuple[str, str], int]:
        gauges: dict[tuple[str, str], int] = {}
        for state in self._reporters.values():
            for key, value in state.in_progress.items():
                gauges[key] = gauges.get(key, 0) + value
        return gauges

    def totals(self, now: float | None = None) -> dict[str, ClusterLoad]:
        """Cumulative counts per cluster and locality since the server started."""
        self.expire(now)
        gauges = self._in_progress()
        result: dict[str, ClusterLoad] = {}
        for name, cluster in sorted(self._clusters.items()):
            localities = {
                key: _counts(tally, gauges.get((name, key), 0))
                for key, tally in sorted(cluster.localities.items())
            }
            in_progress = sum(c.in_progress for c in localities.values())
            result[name] = ClusterLoad(name, _counts(cluster.total, in_progress), localities)
        return result

    def rates(self, now: float | None = None) -> dict[str, ClusterRate]:
        """Requests, errors and drops per second over the last ``window`` seconds, per cluster."""
        now = self._clock() if now is None else now
        self.expire(now)
        in_progress: dict[str, int] = {}
        for (name, _), value in self._in_progress().items():
            in_progress[name] = in_progress.get(name, 0) + value
        oldest = int(now / self.interval) - self._buckets
        result: dict[str, ClusterRate] = {}
        for name, cluster in sorted(self._clusters.items()):
            recent = _Tally()
            for bucket, tally in cluster.buckets:
                if bucket > oldest:
                    recent.add(tally.issued, tally.successful, tally.errors, tally.dropped)
            span = max(self.interval, min(self.window, now - cluster.first_seen))
            completed = recent.successful + recent.errors
            result[name] = ClusterRate(
                cluster=name,
                requests_per_second=recent.issued / span,
                errors_per_second=recent.errors / span,
                dropped_per_second=recent.dropped / span,
                error_ratio=recent.errors / completed if completed else 0.0,
                in_progress=in_progress.get(name, 0),
            )
        return result


def _counts(tally: _Tally, in_progress: int) -> LoadCounts:
    return LoadCounts(tally.issued, tally.successful, tally.errors, tally.dropped, in_progress)
