"""HTTP routes: matches, destinations and every action setting."""

from __future__ import annotations

from datetime import timedelta

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2

from controlplane.model import (
    Abort,
    ConsistentHash,
    Delay,
    DestinationPolicy,
    Endpoint,
    Fault,
    HeaderOperations,
    HttpMatch,
    HttpRoute,
    LoadBalancer,
    LoadBalancerKind,
    Mesh,
    Protocol,
    Redirect,
    Retries,
    Rewrite,
    RouteDestination,
    Service,
    ServicePort,
    Subset,
    TrafficPolicy,
)
from controlplane.translate import BLACKHOLE_CLUSTER
from controlplane.translate.protos import Message
from controlplane.translate.routes import RouteContext, build_routes, default_route
from tests.translate.support import REVIEWS, exact, http_service, mesh_of, prefix, regex, unpack

Route = route_components_pb2.Route
RouteAction = route_components_pb2.RouteAction
HeaderMatcher = route_components_pb2.HeaderMatcher
HeaderValueOption = base_pb2.HeaderValueOption

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
MULTI = "multi.default.svc.cluster.local"


def seconds(value: float) -> Message:
    result = duration_pb2.Duration()
    result.FromTimedelta(timedelta(seconds=value))
    return result


def mesh(hashing: ConsistentHash | None = None) -> Mesh:
    reviews = http_service("reviews", (Endpoint("10.0.0.1", 9080),))
    multi = Service(
        host=MULTI,
        namespace="default",
        name="multi",
        ports=(ServicePort("http", 9080, Protocol.HTTP), ServicePort("admin", 9090, Protocol.HTTP)),
        endpoints=(),
    )
    policy = TrafficPolicy()
    if hashing is not None:
        policy = TrafficPolicy(
            load_balancer=LoadBalancer(LoadBalancerKind.CONSISTENT_HASH, hashing)
        )
    subsets = (Subset("v1", (("version", "v1"),)), Subset("v2", (("version", "v2"),)))
    return mesh_of(
        reviews,
        multi,
        destination_policies=(DestinationPolicy(REVIEWS, "default", "reviews", policy, subsets),),
    )


def routes(
    rule: HttpRoute,
    *,
    on: Mesh | None = None,
    port: int = 9080,
    gateways: tuple[str, ...] = ("mesh",),
    infer_port: bool = True,
) -> list[Message]:
    context = RouteContext(on or mesh(), port, gateways, infer_port)
    return build_routes(context, rule)


def only(rule: HttpRoute, **kwargs: object) -> Message:
    [route] = routes(rule, **kwargs)  # type: ignore[arg-type]
    return route


def to_reviews(**kwargs: object) -> HttpRoute:
    return HttpRoute(destinations=(RouteDestination(REVIEWS),), **kwargs)  # type: ignore[arg-type]


# Matches


def test_a_rule_without_matches_is_one_catch_all_route() -> None:
    route = only(to_reviews())
    assert route.match == route_components_pb2.RouteMatch(prefix="/")


def test_each_match_becomes_one_route_in_the_order_written() -> None:
    rule = HttpRoute(
        name="pages",
        matches=(
            HttpMatch(name="exact", uri=exact("/productpage")),
            HttpMatch(uri=prefix("/static")),
            HttpMatch(name="re", uri=regex("/api/v[0-9]+/.*")),
        ),
        destinations=(RouteDestination(REVIEWS),),
    )
    built = routes(rule)
    assert [r.name for r in built] == ["pages.exact", "pages", "pages.re"]
    assert [r.match for r in built] == [
        route_components_pb2.RouteMatch(path="/productpage"),
        route_components_pb2.RouteMatch(prefix="/static"),
        route_components_pb2.RouteMatch(safe_regex=regex_pb2.RegexMatcher(regex="/api/v[0-9]+/.*")),
    ]


def test_ignore_uri_case_makes_the_match_case_insensitive() -> None:
    route = only(
        HttpRoute(
            matches=(HttpMatch(uri=prefix("/Api"), ignore_uri_case=True),),
            destinations=(RouteDestination(REVIEWS),),
        )
    )
    assert route.match.prefix == "/Api"
    assert route.match.HasField("case_sensitive")
    assert route.match.case_sensitive.value is False


