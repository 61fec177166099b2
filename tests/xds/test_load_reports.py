"""The load report core: exact aggregation, rates over the window, bounded memory."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import load_report_pb2
from envoy.service.load_stats.v3 import lrs_pb2

from controlplane.xds.load_reports import ClusterRate, LoadCounts, LoadReports


def request(
    node: str = "envoy-1",
    *clusters: tuple[str, str, int, int, int, int],
    dropped: int = 0,
) -> lrs_pb2.LoadStatsRequest:
    """Clusters as (name, zone, issued, successful, errors, in_progress)."""
    message = lrs_pb2.LoadStatsRequest(node=base_pb2.Node(id=node))
    for name, zone, issued, ok, errors, active in clusters:
        stats = message.cluster_stats.add(cluster_name=name, total_dropped_requests=dropped)
        stats.upstream_locality_stats.append(
            load_report_pb2.UpstreamLocalityStats(
                locality=base_pb2.Locality(region="eu", zone=zone) if zone else None,
                total_issued_requests=issued,
                total_successful_requests=ok,
                total_error_requests=errors,
                total_requests_in_progress=active,
            )
        )
    return message


def test_the_response_asks_for_every_cluster_at_the_interval() -> None:
    response = LoadReports(0.5).response()
    assert response.send_all_clusters is True
    assert (response.load_reporting_interval.seconds, response.load_reporting_interval.nanos) == (
        0,
        500_000_000,
    )


def test_deltas_add_up_per_cluster_and_locality_and_in_progress_is_the_latest_gauge() -> None:
    reports = LoadReports(1.0)
    reports.report("a", request("envoy-1"), now=0.0)
    reports.report("a", request("envoy-1", ("reviews", "z1", 10, 8, 2, 3)), now=1.0)
    reports.report("a", request("envoy-1", ("reviews", "z1", 5, 5, 0, 1)), now=2.0)
    reports.report("b", request("envoy-2", ("reviews", "z2", 7, 6, 1, 4), dropped=2), now=2.0)
    totals = reports.totals(now=2.0)
    assert list(totals) == ["reviews"]
    reviews = totals["reviews"]
    assert reviews.counts == LoadCounts(
        issued=22, successful=19, errors=3, dropped=2, in_progress=5
    )
    assert dict(reviews.localities) == {
        "eu/z1/": LoadCounts(issued=15, successful=13, errors=2, dropped=0, in_progress=1),
        "eu/z2/": LoadCounts(issued=7, successful=6, errors=1, dropped=0, in_progress=4),
    }


def test_a_report_leaving_a_locality_out_means_nothing_in_flight_there() -> None:
    reports = LoadReports(1.0)
    reports.report("a", request("envoy-1", ("reviews", "z1", 3, 0, 0, 3)), now=0.0)
    assert reports.totals(now=0.0)["reviews"].counts.in_progress == 3
    empty = lrs_pb2.LoadStatsRequest(node=base_pb2.Node(id="envoy-1"))
    empty.cluster_stats.add(cluster_name="reviews")  # as Envoy sends a cluster without traffic
    empty.cluster_stats.add(cluster_name="idle")
    reports.report("a", empty, now=1.0)
    assert list(reports.totals(now=1.0)) == ["reviews"]
    assert reports.totals(now=1.0)["reviews"].counts == LoadCounts(3, 0, 0, 0, 0)


def test_a_closed_reporter_no_longer_counts_in_flight_but_its_totals_stay() -> None:
    reports = LoadReports(1.0)
    reports.report("a", request("envoy-1", ("reviews", "", 4, 4, 0, 9)), now=0.0)
    reports.close("a")
    assert reports.totals(now=0.0)["reviews"].counts == LoadCounts(4, 4, 0, 0, 0)
    assert reports.totals(now=0.0)["reviews"].localities.keys() == {""}


def test_a_reporter_silent_for_three_intervals_is_dropped() -> None:
    reports = LoadReports(1.0)
    reports.report("a", request("envoy-1", ("reviews", "", 1, 1, 0, 2)), now=0.0)
    assert reports.reporters() == {"a": "envoy-1"}
    assert reports.totals(now=2.9)["reviews"].counts.in_progress == 2
    assert reports.totals(now=3.1)["reviews"].counts.in_progress == 0
    assert reports.reporters() == {}


def test_rates_cover_the_window_and_forget_older_traffic() -> None:
    reports = LoadReports(1.0, window=4.0)
    reports.report("a", request("envoy-1", ("reviews", "", 40, 30, 10, 2)), now=0.5)
    for t in (1.5, 2.5, 3.5):
        reports.report("a", request("envoy-1", ("reviews", "", 40, 30, 10, 2)), now=t)
    # The report at 0.5 s is a whole window old at 4.5 s: the last three count.
    assert reports.rates(now=4.5)["reviews"] == ClusterRate(
        cluster="reviews",
        requests_per_second=120 / 4.0,
        errors_per_second=30 / 4.0,
        dropped_per_second=0.0,
        error_ratio=0.25,
        in_progress=2,
    )
    # Ten seconds later with reports of no traffic, the rate is zero; the totals remain.
    for t in range(6, 15):
        reports.report("a", request("envoy-1", ("reviews", "", 0, 0, 0, 0)), now=t + 0.5)
    assert reports.rates(now=14.6)["reviews"].requests_per_second == 0.0
    assert reports.totals(now=14.6)["reviews"].counts.issued == 160


def test_a_young_cluster_rate_is_over_the_time_it_has_been_seen() -> None:
    reports = LoadReports(1.0, window=60.0)
    reports.report("a", request("envoy-1", ("reviews", "", 10, 10, 0, 0)), now=100.0)
    reports.report("a", request("envoy-1", ("reviews", "", 10, 10, 0, 0)), now=101.0)
    assert reports.rates(now=102.0)["reviews"].requests_per_second == 20 / 2.0


def test_clusters_localities_and_reporters_are_capped() -> None:
    reports = LoadReports(1.0, max_clusters=2, max_localities=1, max_reporters=1)
    reports.report(
        "a",
        request("e", ("c1", "z1", 1, 1, 0, 0), ("c2", "z1", 1, 1, 0, 0), ("c3", "z1", 1, 1, 0, 0)),
        now=0.0,
    )
    reports.report("a", request("e", ("c1", "z2", 1, 1, 0, 0)), now=0.0)
    assert reports.report("b", request("f"), now=0.0) is False
    assert sorted(reports.totals(now=0.0)) == ["c1", "c2"]
    assert list(reports.totals(now=0.0)["c1"].localities) == ["eu/z1/"]
    assert reports.ignored == 3


def test_long_names_are_clipped() -> None:
    reports = LoadReports(1.0)
    reports.report("a", request("e", ("x" * 10_000, "", 1, 1, 0, 0)), now=0.0)
    assert [len(name) for name in reports.totals(now=0.0)] == [256]


def test_a_non_positive_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        LoadReports(0)


def test_a_reporter_keeps_at_most_max_clusters_in_flight_gauges() -> None:
    reports = LoadReports(1.0, max_clusters=2, max_localities=2)
    reports.report(
        "a",
        request("e", ("c1", "z1", 1, 0, 0, 1), ("c1", "z2", 1, 0, 0, 1), ("c2", "z1", 1, 0, 0, 1)),
        now=0.0,
    )
    assert sum(load.counts.in_progress for load in reports.totals(now=0.0).values()) == 2
    assert reports.ignored == 1
    # Each report replaces the reporter's gauges: what it leaves out has nothing in flight.
    reports.report("a", request("e", ("c1", "z1", 0, 1, 0, 1), ("c2", "z1", 0, 0, 0, 1)), now=0.0)
    assert {n: load.counts.in_progress for n, load in reports.totals(now=0.0).items()} == {
        "c1": 1,
        "c2": 1,
    }
