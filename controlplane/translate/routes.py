"""HTTP routes: one Istio ``HTTPRoute`` as Envoy ``Route`` entries.

Each match of a rule becomes one Envoy route, in the order written, so the
first match still wins; a rule without matches becomes one catch-all route.
Matches narrowed to another port or other gateways are left out (see
:mod:`~controlplane.translate.binding`), and a rule left with none is
dropped. The action follows Istio's translation:

* destinations: one resolves to ``cluster``; several (those with weight 0
  dropped) to ``weighted_clusters`` with their weights as given and their
  own header operations; a single destination's header operations join the
  route's;
* ``timeout``: the rule's, or ``0s`` (disabled), Istio's default;
* retries: ``num_retries``, ``per_try_timeout`` and ``retry_on``, numeric
  entries moved to ``retriable_status_codes``; without ``retries`` Istio's
  default policy (2 attempts on connection failures, refused streams,
  ``unavailable``, ``cancelled`` and 503), and ``attempts: 0`` disables it;
  every policy prefers hosts not tried yet;
* ``rewrite``: the URI as ``prefix_rewrite``, or as a ``regex_rewrite`` of
  the whole path when the match was a regex (Envoy refuses prefix rewrites
  there); the authority as ``host_rewrite_literal``;
* ``redirect`` replaces the action; ``fault`` configures the fault filter
  for this route only; ``mirror`` sends a copy of the given share;
* a destination whose policy hashes consistently adds the ``hash_policy``
  that keys the ring.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2

from controlplane.model import (
    ConsistentHash,
    HeaderOperations,
    HttpMatch,
    HttpRoute,
    LoadBalancerKind,
    Mesh,
    Redirect,
    Retries,
    RouteDestination,
    Service,
    StringMatchKind,
)
from controlplane.translate.binding import match_applies
from controlplane.translate.destinations import resolve
from controlplane.translate.filters import FAULT_FILTER, http_fault
from controlplane.translate.matches import fill_route_match, regex
from controlplane.translate.names import BLACKHOLE_CLUSTER
from controlplane.translate.protos import Message, duration, fraction, pack
from controlplane.translate.upstreams import Upstream

Route = route_components_pb2.Route
RouteAction = route_components_pb2.RouteAction
RedirectAction = route_components_pb2.RedirectAction

DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRY_ATTEMPTS = 2
DEFAULT_RETRIABLE_STATUS_CODES = (503,)
RETRIABLE_STATUS_CODES = "retriable-status-codes"
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
HOST_SELECTION_ATTEMPTS = 5

_REDIRECT_CODES = {
    301: RedirectAction.MOVED_PERMANENTLY,
    302: RedirectAction.FOUND,
    303: RedirectAction.SEE_OTHER,
    307: RedirectAction.TEMPORARY_REDIRECT,
    308: RedirectAction.PERMANENT_REDIRECT,
}


@dataclass(frozen=True, slots=True)
class RouteContext:
    """Where routes are being built: a listener port, seen through some gateways.

    ``infer_port`` is set for sidecars, where a destination without a port
    may take the port the request arrived on.
    """

    mesh: Mesh
    port: int
    gateways: tuple[str, ...]
    infer_port: bool
    _resolved: dict[tuple[str, int | None, str | None], Upstream | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def listener_port(self) -> int | None:
        return self.port if self.infer_port else None

    def resolve(self, destination: RouteDestination) -> Upstream | None:
        """:func:`~controlplane.translate.destinations.resolve` here, once per destination."""
        key = (destination.host, destination.port, destination.subset)
        if key in self._resolved:
            return self._resolved[key]
        upstream = self._resolved[key] = resolve(self.mesh, destination, self.listener_port)
        return upstream


def build_routes(context: RouteContext, rule: HttpRoute) -> list[Message]:
    routes = []
    for match in _applicable(context, rule):
        route = Route()
        _fill_route(route, context, rule, match)
        routes.append(route)
    return routes


def add_routes(context: RouteContext, rule: HttpRoute, into: Message) -> int:
    """:func:`build_routes` added to the repeated field ``into``; how many were added.

    Written in place: a route built apart would be copied into its virtual host.
    """
    matches = _applicable(context, rule)
    for match in matches:
        _fill_route(into.add(), context, rule, match)
    return len(matches)


def _applicable(context: RouteContext, rule: HttpRoute) -> tuple[HttpMatch | None, ...]:
    if not rule.matches:
        return (None,)
    return tuple(m for m in rule.matches if match_applies(m, context.port, context.gateways))


def default_route(context: RouteContext, service: Service) -> Message:
    """The catch-all route to ``service`` on the context port, for hosts without rules."""
    route = Route()
    _fill_route(route, context, _default_rule(context, service), None)
    return route


def add_default_route(context: RouteContext, service: Service, into: Message) -> None:
    """:func:`default_route` added to the repeated field ``into``."""
    _fill_route(into.add(), context, _default_rule(context, service), None)


def _default_rule(context: RouteContext, service: Service) -> HttpRoute:
    return HttpRoute(
        name="default",
        destinations=(RouteDestination(host=service.host, port=context.port),),
    )


def _fill_route(
    route: Message, context: RouteContext, rule: HttpRoute, match: HttpMatch | None
) -> None:
    fill_route_match(route.match, match)
    name = ".".join(part for part in (rule.name, match.name if match else "") if part)
    if name:
        route.name = name
    request, response = [rule.request_headers], [rule.response_headers]
    if rule.redirect is not None:
        route.redirect.CopyFrom(_redirect(rule.redirect))
    else:
        destinations = _weighted(rule.destinations)
        _fill_action(route.route, context, rule, match, destinations)
        if len(destinations) == 1:
            request.append(destinations[0].request_headers)
            response.append(destinations[0].response_headers)
    for operations in request:
        _add_request_headers(route, operations)
    for operations in response:
        _add_response_headers(route, operations)
    if rule.fault is not None:
        route.typed_per_filter_config[FAULT_FILTER].CopyFrom(pack(http_fault(rule.fault)))


def _fill_action(
    action: Message,
    context: RouteContext,
    rule: HttpRoute,
    match: HttpMatch | None,
    destinations: Sequence[RouteDestination],
) -> None:
    """Set the route's ``RouteAction`` in place (a message built apart would be copied in)."""
    upstreams = [context.resolve(d) for d in destinations]
    if not destinations:
        action.cluster = BLACKHOLE_CLUSTER
    elif len(destinations) == 1:
        action.cluster = _cluster(upstreams[0])
    else:
        add_weight = action.weighted_clusters.clusters.add
        for destination, upstream in zip(destinations, upstreams, strict=True):
            weight = add_weight(name=_cluster(upstream))
            weight.weight.value = destination.weight
            _add_request_headers(weight, destination.request_headers)
            _add_response_headers(weight, destination.response_headers)
    action.timeout.CopyFrom(_timeout(rule.timeout or _NO_TIMEOUT))
    retry = _retry_policy(rule.retries)
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    if rule.rewrite is not None:
        if rule.rewrite.uri is not None:
            _set_uri_rewrite(action, match, rule.rewrite.uri)
        if rule.rewrite.authority is not None:
            action.host_rewrite_literal = rule.rewrite.authority
    if rule.mirror is not None:
        mirror = resolve(context.mesh, rule.mirror, context.listener_port)
        if mirror is not None:
            percentage = 100.0 if rule.mirror_percentage is None else rule.mirror_percentage
            action.request_mirror_policies.append(
                RouteAction.RequestMirrorPolicy(
                    cluster=mirror.name,
                    runtime_fraction=base_pb2.RuntimeFractionalPercent(
                        default_value=fraction(percentage)
                    ),
                )
            )
    hashing = _consistent_hash(upstreams)
    if hashing is not None:
        policy = hash_policy(hashing)
        if policy is not None:
            action.hash_policy.append(policy)


