"""The shipped examples validate cleanly and build the mesh they describe."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from controlplane.cli import main
from controlplane.config.store import ConfigStore, validate_directory
from controlplane.model import (
    Endpoint,
    HttpMatch,
    LoadBalancer,
    LoadBalancerKind,
    Mesh,
    Redirect,
    Retries,
    Rewrite,
    StringMatch,
    StringMatchKind,
    Subset,
    TrafficPolicy,
    VirtualService,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BOOKINFO = EXAMPLES / "bookinfo"
HELLO = EXAMPLES / "hello-world"


def load(root: Path) -> Mesh:
    store = ConfigStore(root)
    result = store.reload()
    assert result.diagnostics == ()
    assert result.rejected == ()
    return store.mesh


def virtual_service(mesh: Mesh, namespace: str, name: str) -> VirtualService:
    for vs in mesh.virtual_services:
        if (vs.namespace, vs.name) == (namespace, name):
            return vs
    raise AssertionError(f"no VirtualService {namespace}/{name}")


@pytest.mark.parametrize("example", ["hello-world", "bookinfo"])
def test_the_example_has_no_errors_and_no_warnings(example: str) -> None:
    assert validate_directory(EXAMPLES / example) == []


@pytest.mark.parametrize("example", ["hello-world", "bookinfo"])
def test_pilotfish_validate_accepts_the_example(
    example: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(EXAMPLES / example)]) == 0
    assert capsys.readouterr() == ("", "0 error(s), 0 warning(s)\n")


def test_the_store_applies_every_bookinfo_file() -> None:
    result = ConfigStore(BOOKINFO).reload()
    assert result.applied == (
        "destination-rules.yaml",
        "routing.yaml",
        "services.yaml",
        "workloads.yaml",
    )
    assert result.rejected == ()
    assert result.diagnostics == ()


def test_the_bookinfo_services_and_their_endpoints() -> None:
    mesh = load(BOOKINFO)
    assert [s.host for s in mesh.services] == [
        "details.bookinfo.svc.cluster.local",
        "productpage.bookinfo.svc.cluster.local",
        "ratings.bookinfo.svc.cluster.local",
        "reviews.bookinfo.svc.cluster.local",
    ]
    reviews = mesh.service("reviews.bookinfo.svc.cluster.local")
    assert reviews is not None
    assert reviews.endpoints == (
        (
            9080,
            (
                Endpoint("127.0.0.1", 9211, (("app", "reviews"), ("version", "v1"))),
                Endpoint("127.0.0.1", 9212, (("app", "reviews"), ("version", "v2"))),
                Endpoint("127.0.0.1", 9213, (("app", "reviews"), ("version", "v3"))),
            ),
        ),
    )


def test_the_bookinfo_reviews_rule_has_subsets_v1_v2_v3() -> None:
    mesh = load(BOOKINFO)
    policy = mesh.policy("reviews.bookinfo.svc.cluster.local")
    assert policy is not None
    round_robin = TrafficPolicy(load_balancer=LoadBalancer(LoadBalancerKind.ROUND_ROBIN))
    assert policy.subsets == (
        Subset("v1", (("version", "v1"),)),
        Subset("v2", (("version", "v2"),)),
        Subset("v3", (("version", "v3"),), round_robin),
    )
    least_request = LoadBalancer(LoadBalancerKind.LEAST_REQUEST)
    assert policy.effective(9080).load_balancer == least_request
    assert policy.effective(9080, "v1").load_balancer == least_request
    assert policy.effective(9080, "v3").load_balancer == round_robin.load_balancer
    assert policy.effective(9080, "v3").outlier_detection == policy.traffic_policy.outlier_detection


def test_the_bookinfo_reviews_routes_jason_by_header_and_splits_the_rest_80_20() -> None:
    reviews = virtual_service(load(BOOKINFO), "bookinfo", "reviews")
    host = "reviews.bookinfo.svc.cluster.local"
    assert reviews.hosts == (host,)
    assert reviews.gateways == ("mesh",)
    jason, split = reviews.http
    assert jason.name == "jason"
    assert jason.matches == (
        HttpMatch(headers=(("end-user", StringMatch(StringMatchKind.EXACT, "jason")),)),
    )
    assert [(d.host, d.subset, d.weight) for d in jason.destinations] == [(host, "v2", 100)]
    assert split.name == "split"
    assert split.matches == ()
    assert [(d.host, d.subset, d.weight) for d in split.destinations] == [
        (host, "v1", 80),
        (host, "v3", 20),
    ]
    assert split.timeout == timedelta(seconds=3)
    assert split.retries == Retries(2, timedelta(seconds=1), ("5xx", "connect-failure"))


def test_the_bookinfo_gateway_routes() -> None:
    mesh = load(BOOKINFO)
    assert [g.key for g in mesh.gateways_for((("istio", "ingressgateway"),))] == [
        "bookinfo/bookinfo-gateway"
    ]
    (edge,) = mesh.virtual_services_for_gateway("bookinfo/bookinfo-gateway")
    assert edge.name == "bookinfo"
    assert edge.hosts == ("*",)
    old, reviews, rest = edge.http
    assert old.redirect == Redirect(uri="/productpage")
    assert reviews.rewrite == Rewrite(uri="/")
    assert [(d.host, d.subset, d.port) for d in reviews.destinations] == [
        ("reviews.bookinfo.svc.cluster.local", "v1", 9080)
    ]
    assert rest.is_catch_all
    assert [(d.host, d.port) for d in rest.destinations] == [
        ("productpage.bookinfo.svc.cluster.local", 9080)
    ]


def test_hello_world_serves_three_replicas_through_the_gateway() -> None:
    mesh = load(HELLO)
    hello = mesh.service("hello.default.svc.cluster.local")
    assert hello is not None
    assert [(e.address, e.port) for e in hello.endpoints_for(8080)] == [
        ("127.0.0.1", 9101),
        ("127.0.0.1", 9102),
        ("127.0.0.1", 9103),
    ]
    (vs,) = mesh.virtual_services_for_gateway("default/hello-gateway")
    assert [(d.host, d.port) for d in vs.http[0].destinations] == [
        ("hello.default.svc.cluster.local", 8080)
    ]
    assert vs.http[0].timeout == timedelta(seconds=5)
    assert mesh.virtual_services_for_gateway("mesh") == ()


def test_both_examples_in_one_directory_still_validate(tmp_path: Path) -> None:
    for example in (BOOKINFO, HELLO):
        shutil.copytree(example, tmp_path / example.name)
    assert validate_directory(tmp_path) == []
    mesh = load(tmp_path)
    assert len(mesh.services) == 5
    assert [g.key for g in mesh.gateways] == ["bookinfo/bookinfo-gateway", "default/hello-gateway"]
