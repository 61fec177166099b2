"""A real Envoy on state-of-the-world ADS: it accepts our config and routes as the YAML says.

The shared deployment (module scope) is the hello-world example and the
bookinfo example in one config directory, moved to free loopback ports: the
WorkloadEntries point at :mod:`~controlplane.demo.backends` that answer with
their own name, the Service and Gateway ports are free ports, so the
sidecar and gateway listeners (bound on 127.0.0.1) collide with nothing. One
control plane serves one sidecar Envoy and one gateway Envoy.

Tests that edit the YAML get their own bookinfo deployment (control plane
and sidecar) so that the shared one never changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controlplane.demo.backends import Backends, Client, free_ports
from controlplane.demo.envoy import Envoy, gateway_metadata, sidecar_metadata, wait_for
from tests.interop.conftest import (
    ControlPlaneThread,
    ServeProcess,
    edit_docs,
    load_example,
    relocate,
    start_envoy,
    write_docs,
    write_text,
)

pytestmark = pytest.mark.slow

HELLO = ("hello-1", "hello-2", "hello-3")
BOOKINFO = (
    "productpage-v1",
    "details-v1",
    "reviews-v1",
    "reviews-v2",
    "reviews-v3",
    "ratings-v1",
)
BOOKINFO_FILES = ("services.yaml", "workloads.yaml", "destination-rules.yaml", "routing.yaml")
EXAMPLE_SERVICE_PORTS = {"hello": 8080, "bookinfo": 9080}
EXAMPLE_GATEWAY_PORT = 8080
INGRESS_LABELS = {"istio": "ingressgateway"}
EDIT_TIMEOUT = 15.0


def hello_host(name: str = "hello") -> str:
    return f"{name}.default.svc.cluster.local"


def bookinfo_host(name: str) -> str:
    return f"{name}.bookinfo.svc.cluster.local"


@dataclass(frozen=True)
class Ports:
    hello: int
    hello_gateway: int
    bookinfo: int
    bookinfo_gateway: int

    @classmethod
    def free(cls) -> Ports:
        return cls(*free_ports(4))


@dataclass
class Deployment:
    config_dir: Path
    ports: Ports
    plane: ControlPlaneThread
    sidecar: Envoy
    gateway: Envoy | None = None

    @property
    def routing_file(self) -> Path:
        return self.config_dir / "bookinfo" / "routing.yaml"

    def errors_in(self, name: str) -> set[str]:
        """The codes of the control plane's current errors in config file ``name``."""
        return {
            d.code
            for d in self.plane.plane.store.diagnostics
            if d.is_error and Path(d.file).name == name
        }


def write_hello(config_dir: Path, ports: Ports, backends: Backends) -> None:
    docs = relocate(
        load_example("hello-world", "hello.yaml"),
        service_ports={EXAMPLE_SERVICE_PORTS["hello"]: ports.hello},
        gateway_ports={EXAMPLE_GATEWAY_PORT: ports.hello_gateway},
        workload_ports={name: backends.port(name) for name in HELLO},
    )
    write_docs(config_dir / "hello" / "hello.yaml", docs)


def write_bookinfo(config_dir: Path, ports: Ports, backends: Backends) -> None:
    for name in BOOKINFO_FILES:
        docs = relocate(
            load_example("bookinfo", name),
            service_ports={EXAMPLE_SERVICE_PORTS["bookinfo"]: ports.bookinfo},
            gateway_ports={EXAMPLE_GATEWAY_PORT: ports.bookinfo_gateway},
            workload_ports={name: backends.port(name) for name in BOOKINFO},
        )
        write_docs(config_dir / "bookinfo" / name, docs)


@pytest.fixture(scope="module")
def backends() -> Iterator[Backends]:
    with Backends(HELLO + BOOKINFO) as started:
        yield started