def test_scheme_method_and_authority_are_pseudo_header_matches() -> None:
    match = HttpMatch(scheme=exact("https"), method=exact("POST"), authority=prefix("shop."))
    route = only(HttpRoute(matches=(match,), destinations=(RouteDestination(REVIEWS),)))
    assert list(route.match.headers) == [
        HeaderMatcher(name=":scheme", string_match=string_pb2.StringMatcher(exact="https")),
        HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact="POST")),
        HeaderMatcher(name=":authority", string_match=string_pb2.StringMatcher(prefix="shop.")),
    ]
    assert route.match.prefix == "/"


def test_headers_match_by_exact_prefix_and_regex_string_matchers() -> None:
    match = HttpMatch(
        headers=(("end-user", exact("jason")), ("x-v", prefix("v2")), ("x-r", regex("a|b")))
    )
    route = only(HttpRoute(matches=(match,), destinations=(RouteDestination(REVIEWS),)))
    assert list(route.match.headers) == [
        HeaderMatcher(name="end-user", string_match=string_pb2.StringMatcher(exact="jason")),
        HeaderMatcher(name="x-v", string_match=string_pb2.StringMatcher(prefix="v2")),
        HeaderMatcher(
            name="x-r",
            string_match=string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex="a|b")),
        ),
    ]


def test_without_headers_inverts_the_match_and_a_bare_one_requires_absence() -> None:
    match = HttpMatch(without_headers=(("x-debug", None), ("x-env", exact("test"))))
    route = only(HttpRoute(matches=(match,), destinations=(RouteDestination(REVIEWS),)))
    assert list(route.match.headers) == [
        HeaderMatcher(name="x-debug", present_match=True, invert_match=True),
        HeaderMatcher(
            name="x-env", string_match=string_pb2.StringMatcher(exact="test"), invert_match=True
        ),
    ]


def test_query_parameters_match_with_string_matchers() -> None:
    match = HttpMatch(query_params=(("v", exact("2")), ("id", regex("[0-9]+"))))
    route = only(HttpRoute(matches=(match,), destinations=(RouteDestination(REVIEWS),)))
    assert list(route.match.query_parameters) == [
        route_components_pb2.QueryParameterMatcher(
            name="v", string_match=string_pb2.StringMatcher(exact="2")
        ),
        route_components_pb2.QueryParameterMatcher(
            name="id",
            string_match=string_pb2.StringMatcher(
                safe_regex=regex_pb2.RegexMatcher(regex="[0-9]+")
            ),
        ),
    ]


def test_a_match_for_another_port_is_left_out_of_this_ports_routes() -> None:
    rule = HttpRoute(
        matches=(HttpMatch(uri=prefix("/a"), port=9090), HttpMatch(uri=prefix("/b"), port=9080)),
        destinations=(RouteDestination(REVIEWS),),
    )
    assert [r.match.prefix for r in routes(rule, port=9080)] == ["/b"]
    assert [r.match.prefix for r in routes(rule, port=9090)] == ["/a"]
    assert routes(rule, port=80) == []


def test_a_match_for_other_gateways_is_left_out() -> None:
    rule = HttpRoute(
        matches=(
            HttpMatch(uri=prefix("/edge"), gateways=("default/edge",)),
            HttpMatch(uri=prefix("/mesh"), gateways=("mesh",)),
            HttpMatch(uri=prefix("/all")),
        ),
        destinations=(RouteDestination(REVIEWS),),
    )
    assert [r.match.prefix for r in routes(rule)] == ["/mesh", "/all"]
    assert [r.match.prefix for r in routes(rule, gateways=("default/edge",))] == ["/edge", "/all"]


# Destinations


def test_a_single_destination_is_a_cluster_with_the_port_of_a_one_port_service() -> None:
    route = only(to_reviews())
    assert route.route.cluster == f"outbound|9080||{REVIEWS}"
    assert not route.route.HasField("weighted_clusters")