_NO_TIMEOUT = timedelta(0)

# Many routes share a timeout and a retry policy: each is built once and copied in.
_timeout = functools.lru_cache(maxsize=1024)(duration)


def _set_uri_rewrite(action: Message, match: HttpMatch | None, uri: str) -> None:
    matched = match.uri if match is not None else None
    if matched is not None and matched.kind is StringMatchKind.REGEX:
        action.regex_rewrite.CopyFrom(
            regex_pb2.RegexMatchAndSubstitute(pattern=regex(matched.value), substitution=uri)
        )
    else:
        action.prefix_rewrite = uri


def _weighted(destinations: Sequence[RouteDestination]) -> tuple[RouteDestination, ...]:
    if len(destinations) <= 1:
        return tuple(destinations)
    return tuple(d for d in destinations if d.weight > 0) or tuple(destinations[:1])


def _cluster(upstream: Upstream | None) -> str:
    return upstream.name if upstream is not None else BLACKHOLE_CLUSTER


# Most routes change no headers: their header fields are not even looked up then.
def _add_request_headers(message: Message, operations: HeaderOperations) -> None:
    if operations.set or operations.add:
        message.request_headers_to_add.extend(_header_values(operations))
    if operations.remove:
        message.request_headers_to_remove.extend(operations.remove)


