"""The dashboard's page, its parts and its event stream, against a live ControlPlane."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from envoy.service.load_stats.v3 import lrs_pb2

from controlplane.config.store import ConfigStore
from controlplane.model import Mesh
from controlplane.server import dashboard
from controlplane.server.control_plane import ControlPlane
from controlplane.server.dashboard import DashboardFeed, mesh_part, traffic_part
from controlplane.xds.load_reports import LoadReports
from controlplane.xds.types import CLUSTER
from tests.server.support import eventually, read
from tests.server.test_admin import BROKEN, HELLO, connect
from tests.server.test_http_admin import SMALL, start

HELLO_CLUSTER = "outbound|8080||hello.default.svc.cluster.local"
HOSTILE = 'refused: <b id="injected">bold</b>\n<script>window.pwned = 1</script>'


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    shutil.copy(HELLO, tmp_path / "hello.yaml")
    cp = await start(tmp_path)
    yield cp
    await cp.stop(grace=0.1)


def load_report(*clusters: tuple[str, int, int, int]) -> Any:
    """One report of ``(cluster, issued, errors, in progress)`` each."""
    report = lrs_pb2.LoadStatsRequest()
    for cluster, issued, errors, active in clusters:
        stats = report.cluster_stats.add(cluster_name=cluster)
        locality = stats.upstream_locality_stats.add()
        locality.total_issued_requests = issued
        locality.total_successful_requests = issued - errors
        locality.total_error_requests = errors
        locality.total_requests_in_progress = active
    return report


class Events:
    """A reader of one ``/dashboard/stream``: the latest document of each part."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.latest: dict[str, Any] = {}
        self.received: list[str] = []

    async def next(self, timeout: float = 5.0) -> tuple[str, Any]:
        name, data = "", ""
        while True:
            line = await asyncio.wait_for(self.response.content.readline(), timeout)
            assert line, "the event stream ended"
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                name = text[len("event: ") :]
            elif text.startswith("data: "):
                data = text[len("data: ") :]
            elif text == "" and name:
                value = json.loads(data)
                self.latest[name] = value
                self.received.append(name)
                return name, value

    async def until(self, part: str, check: Any, timeout: float = 10.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while not (part in self.latest and check(self.latest[part])):
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, f"{part} never satisfied the check: {self.latest.get(part)}"
            await self.next(left)
        return self.latest[part]


@pytest.fixture
async def events(plane: ControlPlane) -> AsyncIterator[Events]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{plane.admin_port}/dashboard/stream") as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        yield Events(response)


async def test_the_page_is_one_file_with_no_external_asset_and_a_fresh_script_nonce(
    plane: ControlPlane,
) -> None:
    nonces = []
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.get(f"http://127.0.0.1:{plane.admin_port}/") as response:
                assert response.status == 200
                assert response.headers["Content-Type"] == "text/html; charset=utf-8"
                page = await response.text()
                policy = response.headers["Content-Security-Policy"]
            (nonce,) = re.findall(r"script-src 'nonce-([\w-]+)'", policy)
            assert "default-src 'none'" in policy
            assert "connect-src 'self'" in policy
            assert page.count(f'nonce="{nonce}"') == 2  # the one style and the one script
            assert "{{nonce}}" not in page
            nonces.append(nonce)
    assert nonces[0] != nonces[1]
    assert re.findall(r"(?:src|href)=\"[^\"]*\"", page) == ['href="data:,"']
    assert re.findall(r"https?://[^\"]*", page) == ["http://www.w3.org/2000/svg"]
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page


async def test_the_stream_sends_the_mesh_config_proxies_and_traffic_then_their_changes(
    plane: ControlPlane, events: Events, tmp_path: Path
) -> None:
    first = {(await events.next())[0] for _ in range(4)}
    assert first == {"config", "mesh", "proxies", "traffic"}
    assert events.latest["proxies"] == {"total": 0, "states": {}, "proxies": []}
    mesh = events.latest["mesh"]
    assert mesh["counts"] == {"services": 1, "routes": 1, "gateways": 1}
    assert mesh["routes"][0]["http"][0]["destinations"] == [
        {"host": "hello.default.svc.cluster.local", "subset": "", "port": 8080, "weight": 100}
    ]
    assert events.latest["traffic"]["services"] == []

    async with grpc.aio.insecure_channel(plane.address) as channel:
        call = await connect(channel, "sidecar-<1>", HOSTILE)
        proxies = await events.until("proxies", lambda p: p["states"].get("NACKED") == 1)
        (proxy,) = proxies["proxies"]
        assert (proxy["node_id"], proxy["protocol"], proxy["state"]) == (
            "sidecar-<1>",
            "sotw",
            "NACKED",
        )
        assert {t: s["state"] for t, s in proxy["types"].items()} == {
            "CDS": "SYNCED",
            "EDS": "NOT_SENT",
            "LDS": "NACKED",
            "RDS": "NOT_SENT",
        }
        assert proxy["types"]["LDS"]["nack"]["message"] == HOSTILE
        assert proxy["types"]["LDS"]["nack"]["version"] == proxy["types"]["LDS"]["sent"]

        plane.load_reports.report("reporter-1", lrs_pb2.LoadStatsRequest())
        report = load_report((HELLO_CLUSTER, 300, 3, 2), ("xds", 0, 0, 1))
        plane.load_reports.report("reporter-1", report)
        traffic = await events.until("traffic", lambda t: t["services"])
        (service,) = traffic["services"]
        assert service["service"] == "hello.default.svc.cluster.local"
        assert (service["issued"], service["errors"], service["in_progress"]) == (300, 3, 2)
        assert service["rps"] > 0 and service["eps"] == pytest.approx(service["rps"] / 100, 1e-2)
        assert [(c["cluster"], c["port"], c["subset"]) for c in service["clusters"]] == [
            (HELLO_CLUSTER, "8080", "")
        ]
        assert [(c["cluster"], c["in_progress"]) for c in traffic["other"]] == [("xds", 1)]

        before = len(events.received)
        (tmp_path / "broken.yaml").write_text(BROKEN)
        plane.reload()
        config = await events.until("config", lambda c: c["errors"] == 1)
        (diagnostic,) = config["diagnostics"]
        assert {k: diagnostic[k] for k in ("severity", "code", "file", "line", "column")} == {
            "severity": "error",
            "code": "PF110",
            "file": "broken.yaml",
            "line": 7,
            "column": 3,
        }
        assert "bogus" in diagnostic["message"]
        # the mesh did not change (the broken file is held back): it is not sent again
        assert "mesh" not in events.received[before:]
        call.cancel()


async def test_the_state_endpoint_is_every_part_as_one_json_document(plane: ControlPlane) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{plane.admin_port}/dashboard/state") as response,
    ):
        assert response.status == 200
        document = await response.json()
    assert sorted(document) == ["config", "mesh", "proxies", "traffic"]
    assert document["config"]["version"] == plane.config_view.version
    assert document["mesh"]["services"][0]["host"] == "hello.default.svc.cluster.local"