def test_a_destination_subset_names_the_subset_cluster() -> None:
    route = only(HttpRoute(destinations=(RouteDestination(REVIEWS, subset="v2"),)))
    assert route.route.cluster == f"outbound|9080|v2|{REVIEWS}"


def test_without_a_port_a_multi_port_service_takes_the_listener_port() -> None:
    rule = HttpRoute(destinations=(RouteDestination(MULTI),))
    assert only(rule, port=9090).route.cluster == f"outbound|9090||{MULTI}"
    assert only(rule, port=9080).route.cluster == f"outbound|9080||{MULTI}"


def test_without_a_port_a_gateway_cannot_infer_one_for_a_multi_port_service() -> None:
    rule = HttpRoute(destinations=(RouteDestination(MULTI),))
    assert only(rule, port=9090, infer_port=False).route.cluster == BLACKHOLE_CLUSTER
    explicit = HttpRoute(destinations=(RouteDestination(MULTI, port=9090),))
    assert only(explicit, port=80, infer_port=False).route.cluster == f"outbound|9090||{MULTI}"


@pytest.mark.parametrize(
    "destination",
    [
        RouteDestination("ghost.default.svc.cluster.local"),
        RouteDestination(REVIEWS, port=1234),
        RouteDestination(REVIEWS, subset="v9"),
        RouteDestination(MULTI, subset="v1", port=9080),
    ],
    ids=["unknown host", "unknown port", "unknown subset", "no subsets"],
)
def test_a_destination_naming_no_cluster_goes_to_the_black_hole(
    destination: RouteDestination,
) -> None:
    assert only(HttpRoute(destinations=(destination,))).route.cluster == BLACKHOLE_CLUSTER


def test_several_destinations_are_weighted_clusters_with_the_weights_given() -> None:
    rule = HttpRoute(
        destinations=(
            RouteDestination(REVIEWS, subset="v1", weight=75),
            RouteDestination(REVIEWS, subset="v2", weight=25),
        )
    )
    action = only(rule).route
    assert not action.cluster
    assert [(c.name, c.weight.value) for c in action.weighted_clusters.clusters] == [
        (f"outbound|9080|v1|{REVIEWS}", 75),
        (f"outbound|9080|v2|{REVIEWS}", 25),
    ]


def test_relative_weights_are_given_as_written_and_envoy_sums_them() -> None:
    rule = HttpRoute(
        destinations=(
            RouteDestination(REVIEWS, subset="v1", weight=1),
            RouteDestination(REVIEWS, subset="v2", weight=3),
            RouteDestination(REVIEWS, subset="v3", weight=0),
        )
    )
    weighted = only(rule).route.weighted_clusters
    assert [(c.name, c.weight.value) for c in weighted.clusters] == [
        (f"outbound|9080|v1|{REVIEWS}", 1),
        (f"outbound|9080|v2|{REVIEWS}", 3),
    ]
    assert not weighted.HasField("total_weight")


def test_zero_weight_destinations_are_dropped_and_one_left_is_a_plain_cluster() -> None:
    rule = HttpRoute(
        destinations=(
            RouteDestination(REVIEWS, subset="v1", weight=100),
            RouteDestination(REVIEWS, subset="v2", weight=0),
        )
    )
    action = only(rule).route
    assert action.cluster == f"outbound|9080|v1|{REVIEWS}"
    assert not action.HasField("weighted_clusters")


# Timeouts and retries


def test_the_default_timeout_is_zero_which_disables_it() -> None:
    action = only(to_reviews()).route
    assert action.HasField("timeout")
    assert action.timeout == seconds(0)


def test_the_rule_timeout_is_the_route_timeout() -> None:
    assert only(to_reviews(timeout=timedelta(seconds=3))).route.timeout == seconds(3)


def test_without_retries_istios_default_retry_policy_applies() -> None:
    policy = only(to_reviews()).route.retry_policy
    assert policy.retry_on == DEFAULT_RETRY_ON
    assert policy.num_retries.value == 2
    assert list(policy.retriable_status_codes) == [503]
    assert not policy.HasField("per_try_timeout")
    assert [p.name for p in policy.retry_host_predicate] == [
        "envoy.retry_host_predicates.previous_hosts"
    ]
    assert policy.host_selection_retry_max_attempts == 5


