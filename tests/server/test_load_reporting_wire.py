"""Load reports read off the wire: clusters without traffic are skipped undecoded, same result."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import load_report_pb2
from envoy.service.load_stats.v3 import lrs_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.server import start_xds_server
from controlplane.xds import SnapshotCache, load_reports
from controlplane.xds.load_reports import LoadReports, MalformedReport, request_node_id
from tests.xds.resources import base_mesh

LRS_METHOD = "/envoy.service.load_stats.v3.LoadReportingService/StreamLoadStats"

# Names whose length byte is a traffic tag (18 = 0x12, 24 = 0x18), intervals whose varints
# hold those bytes: clusters without traffic that the byte test cannot tell from busy ones.
names = st.sampled_from(["x" * 18, "y" * 24, "outbound|80||a.default.svc.cluster.local", "", "é"])
intervals = st.one_of(st.none(), st.sampled_from([(18, 0), (24, 0x12), (10, 0x18_18_18)]))
localities = st.lists(
    st.tuples(
        st.sampled_from(["", "z1", "z2"]),
        st.sampled_from([0, 1, 18, 24, 2**40]),
        st.integers(0, 30),
        st.integers(0, 30),
        st.integers(0, 30),
    ),
    max_size=3,
)
clusters = st.lists(
    st.tuples(names, intervals, localities, st.sampled_from([0, 3, 0x12]), st.booleans()),
    max_size=10,
)


def build(node: str, spec: list[Any]) -> lrs_pb2.LoadStatsRequest:
    message = lrs_pb2.LoadStatsRequest(node=base_pb2.Node(id=node))
    for name, interval, zones, dropped, by_category in spec:
        stats = message.cluster_stats.add(cluster_name=name, total_dropped_requests=dropped)
        if interval is not None:
            stats.load_report_interval.seconds, stats.load_report_interval.nanos = interval
        if by_category:
            stats.dropped_requests.add(category="throttle", dropped_count=dropped + 1)
        for zone, issued, ok, errors, active in zones:
            stats.upstream_locality_stats.add(
                locality=base_pb2.Locality(region="eu", zone=zone) if zone else None,
                total_issued_requests=issued,
                total_successful_requests=ok,
                total_error_requests=errors,
                total_requests_in_progress=active,
            )
    return message


def state(reports: LoadReports, now: float) -> Any:
    return reports.totals(now), reports.rates(now), reports.reporters(), reports.ignored


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), clusters), min_size=1, max_size=6))
def test_the_wire_path_counts_exactly_what_the_decoded_path_counts(
    sequence: list[tuple[str, list[Any]]],
) -> None:
    decoded = LoadReports(interval=1.0, max_clusters=8, max_localities=2, max_reporters=1)
    wire = LoadReports(interval=1.0, max_clusters=8, max_localities=2, max_reporters=1)
    for step, (reporter, spec) in enumerate(sequence):
        request = build(f"node-{reporter}", spec)
        now = float(step)
        taken = decoded.report(reporter, request, now=now)
        assert wire.report_wire(reporter, request.SerializeToString(), now=now) is taken
        assert state(wire, now) == state(decoded, now)


def test_clusters_without_traffic_are_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []

    def from_string(data: bytes) -> load_report_pb2.ClusterStats:
        stats = load_report_pb2.ClusterStats.FromString(data)
        decoded.append(stats.cluster_name)
        return stats

    fake = SimpleNamespace(ClusterStats=SimpleNamespace(FromString=from_string))
    monkeypatch.setattr(load_reports, "load_report_pb2", fake)
    idle = [
        (f"outbound|80||idle-{i}.default.svc.cluster.local", (10, 0), [], 0, False)
        for i in range(50)
    ]
    busy = ("outbound|80||busy.default.svc.cluster.local", (10, 0), [("", 5, 5, 0, 1)], 0, False)
    dropping = ("outbound|80||drop.default.svc.cluster.local", None, [], 3, False)
    request = build("envoy-1", [*idle, busy, dropping])
    reports = LoadReports(interval=10.0)
    assert reports.report_wire("r", request.SerializeToString(), now=0.0) is True
    assert decoded == [busy[0], dropping[0]]
    totals = reports.totals(0.0)
    assert sorted(totals) == [busy[0], dropping[0]]
    assert (totals[busy[0]].counts.issued, totals[dropping[0]].counts.dropped) == (5, 3)
    assert reports.reporters() == {"r": "envoy-1"}


def test_a_malformed_report_is_refused_with_one_clear_error() -> None:
    reports = LoadReports()
    with pytest.raises(MalformedReport, match=r"^malformed load report: "):
        reports.report_wire("r", b"\x12\x05ab")
    busy_but_broken = b"\x12\x04\x12\x02\x08"  # a cluster whose locality stats are cut short
    with pytest.raises(MalformedReport):
        reports.report_wire("r", busy_but_broken)
    assert reports.reporters() == {}
    assert request_node_id(b"\xff") == ""
    assert request_node_id(build("envoy-7", []).SerializeToString()) == "envoy-7"


async def test_the_server_takes_reports_as_bytes_and_ends_a_malformed_stream() -> None:
    cache = SnapshotCache(lambda node: node.cluster, lambda key: base_mesh())
    server = await start_xds_server(cache)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stream = channel.stream_stream(
                LRS_METHOD,
                request_serializer=None,
                response_deserializer=lrs_pb2.LoadStatsResponse.FromString,
            )
            call = stream()
            first = build("envoy-1", [("outbound|80||a", None, [("", 7, 6, 1, 0)], 0, False)])
            await call.write(first.SerializeToString())
            response = await call.read()
            assert response.send_all_clusters is True
            assert server.load_reports.totals()["outbound|80||a"].counts.issued == 7
            await call.write(b"\x12\x05ab")
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await call.read()
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.value.details().startswith("malformed load report: ")
    finally:
        await server.stop(0)