async def test_nothing_is_built_while_no_browser_watches_and_a_closed_one_stops_the_feed(
    plane: ControlPlane,
) -> None:
    assert plane.http_admin is not None
    feed = plane.http_admin.feed
    await asyncio.sleep(0.2)
    assert (feed.running, feed.builds) == (False, 0)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{plane.admin_port}/dashboard/stream") as response,
    ):
        await Events(response).next()
        assert (feed.running, feed.subscribers) == (True, 1)
    await eventually(lambda: not feed.running and feed.subscribers == 0, timeout=5)
    builds = feed.builds
    await asyncio.sleep(1.2)
    assert feed.builds == builds


async def test_stopping_the_server_ends_open_event_streams_at_once(tmp_path: Path) -> None:
    shutil.copy(HELLO, tmp_path / "hello.yaml")
    plane = await start(tmp_path)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{plane.admin_port}/dashboard/stream") as response,
        ):
            await Events(response).next()
            started = asyncio.get_running_loop().time()
            await asyncio.wait_for(plane.stop(grace=0.1), 5)
            assert await asyncio.wait_for(response.content.read(), 5) is not None
            assert asyncio.get_running_loop().time() - started < 5
    finally:
        await plane.stop(grace=0.1)


class CountingParts:
    """Parts whose traffic changes at every build."""

    def __init__(self) -> None:
        self.count = 0

    async def build_async(self) -> tuple[dict[str, str], float]:
        self.count += 1
        return {"mesh": "same", "traffic": str(self.count)}, 0.0


