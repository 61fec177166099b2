"""A real Envoy on incremental (delta) ADS: ``ads_config.api_type: DELTA_GRPC``.

The same deployments as :mod:`tests.interop.test_envoy_sotw` (hello-world and
bookinfo on free loopback ports, backends that answer with their own name),
but the Envoys speak delta xDS, so the control plane serves them through
:class:`~controlplane.xds.delta.DeltaStream`. Envoy's ``config_dump`` shows
per-resource versions, which for delta are the content hashes of the
control plane's snapshot: that is how the tests know the stream was delta.

The shared deployment (module scope) is a sidecar and a gateway on one control
plane; tests that edit the YAML get their own bookinfo deployment.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from controlplane.demo.backends import Backends, Client
from controlplane.demo.envoy import (
    Envoy,
    bootstrap,
    envoy_command,
    gateway_metadata,
    sidecar_metadata,
    wait_for,
)
from controlplane.xds import CLUSTER
from tests.interop.conftest import (
    ControlPlaneThread,
    edit_docs,
    read_docs,
    write_docs,
)
from tests.interop.test_envoy_sotw import (
    BOOKINFO,
    EDIT_TIMEOUT,
    HELLO,
    INGRESS_LABELS,
    Deployment,
    Ports,
    assert_80_20_split,
    bookinfo_host,
    eds_clusters,
    hello_host,
    rejected_stats,
    reviews_split,
    route_config_version,
    write_bookinfo,
    write_hello,
)

pytestmark = pytest.mark.slow

_node_ids = itertools.count(1)


class DeltaEnvoy(Envoy):
    """An :class:`Envoy` whose bootstrap asks for incremental ADS (``DELTA_GRPC``)."""

    def spawn(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / f"{self.node_id}.bootstrap.json"
        document = bootstrap(
            self.xds_host,
            self.xds_port,
            node_id=self.node_id,
            node_cluster=self.node_cluster,
            metadata=self.metadata,
        )
        document["dynamic_resources"]["ads_config"]["api_type"] = "DELTA_GRPC"
        config.write_text(json.dumps(document, indent=2))
        self.admin_address_path.unlink(missing_ok=True)
        self._admin_port = None
        command = envoy_command(
            self.binary, config, log_path=self.log_path, admin_address_path=self.admin_address_path
        )
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )


def start_delta_envoy(
    binary: str, workdir: Path, xds_port: int, name: str, metadata: Mapping[str, Any]
) -> DeltaEnvoy:
    """A started delta Envoy on the control plane at ``xds_port`` that reached ``/ready``."""
    envoy = DeltaEnvoy(
        binary, workdir, xds_port, node_id=f"delta-{name}-{next(_node_ids)}", metadata=metadata
    )
    envoy.start()
    try:
        envoy.wait_ready()
    except BaseException:
        envoy.stop()
        raise
    return envoy


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    with Backends(HELLO + BOOKINFO) as started:
        yield started


@pytest.fixture(scope="module")
def mesh(
    envoy_binary: str, backends: Backends, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """hello-world and bookinfo behind one control plane, a delta sidecar and gateway."""
    root = tmp_path_factory.mktemp("delta-mesh")
    config_dir = root / "config"
    ports = Ports.free()
    write_hello(config_dir, ports, backends)
    write_bookinfo(config_dir, ports, backends)
    with ExitStack() as stack:
        plane = stack.enter_context(ControlPlaneThread(config_dir))
        sidecar = stack.enter_context(
            start_delta_envoy(envoy_binary, root, plane.port, "sidecar", sidecar_metadata())
        )
        gateway = stack.enter_context(
            start_delta_envoy(
                envoy_binary, root, plane.port, "gateway", gateway_metadata(INGRESS_LABELS)
            )
        )
        yield Deployment(config_dir, ports, plane, sidecar, gateway)


@pytest.fixture
def bookinfo(envoy_binary: str, backends: Backends, tmp_path: Path) -> Iterator[Deployment]:
    """bookinfo alone, with its own control plane and delta sidecar: for tests that edit."""
    config_dir = tmp_path / "config"
    ports = Ports.free()
    write_bookinfo(config_dir, ports, backends)
    with (
        ControlPlaneThread(config_dir) as plane,
        start_delta_envoy(
            envoy_binary, tmp_path, plane.port, "sidecar", sidecar_metadata()
        ) as sidecar,
    ):
        yield Deployment(config_dir, ports, plane, sidecar)


def cluster_hashes(deployment: Deployment) -> dict[str, str]:
    """``{cluster: content hash}`` over every snapshot the control plane serves."""
    cache = deployment.plane.plane.cache
    hashes: dict[str, str] = {}
    published = cache.keys()
    for key in published:
        snapshot = cache.get(key)
        assert snapshot is not None
        hashes.update(snapshot.name_hashes(CLUSTER))
    return hashes


def cluster_versions(envoy: Envoy) -> dict[str, str]:
    """``{cluster: version_info}`` of the dynamic clusters Envoy has accepted."""
    dump = envoy.config_dump("dynamic_active_clusters")
    return {e["cluster"]["name"]: e["version_info"] for e in dump.get("configs", [])}


# -- configuration accepted ------------------------------------------------------------


def test_delta_sidecar_acks_every_type_with_no_update_rejected(mesh: Deployment) -> None:
    ports = mesh.ports
    expected = {
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
        f"http.outbound_127.0.0.1_{ports.hello}.rds.{ports.hello}.update_rejected",
        f"http.outbound_127.0.0.1_{ports.bookinfo}.rds.{ports.bookinfo}.update_rejected",
        *(f"cluster.{name}.update_rejected" for name in eds_clusters(ports)),
    }
    assert rejected_stats(mesh.sidecar) == dict.fromkeys(expected, 0)


def test_delta_gateway_acks_every_type_with_no_update_rejected(mesh: Deployment) -> None:
    assert mesh.gateway is not None
    ports = mesh.ports
    expected = {
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
        f"http.gateway_127.0.0.1_{ports.hello_gateway}.rds.http.{ports.hello_gateway}"
        ".update_rejected",
        f"http.gateway_127.0.0.1_{ports.bookinfo_gateway}.rds.http.{ports.bookinfo_gateway}"
        ".update_rejected",
        *(f"cluster.{name}.update_rejected" for name in eds_clusters(ports)),
    }
    assert rejected_stats(mesh.gateway) == dict.fromkeys(expected, 0)


def test_delta_sidecar_holds_every_cluster_at_its_content_hash(mesh: Deployment) -> None:
    versions = cluster_versions(mesh.sidecar)
    assert set(versions) == eds_clusters(mesh.ports) | {"BlackHoleCluster"}
    hashes = cluster_hashes(mesh)
    assert versions == {name: hashes[name] for name in versions}
    assert {len(version) for version in versions.values()} == {64}


def test_delta_sidecar_holds_our_listeners_and_routes(mesh: Deployment) -> None:
    ports = mesh.ports
    assert mesh.sidecar.dynamic_listener_names() == {
        f"127.0.0.1_{ports.hello}",
        f"127.0.0.1_{ports.bookinfo}",
    }
    assert set(mesh.sidecar.dynamic_route_configs()) == {str(ports.hello), str(ports.bookinfo)}


def test_delta_subset_clusters_hold_the_workloads_their_subsets_select(
    mesh: Deployment, backends: Backends
) -> None:
    hosts = mesh.sidecar.cluster_hosts()
    port = mesh.ports.bookinfo

    def at(*names: str) -> list[str]:
        return sorted(f"127.0.0.1:{backends.port(name)}" for name in names)

    assert hosts[f"outbound|{port}||{bookinfo_host('reviews')}"] == at(
        "reviews-v1", "reviews-v2", "reviews-v3"
    )
    for version in ("v1", "v2", "v3"):
        assert hosts[f"outbound|{port}|{version}|{bookinfo_host('reviews')}"] == at(
            f"reviews-{version}"
        )
    assert hosts[f"outbound|{mesh.ports.hello}||{hello_host()}"] == at(*HELLO)


# -- routing ---------------------------------------------------------------------------


def test_delta_sidecar_header_match_sends_end_user_jason_to_reviews_v2_only(
    mesh: Deployment,
) -> None:
    client = Client(mesh.ports.bookinfo)
    assert client.backends(20, host="reviews", end_user="jason") == {"reviews-v2": 20}


def test_delta_sidecar_weighted_split_sends_other_users_about_80_20_to_v1_and_v3(
    mesh: Deployment,
) -> None:
    counts = Client(mesh.ports.bookinfo).backends(400, host="reviews", end_user="alice")
    assert_80_20_split(counts, 400)


def test_delta_sidecar_round_robins_hello_over_the_three_replicas(mesh: Deployment) -> None:
    client = Client(mesh.ports.hello)
    assert client.backends(30, host="hello") == {"hello-1": 10, "hello-2": 10, "hello-3": 10}


def test_delta_gateway_routes_the_reviews_prefix_to_subset_v1(mesh: Deployment) -> None:
    client = Client(mesh.ports.bookinfo_gateway)
    response = client.get("/reviews", host="bookinfo.example")
    assert (response.status, response.backend, response.headers["x-echo-path"]) == (
        200,
        "reviews-v1",
        "/",
    )
    assert client.backends(20, "/reviews") == {"reviews-v1": 20}


# -- live edits --------------------------------------------------------------------------


def test_delta_edit_of_the_split_to_0_100_moves_all_traffic_to_v3_without_a_restart(
    bookinfo: Deployment,
) -> None:
    sidecar, port = bookinfo.sidecar, bookinfo.ports.bookinfo
    client = Client(port)
    assert_80_20_split(client.backends(400, host="reviews"), 400)
    before = route_config_version(sidecar, str(port))
    pid = sidecar.process.pid if sidecar.process else None

    edit_docs(bookinfo.routing_file, "VirtualService", "reviews", reviews_split(0, 100))

    wait_for(
        lambda: client.backends(20, host="reviews") == {"reviews-v3": 20},
        EDIT_TIMEOUT,
        "all reviews traffic on v3",
    )
    assert client.backends(100, host="reviews") == {"reviews-v3": 100}
    assert client.backends(10, host="reviews", end_user="jason") == {"reviews-v2": 10}
    assert route_config_version(sidecar, str(port)) != before
    assert sidecar.process is not None and sidecar.process.pid == pid
    assert set(rejected_stats(sidecar).values()) == {0}
    assert sidecar.stats(r"^listener_manager\.listener_(modified|removed)$") == {
        "listener_manager.listener_modified": 0,
        "listener_manager.listener_removed": 0,
    }


def test_delta_bad_edit_leaves_envoy_serving_the_last_good_routes(bookinfo: Deployment) -> None:
    sidecar, port = bookinfo.sidecar, bookinfo.ports.bookinfo
    before = route_config_version(sidecar, str(port))

    edit_docs(bookinfo.routing_file, "VirtualService", "reviews", reviews_split(0, 0))

    wait_for(
        lambda: "PF117" in bookinfo.errors_in("routing.yaml"),
        EDIT_TIMEOUT,
        "the control plane to report PF117 in routing.yaml",
    )
    assert route_config_version(sidecar, str(port)) == before
    assert set(rejected_stats(sidecar).values()) == {0}
    client = Client(port)
    assert_80_20_split(client.backends(400, host="reviews"), 400)
    assert client.backends(10, host="reviews", end_user="jason") == {"reviews-v2": 10}


def test_delta_deleting_a_service_removes_its_cluster_from_envoy(bookinfo: Deployment) -> None:
    sidecar, port = bookinfo.sidecar, bookinfo.ports.bookinfo
    details = f"outbound|{port}||{bookinfo_host('details')}"
    assert details in sidecar.cluster_hosts()
    assert Client(port).get("/", host="details").backend == "details-v1"
    services = bookinfo.config_dir / "bookinfo" / "services.yaml"

    write_docs(
        services,
        [d for d in read_docs(services) if d["metadata"]["name"] != "details"],
    )

    wait_for(
        lambda: details not in sidecar.cluster_hosts(),
        EDIT_TIMEOUT,
        "the details cluster to leave envoy's /clusters",
    )
    assert details not in sidecar.dynamic_cluster_names()
    assert Client(port).get("/", host="details").status == 404
    assert Client(port).backends(10, host="reviews", end_user="jason") == {"reviews-v2": 10}
    assert set(rejected_stats(sidecar).values()) == {0}
    assert sidecar.stats(r"^cluster_manager\.cluster_removed$") == {
        "cluster_manager.cluster_removed": 1
    }


def test_delta_changed_cluster_finishes_warming_with_its_load_assignment(
    bookinfo: Deployment, backends: Backends
) -> None:
    sidecar, port = bookinfo.sidecar, bookinfo.ports.bookinfo
    ratings = f"outbound|{port}||{bookinfo_host('ratings')}"
    before = cluster_versions(sidecar)[ratings]

    def slower_connect(spec: dict[str, Any]) -> None:
        spec["trafficPolicy"]["connectionPool"]["tcp"]["connectTimeout"] = "3s"

    edit_docs(
        bookinfo.config_dir / "bookinfo" / "destination-rules.yaml",
        "DestinationRule",
        "ratings",
        slower_connect,
    )

    wait_for(
        lambda: cluster_versions(sidecar)[ratings] != before,
        EDIT_TIMEOUT,
        "the changed ratings cluster to finish warming",
    )
    assert cluster_versions(sidecar)[ratings] == cluster_hashes(bookinfo)[ratings]
    assert sidecar.config_dump("dynamic_warming_clusters").get("configs", []) == []
    assert sidecar.cluster_hosts()[ratings] == [f"127.0.0.1:{backends.port('ratings-v1')}"]
    response = Client(port).get("/", host="ratings", x_test_fault="no")
    assert (response.status, response.backend) == (200, "ratings-v1")
    assert set(rejected_stats(sidecar).values()) == {0}