def test_retries_set_attempts_per_try_timeout_and_conditions() -> None:
    retries = Retries(4, timedelta(milliseconds=1500), ("gateway-error", "connect-failure"))
    policy = only(to_reviews(retries=retries)).route.retry_policy
    assert policy.num_retries.value == 4
    assert policy.per_try_timeout == seconds(1.5)
    assert policy.retry_on == "gateway-error,connect-failure"
    assert list(policy.retriable_status_codes) == []


def test_numeric_retry_conditions_become_retriable_status_codes() -> None:
    retries = Retries(2, retry_on=("5xx", "503", "429"))
    policy = only(to_reviews(retries=retries)).route.retry_policy
    assert policy.retry_on == "5xx,retriable-status-codes"
    assert list(policy.retriable_status_codes) == [503, 429]


def test_retries_without_conditions_use_the_default_conditions() -> None:
    policy = only(to_reviews(retries=Retries(5))).route.retry_policy
    assert policy.num_retries.value == 5
    assert policy.retry_on == DEFAULT_RETRY_ON
    assert list(policy.retriable_status_codes) == [503]


def test_zero_attempts_disables_retries() -> None:
    assert not only(to_reviews(retries=Retries(0))).route.HasField("retry_policy")


# Rewrites and redirects


def test_a_uri_rewrite_is_a_prefix_rewrite_and_the_authority_a_host_rewrite() -> None:
    rule = HttpRoute(
        matches=(HttpMatch(uri=prefix("/v1/reviews")),),
        destinations=(RouteDestination(REVIEWS),),
        rewrite=Rewrite(uri="/reviews", authority="reviews.internal"),
    )
    action = only(rule).route
    assert action.prefix_rewrite == "/reviews"
    assert action.host_rewrite_literal == "reviews.internal"
    assert not action.HasField("regex_rewrite")


def test_a_uri_rewrite_after_a_regex_match_rewrites_the_matched_path() -> None:
    rule = HttpRoute(
        matches=(HttpMatch(uri=regex("/items/[0-9]+")),),
        destinations=(RouteDestination(REVIEWS),),
        rewrite=Rewrite(uri="/item"),
    )
    action = only(rule).route
    assert action.regex_rewrite == regex_pb2.RegexMatchAndSubstitute(
        pattern=regex_pb2.RegexMatcher(regex="/items/[0-9]+"), substitution="/item"
    )
    assert action.prefix_rewrite == ""


def test_an_authority_only_rewrite_leaves_the_path() -> None:
    rule = to_reviews(rewrite=Rewrite(authority="example.com"))
    action = only(rule).route
    assert action.host_rewrite_literal == "example.com"
    assert action.prefix_rewrite == ""


def test_a_redirect_replaces_the_route_action() -> None:
    rule = HttpRoute(
        matches=(HttpMatch(uri=exact("/old")),),
        redirect=Redirect(uri="/new", authority="new.example.com", port=8443, scheme="https"),
    )
    route = only(rule)
    assert not route.HasField("route")
    assert route.redirect == route_components_pb2.RedirectAction(
        path_redirect="/new",
        host_redirect="new.example.com",
        port_redirect=8443,
        scheme_redirect="https",
        response_code=route_components_pb2.RedirectAction.MOVED_PERMANENTLY,
    )


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (301, route_components_pb2.RedirectAction.MOVED_PERMANENTLY),
        (302, route_components_pb2.RedirectAction.FOUND),
        (303, route_components_pb2.RedirectAction.SEE_OTHER),
        (307, route_components_pb2.RedirectAction.TEMPORARY_REDIRECT),
        (308, route_components_pb2.RedirectAction.PERMANENT_REDIRECT),
    ],
)
def test_redirect_codes_map_to_envoy_response_codes(code: int, expected: int) -> None:
    route = only(HttpRoute(redirect=Redirect(uri="/x", redirect_code=code)))
    assert route.redirect.response_code == expected


