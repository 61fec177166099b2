"""A real proxyless gRPC client (grpcio's built-in xDS client) against the control plane.

Three gRPC backends (``v1``, ``v2``, ``v3``) stand behind one Service
``echo`` (port 7070, named ``grpc``) as WorkloadEntries; a VirtualService
sends callers whose ``x-user`` metadata is ``jason`` to ``v2`` and splits
everyone else 75/25 between ``v1`` and ``v3``. The in-process control plane
serves the config directory, and each scenario runs a gRPC client in its
own process on ``xds:///<name>`` (see :mod:`tests.interop.grpc_backends`):
calls must follow the routes, follow edits of the YAML file, survive bad
edits, and gRPC must never NACK what it is sent.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.demo.envoy import wait_for
from controlplane.server.grpc_server import XdsServer, start_xds_server
from controlplane.translate import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    ProxyClass,
    ProxyRole,
    translate,
)
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.snapshot import Snapshot
from tests.interop.conftest import ControlPlaneThread, write_docs, write_text
from tests.interop.grpc_backends import Calls, EchoBackend, XdsClient, probe
from tests.translate.support import kitchen_sink_mesh

pytestmark = pytest.mark.slow

NAMESPACE = "grpc-test"
PORT = 7070
TARGET = f"echo:{PORT}"
VERSIONS = ("v1", "v2", "v3")
JASON = {"x-user": "jason"}
POLL_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, EchoBackend]]:
    started: dict[str, EchoBackend] = {}
    try:
        for version in VERSIONS:
            started[version] = EchoBackend(version).start()
        yield started
    finally:
        for backend in started.values():
            backend.stop()


def meta(kind: str, name: str) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": name, "namespace": NAMESPACE}}


def destination(subset: str, weight: int | None = None) -> dict[str, Any]:
    route: dict[str, Any] = {"destination": {"host": "echo", "subset": subset}}
    if weight is not None:
        route["weight"] = weight
    return route


def virtual_service(http: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        **meta("VirtualService", "echo"),
        "spec": {"hosts": ["echo"], "http": http},
    }


JASON_TO_V2 = {
    "name": "jason",
    "match": [{"headers": {"x-user": {"exact": "jason"}}}],
    "route": [destination("v2")],
}
SPLIT = {"name": "split", "route": [destination("v1", 75), destination("v3", 25)]}


def echo_docs(backends: dict[str, EchoBackend], http: list[dict[str, Any]]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            **meta("Service", "echo"),
            "spec": {"selector": {"app": "echo"}, "ports": [{"name": "grpc", "port": PORT}]},
        }
    ]
    for version, backend in backends.items():
        docs.append(
            {
                "apiVersion": "networking.istio.io/v1",
                **meta("WorkloadEntry", f"echo-{version}"),
                "spec": {
                    "address": "127.0.0.1",
                    "labels": {"app": "echo", "version": version},
                    "ports": {"grpc": backend.port},
                },
            }
        )
    docs.append(
        {
            "apiVersion": "networking.istio.io/v1",
            **meta("DestinationRule", "echo"),
            "spec": {
                "host": "echo",
                "subsets": [{"name": v, "labels": {"version": v}} for v in VERSIONS],
            },
        }
    )
    docs.append(virtual_service(http))
    return docs


@pytest.fixture
def config_file(tmp_path: Path, backends: dict[str, EchoBackend]) -> Path:
    path = tmp_path / "config" / "echo.yaml"
    write_docs(path, echo_docs(backends, [JASON_TO_V2, SPLIT]))
    return path


@pytest.fixture
def control_plane(config_file: Path) -> Iterator[ControlPlaneThread]:
    with ControlPlaneThread(config_file.parent) as plane:
        yield plane


@pytest.fixture
def client(control_plane: ControlPlaneThread, tmp_path: Path) -> Iterator[XdsClient]:
    with XdsClient(control_plane.port, TARGET, tmp_path) as running:
        yield running
        assert running.nacks() == []


def poll(client: XdsClient, done: Callable[[Calls], bool], calls: int = 20, **kw: Any) -> Calls:
    """Call rounds until ``done`` holds for one; that round."""
    deadline = time.monotonic() + POLL_TIMEOUT
    while True:
        result = client.call(calls, **kw)
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still {result} after {POLL_TIMEOUT}s:\n{client.log()[-3000:]}")
        time.sleep(0.1)


def wait_for_reload(plane: ControlPlaneThread, before: int) -> None:
    deadline = time.monotonic() + POLL_TIMEOUT
    while plane.plane.reloads <= before:
        assert time.monotonic() < deadline, "the control plane never reloaded"
        time.sleep(0.05)


# -- routing ---------------------------------------------------------------------------


def test_a_grpc_client_is_served_as_its_own_proxy_class(
    control_plane: ControlPlaneThread, client: XdsClient
) -> None:
    assert client.call(1).errors == []
    assert control_plane.plane.cache.keys() == [ProxyClass(ProxyRole.GRPC).key]


def test_calls_with_the_matching_header_all_go_to_v2(client: XdsClient) -> None:
    result = client.call(30, JASON)
    assert result.errors == []
    assert result.counts == {"v2": 30}
    assert result.metadata["x-user"] == "jason"


def test_other_calls_are_split_75_25_between_v1_and_v3(client: XdsClient) -> None:
    result = client.call(400)
    assert result.errors == []
    assert set(result.counts) == {"v1", "v3"}
    # Binomial(400, 0.75): mean 300, standard deviation 8.7; these bounds are 5 deviations.
    assert 257 <= result.counts["v1"] <= 343
    assert result.counts["v1"] + result.counts["v3"] == 400


@pytest.mark.parametrize(
    "target",
    [
        "echo",
        "echo.grpc-test",
        "echo.grpc-test:7070",
        "echo.grpc-test.svc.cluster.local",
        "echo.grpc-test.svc.cluster.local:7070",
    ],
)
def test_every_alias_of_the_service_is_a_target(
    control_plane: ControlPlaneThread, tmp_path: Path, target: str
) -> None:
    with XdsClient(control_plane.port, target, tmp_path) as aliased:
        result = aliased.call(5, JASON)
        assert (result.counts, result.errors) == ({"v2": 5}, [])
        assert aliased.nacks() == []


def test_an_unknown_name_fails_without_a_nack(
    control_plane: ControlPlaneThread, tmp_path: Path
) -> None:
    with XdsClient(control_plane.port, "nowhere:7070", tmp_path) as lost:
        result = lost.call(1, timeout=2.0)
        assert result.backends == []
        assert result.errors in (["UNAVAILABLE"], ["DEADLINE_EXCEEDED"])
        assert lost.nacks() == []


# -- live edits ------------------------------------------------------------------------


def test_editing_the_virtual_service_moves_the_calls(
    backends: dict[str, EchoBackend], config_file: Path, client: XdsClient
) -> None:
    assert client.call(10, JASON).counts == {"v2": 10}
    jason_to_v1 = {**JASON_TO_V2, "route": [destination("v1")]}
    all_to_v3 = {"name": "all", "route": [destination("v3")]}
    write_docs(config_file, echo_docs(backends, [jason_to_v1, all_to_v3]))
    moved = poll(client, lambda r: r.counts == {"v3": 20})
    assert moved.errors == []
    assert client.call(20, JASON).counts == {"v1": 20}


def test_removing_the_virtual_service_falls_back_to_every_endpoint(
    backends: dict[str, EchoBackend], config_file: Path, client: XdsClient
) -> None:
    docs = [d for d in echo_docs(backends, []) if d["kind"] != "VirtualService"]
    write_docs(config_file, docs)
    result = poll(client, lambda r: set(r.counts) == set(VERSIONS), calls=60, metadata=JASON)
    assert result.errors == []


@pytest.mark.parametrize(
    "bad_text",
    [
        "kind: VirtualService\nmetadata: {name: echo\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: echo, namespace: grpc-test}\n"
        "spec: {hosts: [echo], http: [{route: [{destination: {host: echo}, weight: lots}]}]}\n",
    ],
    ids=["broken-yaml", "invalid-weight"],
)
def test_a_bad_edit_keeps_the_calls_working(
    control_plane: ControlPlaneThread, config_file: Path, client: XdsClient, bad_text: str
) -> None:
    assert client.call(10, JASON).counts == {"v2": 10}
    before = control_plane.plane.reloads
    write_text(config_file.with_name("broken.yaml"), bad_text)
    wait_for_reload(control_plane, before)
    errors = [d for d in control_plane.plane.store.diagnostics if d.is_error]
    assert {d.file for d in errors} == {"broken.yaml"}
    time.sleep(0.3)
    jason = client.call(20, JASON)
    assert (jason.counts, jason.errors) == ({"v2": 20}, [])
    others = client.call(100)
    assert others.errors == []
    assert set(others.counts) == {"v1", "v3"}


# -- gRPC features the routes carry ----------------------------------------------------


def test_a_fault_abort_fails_matching_calls_with_its_grpc_status(
    backends: dict[str, EchoBackend], config_file: Path, client: XdsClient
) -> None:
    abort = {
        "name": "abort",
        "match": [{"headers": {"x-fault": {"exact": "abort"}}}],
        "fault": {"abort": {"grpcStatus": "RESOURCE_EXHAUSTED", "percentage": {"value": 100}}},
        "route": [destination("v1")],
    }
    write_docs(config_file, echo_docs(backends, [abort, JASON_TO_V2, SPLIT]))
    failed = poll(client, lambda r: r.errors != [], calls=1, metadata={"x-fault": "abort"})
    assert failed.errors == ["RESOURCE_EXHAUSTED"]
    assert client.call(10, {"x-fault": "abort"}).errors == ["RESOURCE_EXHAUSTED"] * 10
    assert client.call(10, JASON).counts == {"v2": 10}


def test_a_route_timeout_bounds_the_calls_on_that_route_only(
    backends: dict[str, EchoBackend], config_file: Path, client: XdsClient
) -> None:
    # grpcio applies a timeout from the service config (where gRPC puts the route's
    # max_stream_duration) about a second early (grpc/grpc#34547), so the timeout here is
    # generous and the backend far slower; the caller's own deadline is later still.
    hurried = {**SPLIT, "timeout": "4s"}
    write_docs(config_file, echo_docs(backends, [JASON_TO_V2, hurried]))
    poll(client, lambda r: r.errors != [], calls=1, metadata={"x-sleep": "6"}, timeout=10.0)
    assert client.call(1, {"x-sleep": "6"}, timeout=10.0).errors == ["DEADLINE_EXCEEDED"]
    assert client.call(5).errors == []
    patient = client.call(1, {**JASON, "x-sleep": "1"}, timeout=10.0)
    assert (patient.counts, patient.errors) == ({"v2": 1}, [])


# -- everything translation can produce ------------------------------------------------


class StaticXdsServer:
    """The xDS server on ``127.0.0.1:0`` serving one mesh, translated per class, from a thread."""

    def __init__(self, build: Callable[[ProxyClass], Snapshot]) -> None:
        self._build = build
        self._classes: dict[str, ProxyClass] = {}
        self.cache = SnapshotCache(self._classify, lambda key: build(self._classes[key]))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: XdsServer | None = None

    def _classify(self, node: Any) -> str:
        proxy = ProxyClass.from_node(node)
        self._classes[proxy.key] = proxy
        return proxy.key

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.port

    def __enter__(self) -> StaticXdsServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(start_xds_server(self.cache), self._loop)
        self._server = future.result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._server.stop(0.5), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()


def referenced_clusters(route_configs: list[Any]) -> set[str]:
    """The clusters gRPC subscribes to for ``route_configs``: those of routes it does not skip."""
    names = set()
    for config in route_configs:
        for virtual_host in config.virtual_hosts:
            for route in virtual_host.routes:
                if not route.HasField("route") or route.match.query_parameters:
                    continue  # redirects fail calls; query matches make gRPC skip the route
                action = route.route
                if action.HasField("weighted_clusters"):
                    names.update(w.name for w in action.weighted_clusters.clusters)
                else:
                    names.add(action.cluster)
    return names


def parsed_by_grpc(log: str) -> dict[str, set[str]]:
    """Resource names gRPC's trace says it parsed (accepted), by resource type."""
    parsed: dict[str, set[str]] = {}
    for found in re.finditer(r"\] parsed (\w+) (.*?): \{", log):
        parsed.setdefault(found.group(1), set()).add(found.group(2))
    return parsed


