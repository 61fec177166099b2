"""A real Envoy reports its traffic to Pilotfish's Load Reporting Service.

One control plane (load reports every half second) serves the hello-world
example to one sidecar Envoy; requests sent through the sidecar to the hello
service show up in the control plane's aggregate for that cluster, exactly,
within a few intervals.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane.demo.backends import Backends, Client, free_ports
from controlplane.demo.envoy import Envoy, sidecar_metadata, wait_for
from controlplane.xds.load_reports import ClusterRate, LoadCounts
from tests.interop.conftest import (
    ControlPlaneThread,
    load_example,
    relocate,
    start_envoy,
    write_docs,
)

pytestmark = pytest.mark.slow

HELLO = ("hello-1", "hello-2", "hello-3")
INTERVAL = 0.5
REQUESTS = 300


@dataclass
class Hello:
    plane: ControlPlaneThread
    sidecar: Envoy
    port: int

    @property
    def cluster(self) -> str:
        return f"outbound|{self.port}||hello.default.svc.cluster.local"

    def counts(self) -> LoadCounts:
        totals = self.plane.on_loop(self.plane.plane.load_reports.totals)
        load = totals.get(self.cluster)
        return load.counts if load is not None else LoadCounts()

    def rate(self) -> ClusterRate | None:
        return self.plane.on_loop(self.plane.plane.load_reports.rates).get(self.cluster)


@pytest.fixture
def hello(envoy_binary: str, tmp_path: Path) -> Iterator[Hello]:
    port, gateway_port = free_ports(2)
    with Backends(HELLO) as backends:
        docs = relocate(
            load_example("hello-world", "hello.yaml"),
            service_ports={8080: port},
            gateway_ports={8080: gateway_port},
            workload_ports={name: backends.port(name) for name in HELLO},
        )
        write_docs(tmp_path / "config" / "hello.yaml", docs)
        with (
            ControlPlaneThread(tmp_path / "config", load_report_interval=INTERVAL) as plane,
            start_envoy(envoy_binary, tmp_path, plane.port, "sidecar", sidecar_metadata()) as envoy,
        ):
            yield Hello(plane, envoy, port)


def test_envoy_reports_exactly_the_requests_sent_through_it(hello: Hello) -> None:
    reports = hello.plane.plane.load_reports
    wait_for(lambda: hello.plane.on_loop(reports.reporters) or None, 15, "Envoy's LRS stream")
    # Traffic before Envoy took the server's answer is not reported: start after it has.
    time.sleep(3 * INTERVAL)
    before = hello.counts()
    client = Client(hello.port)
    statuses = [client.get("/", host="hello").status for _ in range(REQUESTS)]
    assert statuses == [200] * REQUESTS

    def reported() -> LoadCounts | None:
        counts = hello.counts()
        return counts if counts.issued - before.issued >= REQUESTS else None

    counts = wait_for(reported, 15, f"{REQUESTS} requests reported")
    time.sleep(3 * INTERVAL)
    after = hello.counts()
    assert after.issued - before.issued == REQUESTS
    assert after.successful - before.successful == REQUESTS
    assert (after.errors, after.dropped, after.in_progress) == (before.errors, 0, 0)
    assert counts.issued - before.issued == REQUESTS
    rate = hello.rate()
    assert rate is not None and rate.requests_per_second > 0
    assert rate.error_ratio == 0.0


def test_envoy_accepts_clusters_that_name_the_control_plane_as_lrs_server(hello: Hello) -> None:
    dump = hello.sidecar.config_dump("dynamic_active_clusters")
    lrs = {
        entry["cluster"]["name"]: entry["cluster"].get("lrs_server")
        for entry in dump.get("configs", [])
    }
    assert lrs[hello.cluster] == {"self": {}}
    assert set(hello.sidecar.stats(r"^cluster_manager\.cds\.update_rejected$").values()) == {0}