# Faults and mirroring


def fault_of(route: Message) -> Message:
    assert list(route.typed_per_filter_config) == ["envoy.filters.http.fault"]
    return unpack(route.typed_per_filter_config["envoy.filters.http.fault"], fault_pb2.HTTPFault)


def million(numerator: int) -> Message:
    return percent_pb2.FractionalPercent(
        numerator=numerator, denominator=percent_pb2.FractionalPercent.MILLION
    )


def test_a_delay_fault_configures_the_fault_filter_for_this_route() -> None:
    route = only(to_reviews(fault=Fault(delay=Delay(timedelta(seconds=7), 10.0))))
    fault = fault_of(route)
    assert fault.delay.fixed_delay == seconds(7)
    assert fault.delay.percentage == million(100_000)
    assert not fault.HasField("abort")


def test_an_http_abort_fault_sets_status_and_fractional_percentage() -> None:
    route = only(to_reviews(fault=Fault(abort=Abort(http_status=500, percentage=0.1))))
    fault = fault_of(route)
    assert fault.abort.http_status == 500
    assert fault.abort.percentage == million(1_000)
    assert not fault.HasField("delay")


def test_a_grpc_abort_fault_maps_the_status_name_to_its_code() -> None:
    route = only(to_reviews(fault=Fault(abort=Abort(grpc_status="UNAVAILABLE"))))
    fault = fault_of(route)
    assert fault.abort.grpc_status == 14
    assert fault.abort.percentage == million(1_000_000)


def test_routes_without_faults_carry_no_fault_config() -> None:
    assert len(only(to_reviews()).typed_per_filter_config) == 0


def test_mirroring_sends_the_given_share_to_the_mirror_cluster() -> None:
    rule = to_reviews(mirror=RouteDestination(REVIEWS, subset="v2"), mirror_percentage=12.5)
    [mirror] = only(rule).route.request_mirror_policies
    assert mirror == RouteAction.RequestMirrorPolicy(
        cluster=f"outbound|9080|v2|{REVIEWS}",
        runtime_fraction=base_pb2.RuntimeFractionalPercent(default_value=million(125_000)),
    )


def test_mirroring_without_a_percentage_mirrors_everything() -> None:
    [mirror] = only(to_reviews(mirror=RouteDestination(REVIEWS))).route.request_mirror_policies
    assert mirror.runtime_fraction.default_value == million(1_000_000)


def test_a_mirror_naming_no_cluster_is_left_out() -> None:
    rule = to_reviews(mirror=RouteDestination("ghost.default.svc.cluster.local"))
    assert list(only(rule).route.request_mirror_policies) == []


# Headers


def set_header(key: str, value: str) -> Message:
    return HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def add_header(key: str, value: str) -> Message:
    return HeaderValueOption(
        header=base_pb2.HeaderValue(key=key, value=value),
        append_action=HeaderValueOption.APPEND_IF_EXISTS_OR_ADD,
    )


def test_route_header_operations_set_add_and_remove() -> None:
    rule = HttpRoute(
        destinations=(RouteDestination(REVIEWS),),
        request_headers=HeaderOperations(set=(("x-a", "1"),), add=(("x-b", "2"),), remove=("x-c",)),
        response_headers=HeaderOperations(add=(("x-d", "3"),), remove=("server",)),
    )
    route = only(rule)
    assert list(route.request_headers_to_add) == [set_header("x-a", "1"), add_header("x-b", "2")]
    assert list(route.request_headers_to_remove) == ["x-c"]
    assert list(route.response_headers_to_add) == [add_header("x-d", "3")]
    assert list(route.response_headers_to_remove) == ["server"]


def test_a_single_destinations_header_operations_join_the_routes() -> None:
    rule = HttpRoute(
        destinations=(
            RouteDestination(
                REVIEWS,
                request_headers=HeaderOperations(set=(("x-dest", "1"),)),
                response_headers=HeaderOperations(remove=("x-internal",)),
            ),
        ),
        request_headers=HeaderOperations(set=(("x-route", "1"),)),
    )
    route = only(rule)
    assert list(route.request_headers_to_add) == [
        set_header("x-route", "1"),
        set_header("x-dest", "1"),
    ]
    assert list(route.response_headers_to_remove) == ["x-internal"]