def test_grpc_accepts_every_resource_translation_makes_of_the_kitchen_sink(tmp_path: Path) -> None:
    mesh = kitchen_sink_mesh()
    resources = translate(mesh, ProxyClass(ProxyRole.GRPC))
    targets = [listener.name for listener in resources[LISTENER_TYPE]]
    with StaticXdsServer(lambda proxy: Snapshot.from_resources(translate(mesh, proxy))) as server:
        result = probe(server.port, targets, tmp_path)
    assert sorted(result.outcomes) == sorted(targets)
    assert result.nacks == []
    clusters = referenced_clusters(resources[ROUTE_TYPE])
    eds = {c.name for c in resources[CLUSTER_TYPE] if c.name in clusters and c.type == c.EDS}
    assert parsed_by_grpc(result.log) == {
        "Listener": set(targets),
        "RouteConfiguration": {config.name for config in resources[ROUTE_TYPE]},
        "Cluster": clusters,
        "ClusterLoadAssignment": eds,
    }
    assert {"BlackHoleCluster", "outbound|8080||legacy.shop.svc.cluster.local"} <= clusters


# -- load reports ----------------------------------------------------------------------


def test_a_grpc_client_reports_its_calls_to_the_control_plane(
    config_file: Path, tmp_path: Path
) -> None:
    with (
        ControlPlaneThread(config_file.parent, load_report_interval=1.0) as plane,
        XdsClient(plane.port, TARGET, tmp_path) as client,
    ):
        reports = plane.plane.load_reports
        assert client.call(1).errors == []

        def issued() -> int:
            totals = plane.on_loop(reports.totals)
            return sum(load.counts.issued for load in totals.values())

        first = wait_for(issued, 15, "the first call reported")
        assert first == 1
        result = client.call(40)
        assert result.errors == []
        wait_for(lambda: issued() >= 41, 15, "40 more calls reported")
        time.sleep(2.0)
        totals = plane.on_loop(reports.totals)
        assert sum(load.counts.issued for load in totals.values()) == 41
        assert sum(load.counts.successful for load in totals.values()) == 41
        assert all(name.startswith("outbound|7070|") for name in totals)
        assert client.nacks() == []
