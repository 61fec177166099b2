"""Request matching: an Istio ``HTTPMatchRequest`` as an Envoy ``RouteMatch``.

The URI becomes ``path`` (exact), ``prefix`` or ``safe_regex`` (RE2, Envoy's
only engine, full-match semantics like Istio's), case-insensitive when
``ignoreUriCase`` is set. Scheme, method and authority are the pseudo-headers
``:scheme``, ``:method`` and ``:authority``; headers and query parameters use
``string_match``. ``withoutHeaders`` inverts a header match, and one without
a value means "the header is absent" (present, inverted). The port and
gateway conditions are not part of the Envoy match: they decide which route
configuration the route lands in (:func:`controlplane.translate.binding.match_applies`).
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from controlplane.model import HttpMatch, StringMatch, StringMatchKind
from controlplane.translate.protos import Message


def regex(pattern: str) -> Message:
    return regex_pb2.RegexMatcher(regex=pattern)


def string_matcher(match: StringMatch) -> Message:
    if match.kind is StringMatchKind.EXACT:
        return string_pb2.StringMatcher(exact=match.value)
    if match.kind is StringMatchKind.PREFIX:
        return string_pb2.StringMatcher(prefix=match.value)
    return string_pb2.StringMatcher(safe_regex=regex(match.value))


def header_matcher(name: str, match: StringMatch | None, *, invert: bool = False) -> Message:
    matcher = route_components_pb2.HeaderMatcher()
    _fill_header_matcher(matcher, name, match, invert)
    return matcher


def _fill_header_matcher(
    matcher: Message, name: str, match: StringMatch | None, invert: bool
) -> None:
    matcher.name = name
    if invert:
        matcher.invert_match = True
    if match is None:
        matcher.present_match = True
    elif match.kind is StringMatchKind.EXACT:
        matcher.string_match.exact = match.value
    elif match.kind is StringMatchKind.PREFIX:
        matcher.string_match.prefix = match.value
    else:
        matcher.string_match.CopyFrom(string_matcher(match))


def route_match(match: HttpMatch | None) -> Message:
    """The Envoy match for ``match``; ``None`` (a rule without matches) matches everything."""
    result = route_components_pb2.RouteMatch()
    fill_route_match(result, match)
    return result


def fill_route_match(result: Message, match: HttpMatch | None) -> None:
    """:func:`route_match` written into ``result`` (a route's own, so nothing is copied)."""
    if match is None or match.uri is None:
        result.prefix = "/"
    elif match.uri.kind is StringMatchKind.EXACT:
        result.path = match.uri.value
    elif match.uri.kind is StringMatchKind.PREFIX:
        result.prefix = match.uri.value
    else:
        result.safe_regex.CopyFrom(regex(match.uri.value))
    if match is None:
        return
    if match.ignore_uri_case:
        result.case_sensitive.CopyFrom(wrappers_pb2.BoolValue(value=False))
    add_header = result.headers.add
    pseudo = ((":scheme", match.scheme), (":method", match.method), (":authority", match.authority))
    for name, value in pseudo:
        if value is not None:
            _fill_header_matcher(add_header(), name, value, False)
    for name, value in match.headers:
        _fill_header_matcher(add_header(), name, value, False)
    for name, maybe in match.without_headers:
        _fill_header_matcher(add_header(), name, maybe, True)
    for name, value in match.query_params:
        result.query_parameters.append(
            route_components_pb2.QueryParameterMatcher(
                name=name, string_match=string_matcher(value)
            )
        )
