"""Route matching and actions on the kitchen-sink translation: every match kind and action."""

from __future__ import annotations

import pytest

from agents.actions import (
    Fault,
    FaultAbort,
    Forward,
    HashPolicy,
    HeaderEdits,
    HeaderValue,
    Mirror,
    Redirect,
    RetryPolicy,
    WeightedCluster,
)
from agents.table import ForwardingTable, pick_cluster
from tests.agents.table_support import resources_of, table_of
from tests.translate.support import kitchen_sink_mesh

WEB = "0.0.0.0_80"
HOST = "web.shop"
CANARY = "outbound|80|canary|web.shop.svc.cluster.local"
STABLE = "outbound|80|stable|web.shop.svc.cluster.local"
LEGACY = "outbound|8080||legacy.shop.svc.cluster.local"
API_QUERY = "version=v2&x=1"


@pytest.fixture(scope="module")
def table() -> ForwardingTable:
    return table_of(resources_of(kitchen_sink_mesh()))


def test_an_exact_path_redirects_with_scheme_host_port_path_and_code(
    table: ForwardingTable,
) -> None:
    assert table.route(WEB, HOST, "/old", "GET", {}, "") == Redirect(
        status=308, scheme="https", host="new.example.com", port=8443, path="/new"
    )
    assert table.route(WEB, HOST, "/old/more", "GET", {}, "") != table.route(
        WEB, HOST, "/old", "GET", {}, ""
    )


def test_the_api_route_splits_rewrites_retries_mirrors_and_hashes(table: ForwardingTable) -> None:
    action = table.route(WEB, HOST, "/api/items", "GET", {}, API_QUERY)
    assert action == Forward(
        clusters=(
            WeightedCluster(
                CANARY,
                90,
                request_headers=HeaderEdits(add=(HeaderValue("x-track", "canary", False),)),
            ),
            WeightedCluster(STABLE, 10, response_headers=HeaderEdits(remove=("x-internal",))),
        ),
        cumulative_weights=(90, 100),
        timeout=5.0,
        retry=RetryPolicy(
            retry_on=frozenset({"5xx", "reset", "retriable-status-codes"}),
            num_retries=3,
            per_try_timeout=2.0,
            retriable_status_codes=frozenset({503}),
        ),
        prefix_rewrite="/",
        matched_prefix="/api",
        host_rewrite="api.internal",
        hash_policies=(HashPolicy("cookie", "session", cookie_ttl=3600.0, cookie_path="/"),),
        mirrors=(Mirror(LEGACY, 25.0),),
    )


def test_the_api_prefix_ignores_case_as_configured(table: ForwardingTable) -> None:
    action = table.route(WEB, HOST, "/API/Items", "GET", {}, API_QUERY)
    assert isinstance(action, Forward) and action.host_rewrite == "api.internal"


@pytest.mark.parametrize(
    ("method", "host", "query", "headers"),
    [
        ("POST", HOST, API_QUERY, {}),
        ("GET", HOST, "version=v3", {}),
        ("GET", HOST, "x=1", {}),
        ("GET", HOST, "x=1&version", {}),
        ("GET", HOST, API_QUERY, {":scheme": "https"}),
    ],
    ids=["method", "query-value", "query-missing", "query-no-value", "scheme"],
)
def test_the_api_route_needs_method_query_authority_and_scheme(
    table: ForwardingTable, method: str, host: str, query: str, headers: dict[str, str]
) -> None:
    action = table.route(WEB, host, "/api/items", method, headers, query)
    assert isinstance(action, Forward)
    assert action.clusters == (WeightedCluster("outbound|80||web.shop.svc.cluster.local"),)


def test_the_first_query_value_is_the_one_matched(table: ForwardingTable) -> None:
    first = table.route(WEB, HOST, "/api", "GET", {}, "version=v2&version=v3")
    second = table.route(WEB, HOST, "/api", "GET", {}, "version=v3&version=v2")
    assert isinstance(first, Forward) and first.host_rewrite == "api.internal"
    assert isinstance(second, Forward) and second.host_rewrite is None


