"""A real Envoy reports its traffic to Pilotfish's Load Reporting Service.

One control plane (load reports every half second) serves the hello-world
example to one sidecar Envoy; requests sent through the sidecar to the hello
service show up in the control plane's aggregate for that cluster, exactly,
within a few intervals.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def deploy(envoy_binary: str, tmp_path: Path, backend_ports: dict[str, int]) -> Iterator[Hello]:
    port, gateway_port = free_ports(2)
    docs = relocate(
        load_example("hello-world", "hello.yaml"),
        service_ports={8080: port},
        gateway_ports={8080: gateway_port},
        workload_ports=backend_ports,
    )
    write_docs(tmp_path / "config" / "hello.yaml", docs)
    with (
        ControlPlaneThread(tmp_path / "config", load_report_interval=INTERVAL) as plane,
        start_envoy(envoy_binary, tmp_path, plane.port, "sidecar", sidecar_metadata()) as envoy,
    ):
        yield Hello(plane, envoy, port)


@pytest.fixture
def hello(envoy_binary: str, tmp_path: Path) -> Iterator[Hello]:
    with Backends(HELLO) as backends:
        yield from deploy(envoy_binary, tmp_path, {name: backends.port(name) for name in HELLO})


class Unavailable(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def failing(envoy_binary: str, tmp_path: Path) -> Iterator[Hello]:
    """hello-world whose three workloads all answer 503."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield from deploy(envoy_binary, tmp_path, dict.fromkeys(HELLO, server.server_address[1]))
    finally:
        server.shutdown()
        server.server_close()


def wait_until_reporting(hello: Hello) -> LoadCounts:
    """Wait for Envoy's LRS stream and a few intervals (traffic before its answer is not
    reported); the counts so far."""
    reports = hello.plane.plane.load_reports
    wait_for(lambda: hello.plane.on_loop(reports.reporters) or None, 15, "Envoy's LRS stream")
    time.sleep(3 * INTERVAL)
    return hello.counts()


def wait_for_issued(hello: Hello, before: LoadCounts, issued: int) -> LoadCounts:
    """The counts once ``issued`` more requests were reported, and a few intervals more."""

    def reported() -> LoadCounts | None:
        counts = hello.counts()
        return counts if counts.issued - before.issued >= issued else None

    wait_for(reported, 15, f"{issued} requests reported")
    time.sleep(3 * INTERVAL)
    return hello.counts()


def test_envoy_reports_exactly_the_requests_sent_through_it(hello: Hello) -> None:
    before = wait_until_reporting(hello)
    client = Client(hello.port)
    statuses = [client.get("/", host="hello").status for _ in range(REQUESTS)]
    assert statuses == [200] * REQUESTS
    after = wait_for_issued(hello, before, REQUESTS)
    assert after.issued - before.issued == REQUESTS
    assert after.successful - before.successful == REQUESTS
    assert (after.errors, after.dropped, after.in_progress) == (before.errors, 0, 0)
    rate = hello.rate()
    assert rate is not None and rate.requests_per_second > 0
    assert rate.error_ratio == 0.0


def test_envoy_reports_each_upstream_attempt_of_a_5xx_as_an_error(failing: Hello) -> None:
    before = wait_until_reporting(failing)
    client = Client(failing.port)
    statuses = [client.get("/", host="hello").status for _ in range(50)]
    assert statuses == [503] * 50
    # Istio's default retry policy tries a 503 twice more: the reports count attempts.
    after = wait_for_issued(failing, before, 150)
    retries = failing.sidecar.stats(rf"^cluster\.{re.escape(failing.cluster)}\.upstream_rq_retry$")
    assert list(retries.values()) == [100]
    assert after.issued - before.issued == 150
    assert after.errors - before.errors == 150
    assert after.successful == before.successful
    rate = failing.rate()
    assert rate is not None and rate.error_ratio == 1.0


def test_envoy_accepts_clusters_that_name_the_control_plane_as_lrs_server(hello: Hello) -> None:
    dump = hello.sidecar.config_dump("dynamic_active_clusters")
    lrs = {
        entry["cluster"]["name"]: entry["cluster"].get("lrs_server")
        for entry in dump.get("configs", [])
    }
    assert lrs[hello.cluster] == {"self": {}}
    assert set(hello.sidecar.stats(r"^cluster_manager\.cds\.update_rejected$").values()) == {0}
