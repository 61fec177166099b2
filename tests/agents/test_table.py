"""The forwarding table of the shipped examples: exact decisions for real translations."""

from __future__ import annotations

import pytest

from agents.actions import (
    NO_EDITS,
    Fault,
    FaultAbort,
    Forward,
    HashPolicy,
    Redirect,
    RetryPolicy,
    WeightedCluster,
)
from agents.endpoints import Endpoint
from agents.table import ClusterEntry, ForwardingTable, ListenerEntry
from tests.agents.table_support import FakeBalancer, example_mesh, resources_of, table_of

REVIEWS_V1 = "outbound|9080|v1|reviews.bookinfo.svc.cluster.local"
REVIEWS_V2 = "outbound|9080|v2|reviews.bookinfo.svc.cluster.local"
REVIEWS_V3 = "outbound|9080|v3|reviews.bookinfo.svc.cluster.local"
RATINGS = "outbound|9080||ratings.bookinfo.svc.cluster.local"
PRODUCTPAGE = "outbound|9080||productpage.bookinfo.svc.cluster.local"
SIDECAR = "0.0.0.0_9080"
GATEWAY = "0.0.0.0_8080"

ISTIO_DEFAULT_RETRY = RetryPolicy(
    retry_on=frozenset(
        {"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes"}
    ),
    num_retries=2,
    retriable_status_codes=frozenset({503}),
)


@pytest.fixture(scope="module")
def sidecar() -> ForwardingTable:
    return table_of(resources_of(example_mesh("bookinfo")))


@pytest.fixture(scope="module")
def gateway() -> ForwardingTable:
    mesh = example_mesh("bookinfo")
    return table_of(resources_of(mesh, "gateway", (("istio", "ingressgateway"),)))


def test_bookinfo_sidecar_has_one_http_listener_and_nothing_ignored_or_pending(
    sidecar: ForwardingTable,
) -> None:
    assert sidecar.listeners == (ListenerEntry(SIDECAR, "0.0.0.0", 9080, "http", "9080", None),)
    assert sidecar.ignored == ()
    assert sidecar.pending == ()
    assert sorted(sidecar.clusters) == [
        "BlackHoleCluster",
        REVIEWS_V1,
        REVIEWS_V2,
        REVIEWS_V3,
        "outbound|9080||details.bookinfo.svc.cluster.local",
        PRODUCTPAGE,
        RATINGS,
        "outbound|9080||reviews.bookinfo.svc.cluster.local",
    ]


def test_jason_is_routed_to_reviews_v2(sidecar: ForwardingTable) -> None:
    action = sidecar.route(SIDECAR, "reviews:9080", "/reviews/0", "GET", {"end-user": "jason"}, "")
    assert action == Forward(
        clusters=(WeightedCluster(REVIEWS_V2),),
        cumulative_weights=(1,),
        timeout=None,
        retry=ISTIO_DEFAULT_RETRY,
    )


def test_everyone_else_is_split_80_20_with_the_rule_timeout_and_retries(
    sidecar: ForwardingTable,
) -> None:
    action = sidecar.route(SIDECAR, "reviews", "/reviews/0", "GET", {"end-user": "bob"}, "")
    assert action == Forward(
        clusters=(WeightedCluster(REVIEWS_V1, 80), WeightedCluster(REVIEWS_V3, 20)),
        cumulative_weights=(80, 100),
        timeout=3.0,
        retry=RetryPolicy(
            retry_on=frozenset({"5xx", "connect-failure"}), num_retries=2, per_try_timeout=1.0
        ),
    )


@pytest.mark.parametrize(
    "host",
    [
        "reviews",
        "reviews:9080",
        "REVIEWS.bookinfo",
        "reviews.bookinfo:9080",
        "reviews.bookinfo.svc",
        "reviews.bookinfo.svc.cluster.local:9080",
    ],
)
def test_every_name_of_the_service_finds_its_virtual_host(
    sidecar: ForwardingTable, host: str
) -> None:
    action = sidecar.route(SIDECAR, host, "/", "GET", {"end-user": "jason"}, "")
    assert isinstance(action, Forward)
    assert action.clusters == (WeightedCluster(REVIEWS_V2),)


@pytest.mark.parametrize("host", ["reviews:9081", "reviews.other", "", "unknown"])
def test_a_host_no_virtual_host_claims_gets_no_route(sidecar: ForwardingTable, host: str) -> None:
    assert sidecar.route(SIDECAR, host, "/", "GET", {}, "") is None