def _add_response_headers(message: Message, operations: HeaderOperations) -> None:
    if operations.set or operations.add:
        message.response_headers_to_add.extend(_header_values(operations))
    if operations.remove:
        message.response_headers_to_remove.extend(operations.remove)


def retry_policy(retries: Retries | None) -> Message | None:
    """Envoy's retry policy for Istio ``retries`` (``None``: Istio's default policy)."""
    if retries is not None and retries.attempts <= 0:
        return None
    policy = route_components_pb2.RetryPolicy()
    policy.retry_host_predicate.append(
        route_components_pb2.RetryPolicy.RetryHostPredicate(
            name=PREVIOUS_HOSTS, typed_config=pack(previous_hosts_pb2.PreviousHostsPredicate())
        )
    )
    policy.host_selection_retry_max_attempts = HOST_SELECTION_ATTEMPTS
    if retries is None:
        policy.num_retries.value = DEFAULT_RETRY_ATTEMPTS
        policy.retry_on = DEFAULT_RETRY_ON
        policy.retriable_status_codes.extend(DEFAULT_RETRIABLE_STATUS_CODES)
        return policy
    policy.num_retries.value = retries.attempts
    if retries.per_try_timeout is not None:
        policy.per_try_timeout.CopyFrom(duration(retries.per_try_timeout))
    if not retries.retry_on:
        policy.retry_on = DEFAULT_RETRY_ON
        policy.retriable_status_codes.extend(DEFAULT_RETRIABLE_STATUS_CODES)
        return policy
    conditions = [c.strip() for c in retries.retry_on if c.strip()]
    codes = [int(c) for c in conditions if c.isdigit()]
    named = [c for c in conditions if not c.isdigit()]
    if codes and RETRIABLE_STATUS_CODES not in named:
        named.append(RETRIABLE_STATUS_CODES)
    policy.retry_on = ",".join(named)
    policy.retriable_status_codes.extend(codes)
    return policy


_retry_policy = functools.lru_cache(maxsize=1024)(retry_policy)


def hash_policy(hashing: ConsistentHash) -> Message | None:
    """The route ``hash_policy`` keying a consistent-hash ring (None without a hash key)."""
    policy = RouteAction.HashPolicy
    if hashing.http_header_name is not None:
        return policy(header=policy.Header(header_name=hashing.http_header_name))
    if hashing.http_cookie_name is not None:
        cookie = policy.Cookie(name=hashing.http_cookie_name)
        if hashing.http_cookie_ttl is not None:
            cookie.ttl.CopyFrom(duration(hashing.http_cookie_ttl))
        if hashing.http_cookie_path is not None:
            cookie.path = hashing.http_cookie_path
        return policy(cookie=cookie)
    if hashing.use_source_ip:
        return policy(connection_properties=policy.ConnectionProperties(source_ip=True))
    if hashing.http_query_parameter_name is not None:
        return policy(query_parameter=policy.QueryParameter(name=hashing.http_query_parameter_name))
    return None


def _consistent_hash(upstreams: Sequence[Upstream | None]) -> ConsistentHash | None:
    """The hash of the first destination that hashes (Envoy keys a route once)."""
    for upstream in upstreams:
        balancer = upstream.policy.load_balancer if upstream is not None else None
        if balancer is not None and balancer.kind is LoadBalancerKind.CONSISTENT_HASH:
            return balancer.consistent_hash
    return None


def _redirect(redirect: Redirect) -> Message:
    action = RedirectAction(
        response_code=_REDIRECT_CODES.get(redirect.redirect_code, RedirectAction.MOVED_PERMANENTLY)
    )
    if redirect.uri is not None:
        action.path_redirect = redirect.uri
    if redirect.authority is not None:
        action.host_redirect = redirect.authority
    if redirect.port is not None:
        action.port_redirect = redirect.port
    if redirect.scheme is not None:
        action.scheme_redirect = redirect.scheme
    return action


def _header_values(operations: HeaderOperations) -> list[Message]:
    option = base_pb2.HeaderValueOption
    return [
        option(header=base_pb2.HeaderValue(key=key, value=value), append_action=action)
        for pairs, action in (
            (operations.set, option.OVERWRITE_IF_EXISTS_OR_ADD),
            (operations.add, option.APPEND_IF_EXISTS_OR_ADD),
        )
        for key, value in pairs
    ]