@pytest.fixture(scope="module")
def mesh(
    envoy_binary: str, backends: Backends, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """hello-world and bookinfo behind one control plane, a sidecar and a gateway."""
    root = tmp_path_factory.mktemp("mesh")
    config_dir = root / "config"
    ports = Ports.free()
    write_hello(config_dir, ports, backends)
    write_bookinfo(config_dir, ports, backends)
    with ExitStack() as stack:
        plane = stack.enter_context(ControlPlaneThread(config_dir))
        sidecar = stack.enter_context(
            start_envoy(envoy_binary, root, plane.port, "sidecar", sidecar_metadata())
        )
        gateway = stack.enter_context(
            start_envoy(envoy_binary, root, plane.port, "gateway", gateway_metadata(INGRESS_LABELS))
        )
        yield Deployment(config_dir, ports, plane, sidecar, gateway)


@pytest.fixture
def bookinfo(envoy_binary: str, backends: Backends, tmp_path: Path) -> Iterator[Deployment]:
    """bookinfo alone, with its own control plane and sidecar: for tests that edit files."""
    config_dir = tmp_path / "config"
    ports = Ports.free()
    write_bookinfo(config_dir, ports, backends)
    with (
        ControlPlaneThread(config_dir) as plane,
        start_envoy(envoy_binary, tmp_path, plane.port, "sidecar", sidecar_metadata()) as sidecar,
    ):
        yield Deployment(config_dir, ports, plane, sidecar)


def eds_clusters(ports: Ports) -> set[str]:
    """The EDS clusters of the shared deployment."""
    bookinfo = {
        f"outbound|{ports.bookinfo}|{subset}|{bookinfo_host(name)}"
        for name, subsets in (
            ("productpage", ("",)),
            ("details", ("",)),
            ("ratings", ("",)),
            ("reviews", ("", "v1", "v2", "v3")),
        )
        for subset in subsets
    }
    return bookinfo | {f"outbound|{ports.hello}||{hello_host()}"}


def rejected_stats(envoy: Envoy) -> dict[str, int]:
    return envoy.stats(r"update_rejected$")


def reviews_split(v1: int, v3: int) -> Callable[[dict[str, Any]], None]:
    """An edit of the reviews VirtualService: the catch-all rule splits ``v1``/``v3``."""

    def change(spec: dict[str, Any]) -> None:
        (split,) = [rule for rule in spec["http"] if rule.get("name") == "split"]
        split["route"] = [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": v1},
            {"destination": {"host": "reviews", "subset": "v3"}, "weight": v3},
        ]

    return change


def route_config_version(envoy: Envoy, name: str) -> str:
    dump = envoy.config_dump("dynamic_route_configs")
    (entry,) = [e for e in dump["configs"] if e["route_config"]["name"] == name]
    version: str = entry["version_info"]
    return version


def assert_80_20_split(counts: Counter[str | None], total: int) -> None:
    assert set(counts) == {"reviews-v1", "reviews-v3"}
    assert 0.70 <= counts["reviews-v1"] / total <= 0.90, counts


# -- configuration accepted ------------------------------------------------------------


def test_sidecar_acks_every_type_with_no_update_rejected(mesh: Deployment) -> None:
    ports = mesh.ports
    expected = {
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
        f"http.outbound_127.0.0.1_{ports.hello}.rds.{ports.hello}.update_rejected",
        f"http.outbound_127.0.0.1_{ports.bookinfo}.rds.{ports.bookinfo}.update_rejected",
        *(f"cluster.{name}.update_rejected" for name in eds_clusters(ports)),
    }
    assert rejected_stats(mesh.sidecar) == dict.fromkeys(expected, 0)


def test_gateway_acks_every_type_with_no_update_rejected(mesh: Deployment) -> None:
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


def test_sidecar_config_dump_holds_our_clusters_listeners_and_routes(mesh: Deployment) -> None:
    ports = mesh.ports
    sidecar = mesh.sidecar
    assert sidecar.dynamic_cluster_names() == eds_clusters(ports) | {"BlackHoleCluster"}
    assert sidecar.dynamic_listener_names() == {
        f"127.0.0.1_{ports.hello}",
        f"127.0.0.1_{ports.bookinfo}",
    }
    routes = sidecar.dynamic_route_configs()
    assert set(routes) == {str(ports.hello), str(ports.bookinfo)}
    hosts = {vh["name"]: vh["domains"] for vh in routes[str(ports.bookinfo)]["virtual_hosts"]}
    assert sorted(hosts) == [
        f"{bookinfo_host(name)}:{ports.bookinfo}"
        for name in ("details", "productpage", "ratings", "reviews")
    ]
    port = ports.bookinfo
    assert hosts[f"{bookinfo_host('reviews')}:{port}"] == [
        bookinfo_host("reviews"),
        f"{bookinfo_host('reviews')}:{port}",
        "reviews.bookinfo.svc",
        f"reviews.bookinfo.svc:{port}",
        "reviews.bookinfo",
        f"reviews.bookinfo:{port}",
        "reviews",
        f"reviews:{port}",
    ]


def test_gateway_config_dump_holds_one_listener_and_route_per_gateway_port(
    mesh: Deployment,
) -> None:
    assert mesh.gateway is not None
    ports = mesh.ports
    assert mesh.gateway.dynamic_cluster_names() == eds_clusters(ports) | {"BlackHoleCluster"}
    assert mesh.gateway.dynamic_listener_names() == {
        f"127.0.0.1_{ports.hello_gateway}",
        f"127.0.0.1_{ports.bookinfo_gateway}",
    }
    routes = mesh.gateway.dynamic_route_configs()
    assert set(routes) == {f"http.{ports.hello_gateway}", f"http.{ports.bookinfo_gateway}"}
    for route in routes.values():
        assert [vh["domains"] for vh in route["virtual_hosts"]] == [["*"]]


def test_clusters_hold_the_workload_entries_their_subsets_select(
    mesh: Deployment, backends: Backends
) -> None:
    hosts = mesh.sidecar.cluster_hosts()
    port = mesh.ports.bookinfo

    def at(*names: str) -> list[str]:
        return sorted(f"127.0.0.1:{backends.port(name)}" for name in names)

    assert hosts[f"outbound|{mesh.ports.hello}||{hello_host()}"] == at(*HELLO)
    assert hosts[f"outbound|{port}||{bookinfo_host('reviews')}"] == at(
        "reviews-v1", "reviews-v2", "reviews-v3"
    )
    for version in ("v1", "v2", "v3"):
        assert hosts[f"outbound|{port}|{version}|{bookinfo_host('reviews')}"] == at(
            f"reviews-{version}"
        )
    assert hosts[f"outbound|{port}||{bookinfo_host('ratings')}"] == at("ratings-v1")
    assert hosts["BlackHoleCluster"] == []


# -- sidecar routing ---------------------------------------------------------------------


def test_sidecar_sends_end_user_jason_to_reviews_v2_only(mesh: Deployment) -> None:
    client = Client(mesh.ports.bookinfo)
    assert client.backends(20, host="reviews", end_user="jason") == {"reviews-v2": 20}


def test_sidecar_splits_other_users_about_80_20_between_reviews_v1_and_v3(
    mesh: Deployment,
) -> None:
    client = Client(mesh.ports.bookinfo)
    counts = client.backends(400, host="reviews", end_user="alice")
    assert_80_20_split(counts, 400)


def test_sidecar_routes_a_host_without_rules_to_all_its_workloads(mesh: Deployment) -> None:
    client = Client(mesh.ports.bookinfo)
    assert client.backends(5, host="details") == {"details-v1": 5}


def test_sidecar_round_robins_hello_evenly_over_the_three_replicas(mesh: Deployment) -> None:
    client = Client(mesh.ports.hello)
    assert client.backends(30, host="hello") == {"hello-1": 10, "hello-2": 10, "hello-3": 10}


def test_sidecar_fault_aborts_ratings_with_503_only_when_the_header_matches(
    mesh: Deployment,
) -> None:
    client = Client(mesh.ports.bookinfo)
    aborted = client.get("/", host="ratings", x_test_fault="abort")
    assert (aborted.status, aborted.backend, aborted.body) == (503, None, "fault filter abort")
    passed = client.get("/", host="ratings", x_test_fault="no")
    assert (passed.status, passed.backend) == (200, "ratings-v1")


@pytest.mark.parametrize(
    "host",
    [
        "reviews",
        "reviews:{port}",
        "reviews.bookinfo",
        "reviews.bookinfo:{port}",
        "reviews.bookinfo.svc",
        "reviews.bookinfo.svc:{port}",
        "reviews.bookinfo.svc.cluster.local",
        "reviews.bookinfo.svc.cluster.local:{port}",
    ],
)
def test_sidecar_routes_every_host_form_of_a_service(mesh: Deployment, host: str) -> None:
    sent = host.format(port=mesh.ports.bookinfo)
    response = Client(mesh.ports.bookinfo).get("/ratings/7", host=sent, end_user="jason")
    assert (response.status, response.backend) == (200, "reviews-v2")
    assert response.headers["x-echo-host"] == sent
    assert response.headers["x-echo-path"] == "/ratings/7"


@pytest.mark.parametrize(
    "host", ["hello", "hello.default", "hello.default.svc.cluster.local:{port}"]
)
def test_sidecar_routes_hello_by_its_host_forms(mesh: Deployment, host: str) -> None:
    response = Client(mesh.ports.hello).get("/", host=host.format(port=mesh.ports.hello))
    assert response.status == 200
    assert response.backend in HELLO


@pytest.mark.parametrize("host", ["unknown", "reviews.default", "hello"])
def test_sidecar_answers_404_for_a_host_not_on_the_listener_port(
    mesh: Deployment, host: str
) -> None:
    response = Client(mesh.ports.bookinfo).get("/", host=host)
    assert (response.status, response.backend) == (404, None)


# -- gateway routing ---------------------------------------------------------------------


def test_gateway_round_robins_hello_world_over_the_three_replicas(mesh: Deployment) -> None:
    client = Client(mesh.ports.hello_gateway)
    assert client.backends(30, host="example.com") == {"hello-1": 10, "hello-2": 10, "hello-3": 10}


def test_gateway_redirects_old_productpage_with_301_and_location(mesh: Deployment) -> None:
    port = mesh.ports.bookinfo_gateway
    response = Client(port).get("/old-productpage", host=f"bookinfo.example:{port}")
    assert response.status == 301
    assert response.headers["location"] == f"http://bookinfo.example:{port}/productpage"
    assert response.backend is None


def test_gateway_rewrites_the_reviews_prefix_and_routes_to_subset_v1(mesh: Deployment) -> None:
    client = Client(mesh.ports.bookinfo_gateway)
    for path, upstream_path in (("/reviews", "/"), ("/reviews?id=7", "/?id=7")):
        response = client.get(path, host="bookinfo.example", end_user="jason")
        assert (response.status, response.backend) == (200, "reviews-v1")
        assert response.headers["x-echo-path"] == upstream_path
    assert client.backends(20, "/reviews") == {"reviews-v1": 20}


def test_gateway_routes_everything_else_to_productpage_unchanged(mesh: Deployment) -> None:
    response = Client(mesh.ports.bookinfo_gateway).get("/productpage?u=1", host="bookinfo.example")
    assert (response.status, response.backend) == (200, "productpage-v1")
    assert response.headers["x-echo-path"] == "/productpage?u=1"
    assert response.headers["x-echo-host"] == "bookinfo.example"


# -- live edits ----------------------------------------------------------------------------


def test_editing_the_split_to_0_100_moves_all_traffic_to_v3_without_a_restart(
    bookinfo: Deployment,
) -> None:
    sidecar, port = bookinfo.sidecar, bookinfo.ports.bookinfo
    client = Client(port)
    assert_80_20_split(client.backends(400, host="reviews"), 400)
    before = route_config_version(sidecar, str(port))

    edit_docs(bookinfo.routing_file, "VirtualService", "reviews", reviews_split(0, 100))

    wait_for(
        lambda: client.backends(20, host="reviews") == {"reviews-v3": 20},
        EDIT_TIMEOUT,
        "all reviews traffic on v3",
    )
    assert client.backends(100, host="reviews") == {"reviews-v3": 100}
    assert client.backends(10, host="reviews", end_user="jason") == {"reviews-v2": 10}
    assert route_config_version(sidecar, str(port)) != before
    assert set(rejected_stats(sidecar).values()) == {0}
    # Only the routes changed: the listener was neither replaced nor drained.
    assert sidecar.stats(r"^listener_manager\.listener_(modified|removed)$") == {
        "listener_manager.listener_modified": 0,
        "listener_manager.listener_removed": 0,
    }


@pytest.mark.parametrize(
    ("bad_edit", "code"),
    [
        pytest.param(
            lambda path: edit_docs(path, "VirtualService", "reviews", reviews_split(0, 0)),
            "PF117",
            id="weights-sum-to-0",
        ),
        pytest.param(
            lambda path: write_text(path, path.read_text() + "\n  broken: [unclosed\n"),
            "PF100",
            id="yaml-syntax-error",
        ),
    ],
)
def test_a_bad_edit_leaves_envoy_serving_the_last_good_routes(
    bookinfo: Deployment, bad_edit: Callable[[Path], None], code: str
) -> None:
    sidecar, port = bookinfo.sidecar, bookinfo.ports.bookinfo
    before = route_config_version(sidecar, str(port))

    bad_edit(bookinfo.routing_file)

    wait_for(
        lambda: code in bookinfo.errors_in("routing.yaml"),
        EDIT_TIMEOUT,
        f"the control plane to report {code} in routing.yaml",
    )
    assert route_config_version(sidecar, str(port)) == before
    assert set(rejected_stats(sidecar).values()) == {0}
    client = Client(port)
    assert_80_20_split(client.backends(400, host="reviews"), 400)
    assert client.backends(10, host="reviews", end_user="jason") == {"reviews-v2": 10}


def test_fixing_a_rejected_edit_applies_the_fixed_file(bookinfo: Deployment) -> None:
    client = Client(bookinfo.ports.bookinfo)
    edit_docs(bookinfo.routing_file, "VirtualService", "reviews", reviews_split(0, 0))
    wait_for(
        lambda: "PF117" in bookinfo.errors_in("routing.yaml"),
        EDIT_TIMEOUT,
        "the control plane to report PF117",
    )

    before = route_config_version(bookinfo.sidecar, str(bookinfo.ports.bookinfo))

    edit_docs(bookinfo.routing_file, "VirtualService", "reviews", reviews_split(100, 0))

    # Traffic alone cannot tell the fix applied: 20 picks from the old 80/20 split
    # are all v1 about one time in a hundred. The route version can.
    wait_for(
        lambda: route_config_version(bookinfo.sidecar, str(bookinfo.ports.bookinfo)) != before,
        EDIT_TIMEOUT,
        "Envoy to take the fixed routes",
    )
    assert client.backends(100, host="reviews") == {"reviews-v1": 100}
    assert bookinfo.errors_in("routing.yaml") == set()
    assert set(rejected_stats(bookinfo.sidecar).values()) == {0}


# -- the command line ----------------------------------------------------------------------


def test_pilotfish_serve_configures_envoy_for_hello_world_and_exits_0_on_sigterm(
    envoy_binary: str, backends: Backends, tmp_path: Path
) -> None:
    config_dir = tmp_path / "config"
    ports = Ports.free()
    write_hello(config_dir, ports, backends)
    serve = ServeProcess(config_dir, tmp_path).start()
    try:
        sidecar = start_envoy(envoy_binary, tmp_path, serve.port, "sidecar", sidecar_metadata())
        with sidecar:
            client = Client(ports.hello)
            assert client.backends(30, host="hello") == {
                "hello-1": 10,
                "hello-2": 10,
                "hello-3": 10,
            }
            assert set(rejected_stats(sidecar).values()) == {0}
    finally:
        code = serve.stop()
    assert code == 0, serve.log()