def test_an_unknown_listener_gets_no_route(sidecar: ForwardingTable) -> None:
    assert sidecar.route("0.0.0.0_1", "reviews", "/", "GET", {}, "") is None


def test_the_fault_header_aborts_ratings_with_503_for_everyone(sidecar: ForwardingTable) -> None:
    faulty = sidecar.route(SIDECAR, "ratings", "/ratings/0", "GET", {"x-test-fault": "abort"}, "")
    plain = sidecar.route(SIDECAR, "ratings", "/ratings/0", "GET", {"x-test-fault": "no"}, "")
    assert isinstance(faulty, Forward) and isinstance(plain, Forward)
    assert faulty.fault == Fault(abort=FaultAbort(503, 100.0))
    assert plain.fault is None
    assert faulty.clusters == plain.clusters == (WeightedCluster(RATINGS),)


def test_productpage_hashes_on_the_session_cookie_with_its_ttl(sidecar: ForwardingTable) -> None:
    action = sidecar.route(SIDECAR, "productpage", "/productpage", "GET", {}, "")
    assert isinstance(action, Forward)
    assert action.hash_policies == (HashPolicy("cookie", "session", cookie_ttl=60.0),)


def test_clusters_carry_endpoints_timeouts_and_circuit_breakers(sidecar: ForwardingTable) -> None:
    reviews = sidecar.cluster("outbound|9080||reviews.bookinfo.svc.cluster.local")
    ratings = sidecar.cluster(RATINGS)
    assert isinstance(reviews, ClusterEntry) and isinstance(ratings, ClusterEntry)
    assert reviews.endpoints == (
        Endpoint("127.0.0.1", 9211, 1, locality_weight=3),
        Endpoint("127.0.0.1", 9212, 1, locality_weight=3),
        Endpoint("127.0.0.1", 9213, 1, locality_weight=3),
    )
    assert reviews.kind == "eds"
    assert reviews.connect_timeout == 10.0
    assert isinstance(reviews.balancer, FakeBalancer)
    assert reviews.balancer.endpoints == reviews.endpoints
    assert reviews.lb == 1  # LEAST_REQUEST, as the fake parse_lb reports it
    assert reviews.outlier is not None and reviews.outlier.consecutive_5xx.value == 5
    assert (ratings.connect_timeout, ratings.max_connections, ratings.max_pending_requests) == (
        2.0,
        100,
        64,
    )
    assert (ratings.max_requests, ratings.max_retries, ratings.outlier) == (1024, 3, None)
    assert sidecar.cluster("nope") is None


def test_gateway_redirects_the_old_product_page(gateway: ForwardingTable) -> None:
    assert gateway.listeners == (
        ListenerEntry(GATEWAY, "0.0.0.0", 8080, "http", "http.8080", None, True),
    )
    action = gateway.route(GATEWAY, "shop.example.com", "/old-productpage", "GET", {}, "a=1")
    assert action == Redirect(status=301, path="/productpage")


def test_gateway_rewrites_the_reviews_prefix_and_defaults_to_productpage(
    gateway: ForwardingTable,
) -> None:
    reviews = gateway.route(GATEWAY, "anything", "/reviews/1", "GET", {}, "")
    other = gateway.route(GATEWAY, "anything:8080", "/static/app.css", "GET", {}, "")
    assert reviews == Forward(
        clusters=(WeightedCluster(REVIEWS_V1),),
        cumulative_weights=(1,),
        timeout=None,
        retry=ISTIO_DEFAULT_RETRY,
        prefix_rewrite="/",
        matched_prefix="/reviews",
    )
    assert isinstance(other, Forward)
    assert other.clusters == (WeightedCluster(PRODUCTPAGE),)
    assert other.request_headers == other.response_headers == NO_EDITS


def test_hello_world_builds_for_both_roles() -> None:
    mesh = example_mesh("hello-world")
    sidecar = table_of(resources_of(mesh))
    gateway = table_of(resources_of(mesh, "gateway", (("istio", "ingressgateway"),)))
    assert [entry.kind for entry in sidecar.listeners] == ["http"]
    assert [entry.kind for entry in gateway.listeners] == ["http"]
    assert sidecar.ignored == gateway.ignored == ()
    action = gateway.route(GATEWAY, "hello.example.com", "/", "GET", {}, "")
    assert isinstance(action, Forward)
    assert action.clusters == (WeightedCluster("outbound|8080||hello.default.svc.cluster.local"),)
    assert action.timeout == 5.0
