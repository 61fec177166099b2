"""The HTTP admin endpoint against a live ControlPlane, with real gRPC clients."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from prometheus_client.parser import text_string_to_metric_families

from controlplane.server.admin import ConfigView
from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions
from controlplane.server.http_admin import HttpAdmin
from controlplane.xds.types import CLUSTER
from tests.config.test_cli import serve_options
from tests.server.support import eventually, read
from tests.server.test_admin import HELLO, connect, nacked, node

SMALL = """\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: web-1
  namespace: default
spec:
  address: 10.0.0.1
  labels:
    app: web
    version: v1
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: web
  namespace: default
spec:
  host: web
  subsets:
  - name: v1
    labels:
      version: v1
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  namespace: default
spec:
  hosts: [web]
  http:
  - route:
    - destination: {host: web, subset: v1}
      weight: 90
    - destination: {host: web}
      weight: 10
"""


async def start(config_dir: Path) -> ControlPlane:
    options = ControlPlaneOptions(
        config_dir, xds_address="127.0.0.1:0", admin_address="127.0.0.1:0"
    )
    cp = ControlPlane(options)
    await cp.start()
    return cp


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    shutil.copy(HELLO, tmp_path / "hello.yaml")
    cp = await start(tmp_path)
    yield cp
    await cp.stop(grace=0.1)


@pytest.fixture
async def channel(plane: ControlPlane) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(plane.address) as ch:
        yield ch


async def get(port: int, path: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, response.headers["Content-Type"], await response.text()


async def samples(plane: ControlPlane) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, content_type, text = await get(plane.admin_port, "/metrics")
    assert (status, content_type) == (200, "text/plain; version=1.0.0; charset=utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def pick(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str
) -> dict[Any, float]:
    return {labels: value for (n, labels), value in found.items() if n == name}


async def test_healthz_and_readyz_answer_200_once_the_config_is_loaded(
    plane: ControlPlane,
) -> None:
    assert await get(plane.admin_port, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    assert await get(plane.admin_port, "/readyz") == (200, "text/plain; charset=utf-8", "ready\n")


class _Loading:
    ads = None
    traffic = None
    config_view = ConfigView()

    @property
    def cache(self) -> Any:
        raise AssertionError("not read")

    @property
    def mesh(self) -> Any:
        raise AssertionError("not read")

    @property
    def reload_seconds(self) -> Any:
        raise AssertionError("not read")


async def test_readyz_is_503_until_the_first_config_is_loaded_while_healthz_is_200() -> None:
    admin = HttpAdmin(_Loading())
    await admin.start("127.0.0.1:0")
    try:
        assert (await get(admin.port, "/readyz"))[0] == 503
        assert (await get(admin.port, "/healthz"))[0] == 200
    finally:
        await admin.stop()


async def test_metrics_count_connected_proxies_pushes_acks_and_nacks_by_type(
    plane: ControlPlane, channel: grpc.aio.Channel
) -> None:
    call = await connect(channel)
    await nacked(channel)
    found = await samples(plane)
    assert pick(found, "pilotfish_proxies_connected") == {
        (("protocol", "sotw"), ("role", "sidecar"), ("type", "ADS")): 1.0
    }
    assert pick(found, "pilotfish_xds_pushes_total") == {
        (("type", "CDS"),): 1.0,
        (("type", "LDS"),): 1.0,
    }
    assert pick(found, "pilotfish_xds_acks_total") == {(("type", "CDS"),): 1.0}
    assert pick(found, "pilotfish_xds_nacks_total") == {(("type", "LDS"),): 1.0}
    assert pick(found, "pilotfish_config_reloads_total") == {(): 1.0}
    assert pick(found, "pilotfish_config_errors") == {(): 0.0}
    assert pick(found, "pilotfish_proxy_classes") == {(): 1.0}
    assert pick(found, "pilotfish_resources")[(("type", "CDS"),)] == 2.0
    assert pick(found, "pilotfish_convergence_seconds_count") == {}
    call.cancel()
    await eventually(lambda: plane.ads is not None and plane.ads.stream_count == 0)
    assert pick(await samples(plane), "pilotfish_proxies_connected") == {}


async def test_an_edit_counts_a_reload_and_one_convergence_per_proxy_ack_of_it(
    plane: ControlPlane, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    call = await connect(channel)
    await nacked(channel)
    staged = tmp_path.parent / f"{tmp_path.name}-web.yaml"
    staged.write_text(SMALL)
    staged.rename(tmp_path / "web.yaml")
    await eventually(lambda: plane.config_view.reloads == 2)
    clusters = await read(call)
    while clusters.type_url != CLUSTER:
        clusters = await read(call)
    await call.write(
        discovery_pb2.DiscoveryRequest(
            type_url=CLUSTER, version_info=clusters.version_info, response_nonce=clusters.nonce
        )
    )
    found: dict[Any, float] = {}
    for _ in range(300):
        found = await samples(plane)
        if pick(found, "pilotfish_xds_acks_total").get((("type", "CDS"),)) == 2.0:
            break
        await asyncio.sleep(0.01)
    assert pick(found, "pilotfish_convergence_seconds_count") == {(("type", "CDS"),): 1.0}
    buckets = pick(found, "pilotfish_convergence_seconds_bucket")
    assert buckets[(("le", "+Inf"), ("type", "CDS"))] == 1.0
    assert pick(found, "pilotfish_config_reloads_total") == {(): 2.0}
    assert pick(found, "pilotfish_config_reload_duration_seconds_count") == {(): 2.0}
    assert pick(found, "pilotfish_resources")[(("type", "CDS"),)] == 4.0  # + web, web v1
    call.cancel()


async def test_metrics_report_traffic_per_cluster_from_the_load_reports(
    plane: ControlPlane,
) -> None:
    from envoy.config.endpoint.v3 import load_report_pb2
    from envoy.service.load_stats.v3 import lrs_pb2

    report = lrs_pb2.LoadStatsRequest()
    stats = report.cluster_stats.add(cluster_name="outbound|8080||hello")
    locality = stats.upstream_locality_stats.add()
    locality.total_issued_requests = 30
    locality.total_successful_requests = 27
    locality.total_error_requests = 3
    assert isinstance(locality, load_report_pb2.UpstreamLocalityStats)
    plane.load_reports.report("reporter-1", lrs_pb2.LoadStatsRequest())
    plane.load_reports.report("reporter-1", report)
    found = await samples(plane)
    cluster = (("cluster", "outbound|8080||hello"),)
    assert pick(found, "pilotfish_cluster_requests_total") == {cluster: 30.0}
    assert pick(found, "pilotfish_cluster_errors_total") == {cluster: 3.0}
    assert pick(found, "pilotfish_cluster_requests_in_progress") == {cluster: 0.0}
    assert pick(found, "pilotfish_cluster_requests_per_second")[cluster] > 0
    assert pick(found, "pilotfish_cluster_errors_per_second")[cluster] > 0


async def test_debug_config_is_the_served_model_as_json(tmp_path: Path) -> None:
    (tmp_path / "mesh.yaml").write_text(SMALL)
    plane = await start(tmp_path)
    try:
        status, content_type, text = await get(plane.admin_port, "/debug/config")
    finally:
        await plane.stop(grace=0.1)
    assert (status, content_type) == (200, "application/json; charset=utf-8")
    headers = {"set": [], "add": [], "remove": []}
    web = "web.default.svc.cluster.local"
    assert json.loads(text) == {
        "version": plane.config_view.version,
        "services": [
            {
                "host": web,
                "namespace": "default",
                "name": "web",
                "ports": [{"name": "http", "port": 80, "protocol": "HTTP", "target_port": 8080}],
                "endpoints": [
                    [
                        80,
                        [
                            {
                                "address": "10.0.0.1",
                                "port": 8080,
                                "labels": [["app", "web"], ["version", "v1"]],
                                "weight": 1,
                                "locality": {"region": "", "zone": "", "subzone": ""},
                            }
                        ],
                    ]
                ],
                "resolution": "STATIC",
                "addresses": [],
                "mesh_external": False,
                "source": "Service default/web",
                "export_to": ["*"],
            }
        ],
        "destination_policies": [
            {
                "host": web,
                "namespace": "default",
                "name": "web",
                "traffic_policy": {
                    "load_balancer": None,
                    "connection_pool": None,
                    "outlier_detection": None,
                    "port_level": [],
                },
                "subsets": [{"name": "v1", "labels": [["version", "v1"]], "traffic_policy": None}],
                "export_to": ["*"],
            }
        ],
        "virtual_services": [
            {
                "namespace": "default",
                "name": "web",
                "hosts": [web],
                "gateways": ["mesh"],
                "http": [
                    {
                        "name": "",
                        "matches": [],
                        "destinations": [
                            {
                                "host": web,
                                "subset": "v1",
                                "port": None,
                                "weight": 90,
                                "request_headers": headers,
                                "response_headers": headers,
                            },
                            {
                                "host": web,
                                "subset": None,
                                "port": None,
                                "weight": 10,
                                "request_headers": headers,
                                "response_headers": headers,
                            },
                        ],
                        "redirect": None,
                        "rewrite": None,
                        "timeout": None,
                        "retries": None,
                        "fault": None,
                        "mirror": None,
                        "mirror_percentage": None,
                        "request_headers": headers,
                        "response_headers": headers,
                    }
                ],
                "tcp": [],
                "export_to": ["*"],
            }
        ],
        "gateways": [],
    }


async def test_stop_closes_the_admin_port(tmp_path: Path) -> None:
    plane = await start(tmp_path)
    port = plane.admin_port
    await plane.stop(grace=0.1)
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(port, "/healthz")


def test_serve_has_the_admin_endpoint_on_15000_by_default_and_off_disables_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["--config-dir", str(tmp_path), "--state-dir", str(tmp_path.parent / "state")]
    base += ["--xds-address", "127.0.0.1:0"]
    options: Any = serve_options(monkeypatch, [*base, "--admin-address", "127.0.0.1:0"])
    assert options.admin_address == "127.0.0.1:0"
    options = serve_options(monkeypatch, [*base, "--admin-address", "off"])
    assert options.admin_address is None
    options = serve_options(monkeypatch, [*base, "--admin-address", ""])
    assert options.admin_address is None
    assert ControlPlaneOptions(tmp_path).admin_address is None


async def test_a_delta_proxy_counts_by_protocol_and_its_ack_of_an_edit_converges(
    plane: ControlPlane, channel: grpc.aio.Channel, tmp_path: Path
) -> None:
    call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources()
    await call.write(discovery_pb2.DeltaDiscoveryRequest(node=node("delta-1"), type_url=CLUSTER))
    clusters = await read(call)
    await call.write(
        discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=clusters.nonce)
    )
    staged = tmp_path.parent / f"{tmp_path.name}-web.yaml"
    staged.write_text(SMALL)
    staged.rename(tmp_path / "web.yaml")
    clusters = await read(call)
    await call.write(
        discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=clusters.nonce)
    )
    found: dict[Any, float] = {}
    for _ in range(300):
        found = await samples(plane)
        if pick(found, "pilotfish_xds_acks_total").get((("type", "CDS"),)) == 2.0:
            break
        await asyncio.sleep(0.01)
    assert pick(found, "pilotfish_proxies_connected") == {
        (("protocol", "delta"), ("role", "sidecar"), ("type", "ADS")): 1.0
    }
    assert pick(found, "pilotfish_convergence_seconds_count") == {(("type", "CDS"),): 1.0}
    call.cancel()