async def test_a_slow_watcher_holds_only_the_newest_text_of_each_part() -> None:
    parts = CountingParts()
    feed = DashboardFeed(parts, tick=0.01)  # type: ignore[arg-type]
    slow = feed.subscribe()
    await eventually(lambda: parts.count >= 20)
    assert slow.pending == 2
    taken = dict(await slow.take() or [])
    assert taken["mesh"] == "same"
    assert int(taken["traffic"]) >= 20
    # a late subscriber gets the current texts at once
    late = feed.subscribe()
    assert {part for part, _ in await late.take() or []} == {"mesh", "traffic"}
    # unchanged parts are not offered again
    await eventually(lambda: slow.pending == 1)
    assert [part for part, _ in await slow.take() or []] == ["traffic"]
    feed.unsubscribe(slow)
    feed.unsubscribe(late)
    await eventually(lambda: not feed.running)
    built = parts.count
    await asyncio.sleep(0.1)
    assert parts.count == built
    await feed.close()
    assert await feed.subscribe().take() is None


def small_mesh(tmp_path: Path) -> Mesh:
    (tmp_path / "small.yaml").write_text(SMALL)
    store = ConfigStore(tmp_path)
    result = store.reload()
    assert not result.errors
    return result.mesh


def test_the_mesh_part_lists_services_with_subsets_and_routes_with_their_weights(
    tmp_path: Path,
) -> None:
    part = mesh_part(small_mesh(tmp_path))
    assert part["services"] == [
        {
            "host": "web.default.svc.cluster.local",
            "namespace": "default",
            "name": "web",
            "external": False,
            "resolution": "STATIC",
            "ports": [
                {
                    "port": 80,
                    "name": "http",
                    "protocol": "HTTP",
                    "endpoints": 1,
                    "sample": ["10.0.0.1:8080"],
                }
            ],
            "subsets": [{"name": "v1", "labels": {"version": "v1"}, "endpoints": 1}],
        }
    ]
    (route,) = part["routes"]
    assert route["hosts"] == ["web.default.svc.cluster.local"]
    assert [(d["subset"], d["weight"]) for d in route["http"][0]["destinations"]] == [
        ("v1", 90),
        ("", 10),
    ]
    assert part["gateways"] == []


def test_traffic_is_summed_per_service_with_each_cluster_and_foreign_clusters_apart(
    tmp_path: Path,
) -> None:
    mesh = small_mesh(tmp_path)
    reports = LoadReports(interval=10.0, clock=lambda: 1000.0)
    v1 = "outbound|80|v1|web.default.svc.cluster.local"
    plain = "outbound|80||web.default.svc.cluster.local"
    gone = "outbound|80||gone.default.svc.cluster.local"
    reports.report("r", load_report((v1, 600, 60, 0), (plain, 300, 0, 0), (gone, 5, 0, 0)), 1000.0)
    part = traffic_part(reports, mesh, now=1000.0)
    (service,) = part["services"]
    assert {k: v for k, v in service.items() if k != "clusters"} == {
        "service": "web.default.svc.cluster.local",
        "rps": 90.0,
        "eps": 6.0,
        "in_progress": 0,
        "issued": 900,
        "errors": 60,
    }
    assert [(c["subset"], c["rps"], c["error_ratio"]) for c in service["clusters"]] == [
        ("v1", 60.0, 0.1),
        ("", 30.0, 0.0),
    ]
    assert [c["cluster"] for c in part["other"]] == [gone]
    assert traffic_part(None, mesh) is None


async def test_a_build_yields_to_the_loop_between_chunks_and_shows_problem_proxies_first(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard, "CHUNK", 1)
    monkeypatch.setattr(dashboard, "MAX_ROWS", 1)
    async with grpc.aio.insecure_channel(plane.address) as channel:
        quiet = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
        await quiet.write(
            discovery_pb2.DiscoveryRequest(node=base_pb2.Node(id="a-quiet"), type_url=CLUSTER)
        )
        clusters = await read(quiet)
        await quiet.write(
            discovery_pb2.DiscoveryRequest(
                type_url=CLUSTER, version_info=clusters.version_info, response_nonce=clusters.nonce
            )
        )
        nacking = await connect(channel, "z-nacking", "no")
        assert plane.http_admin is not None
        parts = plane.http_admin.parts

        def proxies() -> Any:
            return json.loads(parts.build()["proxies"])

        await eventually(lambda: proxies()["states"] == {"NACKED": 1, "NOT_SENT": 1})
        order: list[str] = []
        asyncio.get_running_loop().call_soon(order.append, "other work")
        built, spent = await parts.build_async()
        order.append("built")
        assert order == ["other work", "built"]
        assert spent > 0
        assert json.loads(built["proxies"]) == proxies()
        shown = proxies()
        assert (shown["total"], [p["node_id"] for p in shown["proxies"]]) == (2, ["z-nacking"])
        quiet.cancel()
        nacking.cancel()
