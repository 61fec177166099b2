"""Hand-written resources: match kinds the translator does not emit, NACKs, carry-over, pending."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from google.protobuf import text_format

from agents.actions import (
    DirectResponse,
    Fault,
    FaultDelay,
    Forward,
    HeaderEdits,
    HeaderValue,
    Mirror,
    Redirect,
    RetryPolicy,
)
from agents.endpoints import Endpoint, Locality
from agents.errors import ConfigRejected
from agents.table import ForwardingTable, build_table
from controlplane.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.agents.table_support import FakeBalancer, FakeLb, Resources, table_of

HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
    ".HttpConnectionManager"
)
CORS = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
FAULT = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

FILTERS = f"""
  http_filters {{ name: "envoy.filters.http.fault" typed_config {{ [{FAULT}] {{}} }} }}
  http_filters {{ name: "envoy.filters.http.router" typed_config {{ [{ROUTER}] {{}} }} }}
"""


def listener(manager: str = "", filters: str = FILTERS) -> Any:
    rds = "" if "route_config {" in manager else 'rds { route_config_name: "rc" }'
    text = f"""
    name: "l" address {{ socket_address {{ address: "127.0.0.1" port_value: 8000 }} }}
    filter_chains {{ filters {{
      name: "envoy.filters.network.http_connection_manager"
      typed_config {{ [{HCM}] {{
        stat_prefix: "l" {rds} {filters} {manager}
      }} }}
    }} }}
    """
    return text_format.Parse(text, listener_pb2.Listener())


def cluster(name: str, extra: str = "") -> Any:
    text = f"""
    name: "{name}" type: EDS connect_timeout {{ seconds: 1 }}
    eds_cluster_config {{ service_name: "{name}" }} {extra}
    """
    return text_format.Parse(text, cluster_pb2.Cluster())


def assignment(name: str, *ports: int) -> Any:
    endpoints = "".join(
        f"lb_endpoints {{ endpoint {{ address {{ socket_address {{"
        f' address: "10.0.0.1" port_value: {port} }} }} }} }}'
        for port in ports
    )
    text = f'cluster_name: "{name}" endpoints {{ {endpoints} }}'
    return text_format.Parse(text, endpoint_pb2.ClusterLoadAssignment())


def resources(routes: str, manager: str = "", filters: str = FILTERS, vhost: str = "") -> Resources:
    config = text_format.Parse(
        f"""name: "rc" {routes}"""
        if "virtual_hosts" in routes
        else f"""name: "rc" virtual_hosts {{ name: "v" domains: "*" {vhost} {routes} }}""",
        route_pb2.RouteConfiguration(),
    )
    return {
        LISTENER: {"l": listener(manager, filters)},
        ROUTE: {"rc": config},
        CLUSTER: {"a": cluster("a"), "b": cluster("b")},
        ENDPOINT: {"a": assignment("a", 1, 2), "b": assignment("b", 3)},
    }


def route(
    table: ForwardingTable,
    path: str = "/",
    headers: dict[str, str] | None = None,
    query: str = "",
    host: str = "h",
    method: str = "GET",
) -> Any:
    return table.route("l", host, path, method, headers or {}, query)


def name_of(action: Any) -> str | None:
    return action.clusters[0].name if isinstance(action, Forward) else None


def rejected(resources: Resources) -> str:
    with pytest.raises(ConfigRejected) as caught:
        table_of(resources)
    return str(caught.value)


TO_A = 'route { cluster: "a" }'
TO_B = 'route { cluster: "b" }'


@pytest.mark.parametrize(
    ("header", "values", "expected"),
    [
        ('suffix_match: ".com"', ["x.com", "x.org"], ["a", "b"]),
        ('contains_match: "mid"', ["amidst", "a"], ["a", "b"]),
        ("range_match { start: 10 end: 20 }", ["10", "19", "20", "x"], ["a", "a", "b", "b"]),
        ('string_match { exact: "Yes" ignore_case: true }', ["yES", "no"], ["a", "b"]),
        ('string_match { suffix: "z" } invert_match: true', ["abc", "xyz"], ["a", "b"]),
        ("present_match: false", ["x"], ["b"]),
        ('string_match { exact: "" } treat_missing_header_as_empty: true', ["", "x"], ["a", "b"]),
    ],
)
def test_header_matchers_the_translator_does_not_emit(
    header: str, values: list[str], expected: list[str]
) -> None:
    table = table_of(
        resources(
            f'routes {{ match {{ prefix: "/" headers {{ name: "X-H" {header} }} }} {TO_A} }}'
            f' routes {{ match {{ prefix: "/" }} {TO_B} }}'
        )
    )
    assert [name_of(route(table, headers={"x-h": v})) for v in values] == expected


def test_a_missing_header_is_empty_only_when_asked() -> None:
    matcher = 'string_match { exact: "" }'
    strict = table_of(
        resources(f'routes {{ match {{ prefix: "/" headers {{ name: "x" {matcher} }} }} {TO_A} }}')
    )
    lenient = table_of(
        resources(
            f'routes {{ match {{ prefix: "/" headers {{ name: "x" {matcher}'
            f" treat_missing_header_as_empty: true }} }} {TO_A} }}"
        )
    )
    assert route(strict) is None
    assert name_of(route(lenient)) == "a"


def test_path_separated_prefix_stops_at_segment_boundaries() -> None:
    table = table_of(
        resources(
            f'routes {{ match {{ path_separated_prefix: "/api" }} {TO_A} }}'
            f' routes {{ match {{ prefix: "/" }} {TO_B} }}'
        )
    )
    paths = ["/api", "/api/v1", "/apis", "/API"]
    assert [name_of(route(table, p)) for p in paths] == ["a", "a", "b", "b"]


def test_case_insensitive_exact_path_and_case_sensitive_prefix() -> None:
    table = table_of(
        resources(
            f'routes {{ match {{ path: "/Login" case_sensitive {{ value: false }} }} {TO_A} }}'
            f' routes {{ match {{ prefix: "/Static" }} {TO_A} }}'
            f' routes {{ match {{ prefix: "/" }} {TO_B} }}'
        )
    )
    paths = ["/login", "/LOGIN", "/login/x", "/Static/a", "/static/a"]
    assert [name_of(route(table, p)) for p in paths] == ["a", "a", "b", "a", "b"]


def test_query_parameter_presence_and_regex() -> None:
    table = table_of(
        resources(
            f'routes {{ match {{ prefix: "/" query_parameters {{ name: "debug"'
            f" present_match: true }} }} {TO_A} }}"
            f' routes {{ match {{ prefix: "/" query_parameters {{ name: "id"'
            f' string_match {{ safe_regex {{ regex: "[0-9]+" }} }} }} }} {TO_A} }}'
            f' routes {{ match {{ prefix: "/" }} {TO_B} }}'
        )
    )
    queries = ["debug", "debug=1&x", "id=12", "id=12a", "id=", "x=1"]
    assert [name_of(route(table, query=q)) for q in queries] == ["a", "a", "a", "b", "b", "b"]


def test_a_zero_runtime_fraction_never_matches_and_grpc_needs_its_content_type() -> None:
    table = table_of(
        resources(
            f'routes {{ match {{ prefix: "/" runtime_fraction {{ default_value {{'
            f" numerator: 0 }} }} }} {TO_A} }}"
            f' routes {{ match {{ prefix: "/" grpc {{}} }} {TO_A} }}'
            f' routes {{ match {{ prefix: "/" }} {TO_B} }}'
        )
    )
    assert [name_of(route(table)) for _ in range(20)] == ["b"] * 20
    assert name_of(route(table, headers={"content-type": "application/grpc+proto"})) == "a"


def test_direct_responses_carry_body_and_response_headers() -> None:
    table = table_of(
        resources(
            'routes { match { prefix: "/" } direct_response { status: 418 body {'
            ' inline_string: "teapot" } }'
            ' response_headers_to_add { header { key: "X-Route" value: "r" } } }',
            vhost='response_headers_to_add { header { key: "x-vhost" value: "v" }'
            " append_action: OVERWRITE_IF_EXISTS_OR_ADD }",
        )
    )
    assert route(table) == DirectResponse(
        418,
        b"teapot",
        HeaderEdits(add=(HeaderValue("x-route", "r"), HeaderValue("x-vhost", "v", False))),
    )


def test_header_edits_merge_route_then_virtual_host_then_configuration() -> None:
    routes = (
        'virtual_hosts { name: "v" domains: "*" routes { match { prefix: "/" }'
        ' route { cluster: "a" }'
        ' request_headers_to_add { header { key: "x-level" value: "route" } }'
        ' request_headers_to_remove: "x-r" }'
        ' request_headers_to_add { header { key: "x-level" value: "vhost" } }'
        ' request_headers_to_remove: "X-V" }'
        ' request_headers_to_add { header { key: "x-level" value: "config" } }'
        ' request_headers_to_remove: "x-r"'
    )
    action = route(table_of(resources(routes)))
    assert action.request_headers == HeaderEdits(
        add=tuple(HeaderValue("x-level", v) for v in ("route", "vhost", "config")),
        remove=("x-r", "x-v"),
    )
    specific = route(table_of(resources(routes + " most_specific_header_mutations_wins: true")))
    assert [h.value for h in specific.request_headers.add] == ["route", "config", "vhost"]


def test_virtual_host_retry_and_mirror_policies_apply_to_routes_without_their_own() -> None:
    table = table_of(
        resources(
            f'routes {{ match {{ prefix: "/a" }} {TO_A} }}'
            ' routes { match { prefix: "/" } route { cluster: "a" retry_policy {'
            ' retry_on: "5xx" } } }',
            vhost='retry_policy { retry_on: "gateway-error, reset" num_retries { value: 4 }'
            " retry_back_off { base_interval { nanos: 100000000 } } }"
            ' request_mirror_policies { cluster: "b" runtime_fraction {'
            " default_value { numerator: 5 denominator: TEN_THOUSAND } } }",
        )
    )
    inherited, own = route(table, "/a"), route(table, "/x")
    assert inherited.retry == RetryPolicy(frozenset({"gateway-error", "reset"}), 4, None, 0.1, 1.0)
    assert own.retry == RetryPolicy(frozenset({"5xx"}))
    assert inherited.mirrors == own.mirrors == (Mirror("b", 0.05),)


def test_wildcard_domains_prefer_exact_then_longest_suffix_then_prefix_then_any() -> None:
    hosts = "".join(
        f'virtual_hosts {{ name: "{name}" domains: "{domain}" routes {{ match {{ prefix: "/" }}'
        f" direct_response {{ status: {status} }} }} }}"
        for name, domain, status in [
            ("any", "*", 200),
            ("exact", "api.example.com", 201),
            ("short", "*.com", 202),
            ("long", "*.example.com", 203),
            ("prefix", "api.*", 204),
        ]
    )
    table = table_of(resources(hosts))
    hosts_seen = ["api.example.com", "www.example.com", "x.com", "api.org", "other", ".com"]
    assert [route(table, host=h).status for h in hosts_seen] == [201, 203, 202, 204, 200, 200]


def test_strip_any_host_port_drops_the_port_before_looking_up() -> None:
    hosts = (
        f'virtual_hosts {{ name: "v" domains: "svc" routes {{ match {{ prefix: "/" }} {TO_A} }} }}'
    )
    plain = table_of(resources(hosts))
    stripping = table_of(resources(hosts, manager="strip_any_host_port: true"))
    assert route(plain, host="svc:9999") is None
    assert name_of(route(stripping, host="svc:9999")) == "a"


def test_listener_fault_and_upgrades_apply_unless_a_route_says_otherwise() -> None:
    filters = f"""
      http_filters {{ name: "f" typed_config {{ [{FAULT}] {{
        delay {{ fixed_delay {{ seconds: 2 }} percentage {{ numerator: 30 }} }} }} }} }}
      http_filters {{ name: "r" typed_config {{ [{ROUTER}] {{}} }} }}
    """
    table = table_of(
        resources(
            'routes { match { prefix: "/off" } route { cluster: "a"'
            ' upgrade_configs { upgrade_type: "WebSocket" enabled { value: false }'
            " } }"
            ' typed_per_filter_config { key: "f" value {'
            " [type.googleapis.com/envoy.config.route.v3.FilterConfig] { disabled:"
            " true } } } }"
            f' routes {{ match {{ prefix: "/" }} {TO_A} }}',
            manager='upgrade_configs { upgrade_type: "websocket" }',
            filters=filters,
        )
    )
    assert route(table, "/x").fault == Fault(delay=FaultDelay(2.0, 30.0))
    assert route(table, "/x").upgrades == frozenset({"websocket"})
    assert route(table, "/off").fault is None
    assert route(table, "/off").upgrades == frozenset()
    assert table.ignored == ()


# NACKs


def test_a_route_to_an_unknown_cluster_is_rejected_naming_route_and_field() -> None:
    text = rejected(
        resources(
            'routes { match { prefix: "/" } route { weighted_clusters {'
            ' clusters { name: "a" weight { value: 1 } } clusters { name: "zz"'
            " weight { value: 1 } } } } }"
        )
    )
    assert text == (
        "RouteConfiguration rc:"
        " virtual_hosts[v].routes[0].route.weighted_clusters.clusters[1].name:"
        " unknown cluster 'zz'"
    )


def test_a_mirror_to_an_unknown_cluster_is_rejected() -> None:
    text = rejected(
        resources(
            'routes { match { prefix: "/" } route { cluster: "a"'
            ' request_mirror_policies { cluster: "m" } } }'
        )
    )
    assert text == (
        "RouteConfiguration rc:"
        " virtual_hosts[v].routes[0].route.request_mirror_policies[0].cluster:"
        " unknown cluster 'm'"
    )


def test_an_unsupported_http_filter_is_rejected_and_an_optional_one_ignored() -> None:
    assert cors_pb2.Cors.DESCRIPTOR.full_name in CORS
    cors = f'http_filters {{ name: "envoy.filters.http.cors" typed_config {{ [{CORS}] {{}} }} }}'
    text = rejected(
        resources(f'routes {{ match {{ prefix: "/" }} {TO_A} }}', filters=cors + FILTERS)
    )
    assert text == (
        "Listener l: filter_chains[0].filters[0].typed_config.http_filters[0]: HTTP filter"
        " envoy.filters.http.cors (envoy.extensions.filters.http.cors.v3.Cors) is not supported"
    )
    optional = cors.replace("typed_config", "is_optional: true typed_config")
    table = table_of(
        resources(f'routes {{ match {{ prefix: "/" }} {TO_A} }}', filters=optional + FILTERS)
    )
    assert table.ignored == (
        "Listener l: filter_chains[0].filters[0].typed_config.http_filters[0]:"
        " optional filter envoy.extensions.filters.http.cors.v3.Cors",
    )


def test_a_chain_without_the_router_last_is_rejected() -> None:
    only_fault = FILTERS.split("\n")[1]
    text = rejected(resources(f'routes {{ match {{ prefix: "/" }} {TO_A} }}', filters=only_fault))
    assert text == (
        "Listener l: filter_chains[0].filters[0].typed_config.http_filters:"
        " the last filter must be the router"
    )


@pytest.mark.parametrize(
    ("regex", "error"),
    [
        (
            "/items/[0-9",
            "regex '/items/[0-9' does not compile: unterminated character set at position 7",
        ),
        ("/(?=a)", "regex '/(?=a)': RE2 has no lookaround assertions"),
        ("/(a)\\\\1", "regex '/(a)\\\\1': RE2 has no backreferences"),
        ("/a++", "regex '/a++': RE2 has no possessive quantifiers"),
    ],
)
def test_a_path_regex_python_and_re2_disagree_on_is_rejected(regex: str, error: str) -> None:
    text = rejected(resources(f'routes {{ match {{ safe_regex {{ regex: "{regex}" }} }} {TO_A} }}'))
    assert text == f"RouteConfiguration rc: virtual_hosts[v].routes[0].match.safe_regex: {error}"


def test_re2_end_of_text_is_understood() -> None:
    table = table_of(
        resources(f'routes {{ match {{ safe_regex {{ regex: "/a\\\\z" }} }} {TO_A} }}')
    )
    assert name_of(route(table, "/a")) == "a"


def test_a_header_regex_that_does_not_compile_names_the_header_matcher() -> None:
    text = rejected(
        resources(
            'routes { match { prefix: "/" headers { name: "x" string_match {'
            ' safe_regex { regex: "(" } } } } route { cluster: "a" } }'
        )
    )
    assert text.startswith(
        "RouteConfiguration rc:"
        " virtual_hosts[v].routes[0].match.headers[0].string_match.safe_regex:"
        " regex '(' does not compile"
    )


def test_two_virtual_hosts_claiming_one_domain_are_rejected() -> None:
    hosts = "".join(
        f'virtual_hosts {{ name: "{n}" domains: "{d}" routes {{ match {{'
        f' prefix: "/" }} route {{ cluster: "a" }} }} }}'
        for n, d in (("one", "x.com"), ("two", "X.com"))
    )
    assert rejected(resources(hosts)) == (
        "RouteConfiguration rc: virtual_hosts[two].domains: domain 'X.com' is also claimed by"
        " virtual host 'one'"
    )


def test_subset_load_balancing_and_tls_are_rejected() -> None:
    subset = resources('routes { match { prefix: "/" } route { cluster: "a" metadata_match { } } }')
    assert rejected(subset) == (
        "RouteConfiguration rc: virtual_hosts[v].routes[0].route.metadata_match: not supported"
    )
    tls = resources(f'routes {{ match {{ prefix: "/" }} {TO_A} }}')
    tls[CLUSTER]["a"] = cluster("a", 'transport_socket { name: "tls" }')
    assert rejected(tls) == "Cluster a: transport_socket: not supported"


def test_an_lb_policy_the_balancers_cannot_apply_is_rejected_with_their_text() -> None:
    class Refusing(FakeLb):
        def parse_lb(self, cluster: Any) -> int:
            if cluster.name == "b":
                raise ConfigRejected(
                    f"Cluster {cluster.name}", "lb_policy", "MAGLEV is not supported"
                )
            return 0

    with pytest.raises(ConfigRejected, match=r"^Cluster b: lb_policy: MAGLEV is not supported$"):
        table_of(resources(f'routes {{ match {{ prefix: "/" }} {TO_A} }}'), lb=Refusing())


# Carry-over and pending


def test_an_unchanged_cluster_keeps_its_entry_and_balancer_and_a_changed_one_hands_over() -> None:
    first = table_of(resources(f'routes {{ match {{ prefix: "/" }} {TO_A} }}'))
    changed = resources(f'routes {{ match {{ prefix: "/" }} {TO_B} }}')
    changed[ENDPOINT]["b"] = assignment("b", 3, 4)
    second = table_of(changed, previous=first)
    a1, a2, b1, b2 = (
        first.clusters["a"],
        second.clusters["a"],
        first.clusters["b"],
        second.clusters["b"],
    )
    assert a2 is a1 and a2.balancer is a1.balancer
    assert b2 is not b1
    assert isinstance(b2.balancer, FakeBalancer)
    assert b2.balancer.previous is b1.balancer
    assert [e.port for e in b2.endpoints] == [3, 4]
    assert name_of(route(second)) == "b"


def test_a_changed_cluster_setting_makes_a_new_balancer_from_the_old() -> None:
    first = table_of(resources(f'routes {{ match {{ prefix: "/" }} {TO_A} }}'))
    again = resources(f'routes {{ match {{ prefix: "/" }} {TO_A} }}')
    again[CLUSTER]["a"] = cluster("a", "lb_policy: RANDOM")
    second = table_of(again, previous=first)
    assert second.clusters["a"] is not first.clusters["a"]
    assert second.clusters["a"].lb == 3
    assert second.clusters["a"].balancer.previous is first.clusters["a"].balancer  # type: ignore[attr-defined]


def test_what_is_not_received_yet_is_pending_not_rejected() -> None:
    missing = resources(f'routes {{ match {{ prefix: "/" }} {TO_A} }}')
    del missing[ROUTE]["rc"]
    del missing[ENDPOINT]["b"]
    table = table_of(missing)
    assert table.pending == (
        "Cluster b: ClusterLoadAssignment b",
        "Listener l: RouteConfiguration rc",
    )
    assert table.clusters["b"].endpoints == ()
    assert route(table) is None
    assert table.listeners[0].route_config == "rc"


def test_endpoint_weights_localities_priorities_and_health_are_kept() -> None:
    text = """
    cluster_name: "a"
    endpoints {
      locality { region: "r" zone: "z" }
      load_balancing_weight { value: 7 }
      priority: 1
      lb_endpoints {
        endpoint { address { socket_address { address: "10.0.0.9" port_value: 80 } } }
        load_balancing_weight { value: 3 }
        health_status: DRAINING
      }
      lb_endpoints {
        endpoint { address { socket_address { address: "10.0.0.8" port_value: 80 } } }
        health_status: DEGRADED
      }
    }
    """
    given = resources(f'routes {{ match {{ prefix: "/" }} {TO_A} }}')
    given[ENDPOINT]["a"] = text_format.Parse(text, endpoint_pb2.ClusterLoadAssignment())
    table = build_table(given, versions={CLUSTER: "3", LISTENER: "1"}, lb=FakeLb().hooks)
    assert table.version == "Listener=1,Cluster=3"
    zone = Locality("r", "z")
    assert table.clusters["a"].endpoints == (
        Endpoint("10.0.0.9", 80, 3, zone, 7, 1, healthy=False),
        Endpoint("10.0.0.8", 80, 1, zone, 7, 1, healthy=True),
    )


def test_an_inline_route_configuration_routes_and_is_named_by_its_listener_when_wrong() -> None:
    inline = (
        'route_config { name: "inline" virtual_hosts { name: "v" domains: "*"'
        f' routes {{ match {{ prefix: "/" }} {TO_B} }} }} }}'
    )
    given = resources(f'routes {{ match {{ prefix: "/" }} {TO_A} }}')
    given[LISTENER]["l"] = listener(inline)
    table = table_of(given)
    assert table.listeners[0].route_config == "inline"
    assert name_of(route(table)) == "b"
    given[LISTENER]["l"] = listener(inline.replace('cluster: "b"', 'cluster: "nope"'))
    assert rejected(given) == (
        "Listener l filter_chains[0].filters[0].typed_config.route_config:"
        " virtual_hosts[v].routes[0].route.cluster: unknown cluster 'nope'"
    )


def test_an_unchanged_route_configuration_is_reused_with_its_ignored_lines() -> None:
    routes = (
        f'routes {{ match {{ prefix: "/" }} {TO_A} per_request_buffer_limit_bytes {{ value: 1 }} }}'
    )
    first = table_of(resources(routes))
    second = table_of(resources(routes), previous=first)
    assert second.routers["l"] is first.routers["l"]
    assert (
        second.ignored
        == first.ignored
        == (
            "RouteConfiguration rc: virtual_hosts[v].routes[0].per_request_buffer_limit_bytes:"
            " not supported, ignored",
        )
    )


def test_a_reused_route_configuration_still_needs_its_clusters() -> None:
    routes = f'routes {{ match {{ prefix: "/" }} {TO_A} }}'
    first = table_of(resources(routes))
    gone = resources(routes)
    del gone[CLUSTER]["a"]
    with pytest.raises(ConfigRejected, match=r"routes\[0\]\.route\.cluster: unknown cluster 'a'"):
        table_of(gone, previous=first)


def test_a_reused_cluster_keeps_its_pending_and_ignored_lines() -> None:
    given = resources(f'routes {{ match {{ prefix: "/" }} {TO_A} }}')
    given[CLUSTER]["b"] = cluster("b", "health_checks { timeout { seconds: 1 } }")
    del given[ENDPOINT]["b"]
    first = table_of(given)
    second = table_of(given, previous=first)
    assert second.clusters["b"] is first.clusters["b"]
    assert second.pending == first.pending == ("Cluster b: ClusterLoadAssignment b",)
    assert second.ignored == first.ignored == ("Cluster b: health_checks: not supported, ignored",)


def test_a_prefix_rewrite_knows_the_prefix_it_replaces_and_needs_one() -> None:
    table = table_of(
        resources(
            'routes { match { path: "/old" } redirect { prefix_rewrite: "/new" } }'
            ' routes { match { prefix: "/v1" } route { cluster: "a" prefix_rewrite: "/v2" } }'
        )
    )
    assert route(table, "/old") == Redirect(prefix_rewrite="/new", matched_prefix="/old")
    assert route(table, "/v1/x").matched_prefix == "/v1"
    text = rejected(
        resources(
            'routes { match { safe_regex { regex: "/r.*" } }'
            ' route { cluster: "a" prefix_rewrite: "/" } }'
        )
    )
    assert text == (
        "RouteConfiguration rc: virtual_hosts[v].routes[0].route.prefix_rewrite:"
        " needs a prefix, path or path_separated_prefix match"
    )


def test_a_route_configuration_no_listener_uses_yet_is_checked_too() -> None:
    given = resources(f'routes {{ match {{ prefix: "/" }} {TO_A} }}')
    spare = text_format.Parse(
        'name: "spare" virtual_hosts { name: "s" domains: "*"'
        ' routes { match { prefix: "/" } route { cluster: "gone" } } }',
        route_pb2.RouteConfiguration(),
    )
    given[ROUTE]["spare"] = spare
    assert rejected(given) == (
        "RouteConfiguration spare: virtual_hosts[s].routes[0].route.cluster: unknown cluster 'gone'"
    )