def test_the_items_regex_route_rewrites_by_regex_and_injects_aborts(
    table: ForwardingTable,
) -> None:
    headers = {"x-env": "prod", "x-canary": "false"}
    action = table.route(WEB, HOST, "/items/42", "GET", headers, "")
    assert isinstance(action, Forward)
    assert action.clusters == (WeightedCluster(STABLE),)
    assert action.fault == Fault(abort=FaultAbort(503, 50.0))
    assert action.hash_policies == (HashPolicy("source_ip"),)
    assert action.regex_rewrite is not None
    pattern, substitution = action.regex_rewrite
    assert pattern.sub(substitution, "/items/42") == "/item"


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/items/42x", {"x-env": "prod", "x-canary": "no"}),
        ("/items/", {"x-env": "prod", "x-canary": "no"}),
        ("/items/42", {"x-env": "production", "x-canary": "no"}),
        ("/items/42", {"x-canary": "no"}),
        ("/items/42", {"x-env": "prod", "x-canary": "no", "x-debug": ""}),
        ("/items/42", {"x-env": "prod", "x-canary": "true"}),
        ("/items/42", {"x-env": "prod"}),
    ],
    ids=[
        "regex-is-full-match",
        "regex-no-digits",
        "header-regex-full",
        "header-missing",
        "without-header-present",
        "without-header-value",
        "inverted-value-header-missing",
    ],
)
def test_the_items_route_needs_its_regexes_and_its_header_conditions_as_envoy_reads_them(
    table: ForwardingTable, path: str, headers: dict[str, str]
) -> None:
    action = table.route(WEB, HOST, path, "GET", headers, "")
    assert isinstance(action, Forward)
    assert action.fault is None


def test_a_destination_that_names_no_service_goes_to_the_black_hole(
    table: ForwardingTable,
) -> None:
    action = table.route(WEB, HOST, "/ghost/x", "GET", {}, "")
    assert isinstance(action, Forward)
    assert action.clusters == (WeightedCluster("BlackHoleCluster"),)


def test_the_catch_all_merges_route_and_destination_header_edits_without_retries(
    table: ForwardingTable,
) -> None:
    action = table.route(WEB, HOST, "/", "DELETE", {}, "")
    assert action == Forward(
        clusters=(WeightedCluster("outbound|80||web.shop.svc.cluster.local"),),
        cumulative_weights=(1,),
        timeout=None,
        retry=None,
        request_headers=HeaderEdits(
            add=(HeaderValue("x-mesh", "pilotfish", False), HeaderValue("x-hop", "1")),
            remove=("x-secret",),
        ),
        response_headers=HeaderEdits(add=(HeaderValue("x-served-by", "web"),)),
    )


def test_the_grpc_port_delays_but_leaves_grpc_aborts_out_and_says_so(
    table: ForwardingTable,
) -> None:
    action = table.route("0.0.0.0_9090", "web.shop:9090", "/pkg.Svc/Call", "POST", {}, "")
    assert isinstance(action, Forward)
    assert action.fault is not None
    assert action.fault.abort is None
    assert action.fault.delay is not None
    assert (action.fault.delay.seconds, action.fault.delay.percent) == (0.5, 0.5)
    assert (
        "RouteConfiguration 9090: virtual_hosts[web.shop.svc.cluster.local:9090].routes[3]"
        ".typed_per_filter_config[envoy.filters.http.fault].abort.grpc_status:"
        " only HTTP status aborts, ignored"
    ) in table.ignored


def test_tcp_listeners_forward_by_cumulative_weight(table: ForwardingTable) -> None:
    (cache,) = [entry for entry in table.listeners if entry.name == "0.0.0.0_6379"]
    assert cache.kind == "tcp" and cache.route_config is None
    assert cache.tcp == Forward(
        clusters=(
            WeightedCluster("outbound|6379|primary|cache.shop.svc.cluster.local", 80),
            WeightedCluster("outbound|6379|replica|cache.shop.svc.cluster.local", 20),
        ),
        cumulative_weights=(80, 100),
        timeout=None,
        idle_timeout=3600.0,
    )
    assert table.route(cache.name, "cache", "/", "GET", {}, "") is None