def test_weighted_destinations_keep_their_own_header_operations() -> None:
    rule = HttpRoute(
        destinations=(
            RouteDestination(
                REVIEWS,
                subset="v1",
                weight=50,
                request_headers=HeaderOperations(add=(("x-v", "1"),)),
            ),
            RouteDestination(
                REVIEWS,
                subset="v2",
                weight=50,
                response_headers=HeaderOperations(set=(("x-v", "2"),), remove=("x-old",)),
            ),
        ),
    )
    route = only(rule)
    first, second = route.route.weighted_clusters.clusters
    assert list(first.request_headers_to_add) == [add_header("x-v", "1")]
    assert list(second.response_headers_to_add) == [set_header("x-v", "2")]
    assert list(second.response_headers_to_remove) == ["x-old"]
    assert list(route.request_headers_to_add) == []
    assert list(route.response_headers_to_add) == []


# Hash policies

HashPolicy = RouteAction.HashPolicy


@pytest.mark.parametrize(
    ("hashing", "expected"),
    [
        (
            ConsistentHash(http_header_name="x-user"),
            HashPolicy(header=HashPolicy.Header(header_name="x-user")),
        ),
        (
            ConsistentHash(
                http_cookie_name="session", http_cookie_path="/", http_cookie_ttl=timedelta(hours=1)
            ),
            HashPolicy(cookie=HashPolicy.Cookie(name="session", path="/", ttl=seconds(3600))),
        ),
        (ConsistentHash(http_cookie_name="sid"), HashPolicy(cookie=HashPolicy.Cookie(name="sid"))),
        (
            ConsistentHash(use_source_ip=True),
            HashPolicy(connection_properties=HashPolicy.ConnectionProperties(source_ip=True)),
        ),
        (
            ConsistentHash(http_query_parameter_name="user"),
            HashPolicy(query_parameter=HashPolicy.QueryParameter(name="user")),
        ),
    ],
    ids=["header", "cookie", "cookie without ttl", "source ip", "query parameter"],
)
def test_a_consistent_hash_destination_adds_its_hash_policy(
    hashing: ConsistentHash, expected: Message
) -> None:
    action = only(to_reviews(), on=mesh(hashing)).route
    assert list(action.hash_policy) == [expected]


def test_subset_destinations_hash_with_the_subset_policy() -> None:
    service = http_service("reviews")
    hashing = ConsistentHash(http_header_name="x-user")
    on = mesh_of(
        service,
        destination_policies=(
            DestinationPolicy(
                REVIEWS,
                "default",
                "reviews",
                subsets=(
                    Subset(
                        "v1",
                        (("version", "v1"),),
                        TrafficPolicy(
                            load_balancer=LoadBalancer(LoadBalancerKind.CONSISTENT_HASH, hashing)
                        ),
                    ),
                ),
            ),
        ),
    )
    assert list(only(to_reviews(), on=on).route.hash_policy) == []
    hashed = only(HttpRoute(destinations=(RouteDestination(REVIEWS, subset="v1"),)), on=on)
    assert list(hashed.route.hash_policy) == [
        HashPolicy(header=HashPolicy.Header(header_name="x-user"))
    ]


def test_routes_to_destinations_without_consistent_hash_have_no_hash_policy() -> None:
    assert list(only(to_reviews()).route.hash_policy) == []


def test_the_default_route_goes_to_the_service_on_the_context_port() -> None:
    service = mesh().service(MULTI)
    assert service is not None
    route = default_route(RouteContext(mesh(), 9090, ("mesh",), True), service)
    assert route.name == "default"
    assert route.match == route_components_pb2.RouteMatch(prefix="/")
    assert route.route.cluster == f"outbound|9090||{MULTI}"
    assert route.route.timeout == seconds(0)
    assert route.route.retry_policy.num_retries.value == 2
