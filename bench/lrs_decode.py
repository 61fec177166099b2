"""Benchmark: reading one Envoy load report of many clusters, most of them without traffic.

Envoy lists every cluster it holds in every load report, those without traffic
empty (a name and the interval). The LRS server used to let gRPC decode the
whole ``LoadStatsRequest`` and then looked at each cluster from Python
(``LoadReports.report``); it now takes the bytes and decodes only the clusters
whose bytes can hold traffic (``LoadReports.report_wire``). Both are run here,
alternately, on the same reports, into fresh cores, and the best and median
microseconds per cluster are printed with their ratio.

Usage: ``python bench/lrs_decode.py [--clusters 1000 10000 30000] [--busy 20] [--repeat 15]``.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

from envoy.config.core.v3 import base_pb2
from envoy.service.load_stats.v3 import lrs_pb2

from controlplane.xds.load_reports import LoadReports


def envoy_report(clusters: int, busy: int) -> bytes:
    """A report as Envoy sends it: every cluster, ``busy`` of them with traffic."""
    request = lrs_pb2.LoadStatsRequest(node=base_pb2.Node(id="envoy-1", cluster="bench"))
    every = max(1, clusters // max(busy, 1))
    for i in range(clusters):
        stats = request.cluster_stats.add(
            cluster_name=f"outbound|{8000 + i % 100}||svc-{i}.ns-{i % 50}.svc.cluster.local"
        )
        # Envoy reports the time since its previous report, to the nanosecond.
        stats.load_report_interval.seconds = 10
        stats.load_report_interval.nanos = 1_000_000 + (i * 7919) % 999_000_000
        if busy and i % every == 0 and i // every < busy:
            locality = stats.upstream_locality_stats.add()
            locality.locality.zone = "z1"
            locality.total_issued_requests = 120
            locality.total_successful_requests = 118
            locality.total_error_requests = 2
            locality.total_requests_in_progress = 3
    return request.SerializeToString()


def decoded(data: bytes) -> LoadReports:
    reports = LoadReports(interval=10.0)
    reports.report("r", lrs_pb2.LoadStatsRequest.FromString(data), now=0.0)
    return reports


def wire(data: bytes) -> LoadReports:
    reports = LoadReports(interval=10.0)
    reports.report_wire("r", data, now=0.0)
    return reports


def measure(run: Callable[[bytes], LoadReports], data: bytes) -> float:
    started = time.perf_counter()
    run(data)
    return time.perf_counter() - started


def figure(times: list[float], clusters: int) -> str:
    best, median = min(times), statistics.median(times)
    return f"{best / clusters * 1e6:.3f} / {median / clusters * 1e6:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, nargs="+", default=[1000, 10000, 30000])
    parser.add_argument("--busy", type=int, default=20, help="clusters with traffic (20)")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    print(
        f"{'clusters':>9} {'bytes':>10}  {'before µs/cluster':>22}  {'after µs/cluster':>22}  ratio"
    )
    for clusters in args.clusters:
        data = envoy_report(clusters, args.busy)
        assert decoded(data).totals(0.0) == wire(data).totals(0.0), "the two paths disagree"
        before: list[float] = []
        after: list[float] = []
        gc.disable()
        try:
            for _ in range(args.repeat):
                before.append(measure(decoded, data))
                after.append(measure(wire, data))
                gc.collect()
        finally:
            gc.enable()

        ratio = statistics.median(before) / statistics.median(after)
        print(
            f"{clusters:>9} {len(data):>10}  {figure(before, clusters):>22}"
            f"  {figure(after, clusters):>22}"
            f"  {ratio:.1f}x (best / median)"
        )


if __name__ == "__main__":
    main()