def test_pick_cluster_bisects_the_cumulative_weights(table: ForwardingTable) -> None:
    (cache,) = [entry for entry in table.listeners if entry.name == "0.0.0.0_6379"]
    assert cache.tcp is not None
    picks = [pick_cluster(cache.tcp, lambda d=draw: d).weight for draw in (0.0, 0.79, 0.8, 0.999)]
    assert picks == [80, 80, 20, 20]


def test_what_the_agent_cannot_do_is_ignored_counted_and_named(table: ForwardingTable) -> None:
    assert sorted(table.ignored) == sorted(
        [
            "Cluster outbound|443||vault.example.com: type: ORIGINAL_DST:"
            " the agent sees no original destination; requests get 503",
            "Cluster outbound|6379|primary|cache.shop.svc.cluster.local: type: ORIGINAL_DST:"
            " the agent sees no original destination; requests get 503",
            "Cluster outbound|6379||cache.shop.svc.cluster.local: type: ORIGINAL_DST:"
            " the agent sees no original destination; requests get 503",
            *(
                f"Cluster {name}: typed_extension_protocol_options"
                "[envoy.extensions.upstreams.http.v3.HttpProtocolOptions]:"
                " upstream HTTP/2: the agent speaks HTTP/1.1 upstream"
                for name in (
                    "outbound|8080|none|legacy.shop.svc.cluster.local",
                    LEGACY,
                    "outbound|9090|canary|web.shop.svc.cluster.local",
                    "outbound|9090|stable|web.shop.svc.cluster.local",
                    "outbound|9090||web.shop.svc.cluster.local",
                )
            ),
            "RouteConfiguration 9090: virtual_hosts[web.shop.svc.cluster.local:9090].routes[3]"
            ".typed_per_filter_config[envoy.filters.http.fault].abort.grpc_status:"
            " only HTTP status aborts, ignored",
        ]
    )
    assert table.pending == ()


def test_dns_clusters_keep_host_names_for_connect_time_resolution(
    table: ForwardingTable,
) -> None:
    legacy = table.cluster(LEGACY)
    assert legacy is not None
    assert legacy.kind == "logical_dns"
    assert [(e.address, e.port) for e in legacy.endpoints] == [("legacy-a.example.com", 8080)]


def test_cluster_pool_settings_come_from_the_destination_rule(table: ForwardingTable) -> None:
    web = table.cluster("outbound|80||web.shop.svc.cluster.local")
    assert web is not None
    assert (web.connect_timeout, web.max_connections, web.max_pending_requests) == (3.0, 100, 10)
    assert (web.max_requests, web.max_retries) == (1000, 3)
    assert (web.idle_timeout, web.max_requests_per_connection) == (60.0, 5)


def test_the_gateway_serves_its_hosts_by_wildcard_server_names() -> None:
    gateway = table_of(resources_of(kitchen_sink_mesh(), "gateway", (("app", "edge"),)))
    for host in ("www.example.com", "shop.example.com:80"):
        action = gateway.route("0.0.0.0_80", host, "/", "GET", {}, "")
        assert isinstance(action, Forward)
        assert action.clusters == (WeightedCluster("outbound|80||web.shop.svc.cluster.local"),)
    assert gateway.route("0.0.0.0_80", "evil.example.org", "/", "GET", {}, "") is None
    assert [entry.name for entry in gateway.listeners] == [
        "0.0.0.0_443",
        "0.0.0.0_80",
        "0.0.0.0_8081",
        "0.0.0.0_9000",
    ]


def test_an_https_redirect_gateway_server_redirects_to_https() -> None:
    gateway = table_of(resources_of(kitchen_sink_mesh(), "gateway", (("app", "edge"),)))
    action = gateway.route("0.0.0.0_8081", "secure.example.com", "/a?b=c", "GET", {}, "")
    assert action == Redirect(status=301, scheme="https")
    assert gateway.route("0.0.0.0_8081", "other.example.com", "/", "GET", {}, "") is None
