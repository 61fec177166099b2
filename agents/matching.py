"""Request matchers: Envoy's ``RouteMatch`` compiled once, evaluated per request.

Everything a matcher needs is prepared when the forwarding table is built:
regexes compiled (RE2 syntax approximated by Python's ``re`` in ASCII mode,
constructs whose meaning differs refused), case folding applied to the
configured values, pseudo-headers (``:method``, ``:authority``, ``:path``,
``:scheme``) resolved to the request's own fields. A request is then tested
by plain string operations and, for regexes, one ``fullmatch``.

Semantics follow Envoy: path matchers see the path without its query;
``case_sensitive: false`` applies to prefix, path and separated prefix, not
to regexes; a header matcher on a missing header fails (inverted too), except
``present_match`` and ``treat_missing_header_as_empty``; repeated headers are
matched as one value joined by ``,`` (the proxy joins them); a query
parameter matcher sees the first value of the parameter, undecoded.
Virtual hosts are chosen by :class:`HostIndex`: exact domain, then the
longest ``*suffix``, then the longest ``prefix*``, then ``*``.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from agents.errors import ConfigRejected

StringTest = Callable[[str], bool]
T = TypeVar("T")

_UNSUPPORTED_RE2 = (
    (re.compile(r"\(\?<?[=!]"), "lookaround assertions"),
    (re.compile(r"\(\?>"), "atomic groups"),
    (re.compile(r"\(\?\("), "conditionals"),
    (re.compile(r"\(\?P="), "backreferences"),
    (re.compile(r"\\[1-9]"), "backreferences"),
    (re.compile(r"[*+?}][+]"), "possessive quantifiers"),
)


def compile_regex(pattern: str, resource: str, field: str) -> re.Pattern[str]:
    """``pattern`` (RE2 syntax) as a Python regex meaning the same, or :class:`ConfigRejected`."""
    unescaped = re.sub(r"\\\\", "", pattern)
    for construct, what in _UNSUPPORTED_RE2:
        if construct.search(unescaped):
            raise ConfigRejected(resource, field, f"regex {pattern!r}: RE2 has no {what}")
    # RE2 spells the end of text \z; Python spells it \Z (and has no \z).
    translated = re.sub(r"(?<!\\)((?:\\\\)*)\\z", r"\1\\Z", pattern)
    try:
        return _compile(translated)
    except re.error as error:
        raise ConfigRejected(
            resource, field, f"regex {pattern!r} does not compile: {error}"
        ) from None


@functools.lru_cache(maxsize=8192)
def _compile(pattern: str) -> re.Pattern[str]:
    """``re.compile``, remembered across table builds (``re``'s own cache holds 512)."""
    return re.compile(pattern, re.ASCII)


def re2_substitution(substitution: str) -> str:
    """An RE2 rewrite string (``\\1`` groups, ``\\\\``) as a Python ``re.sub`` template."""
    out = []
    index = 0
    while index < len(substitution):
        char = substitution[index]
        following = substitution[index + 1 : index + 2]
        if char == "\\" and following.isdigit():
            out.append(f"\\g<{following}>")
            index += 2
        elif char == "\\" and following == "\\":
            out.append("\\\\")
            index += 2
        elif char == "\\":
            out.append("\\\\")
            index += 1
        else:
            out.append(char)
            index += 1
    return "".join(out)


def string_test(matcher: Any, resource: str, field: str) -> StringTest:
    """A test for an Envoy ``StringMatcher``."""
    kind = matcher.WhichOneof("match_pattern")
    fold = bool(matcher.ignore_case)
    if kind == "safe_regex":
        return _regex_test(compile_regex(matcher.safe_regex.regex, resource, f"{field}.safe_regex"))
    if kind not in ("exact", "prefix", "suffix", "contains"):
        raise ConfigRejected(resource, field, f"string matcher {kind or 'unset'} is not supported")
    return _literal_test(kind, str(getattr(matcher, kind)), fold)


def _literal_test(kind: str, value: str, fold: bool) -> StringTest:
    if fold:
        value = value.lower()
        if kind == "exact":
            return lambda s: s.lower() == value
        if kind == "prefix":
            return lambda s: s.lower().startswith(value)
        if kind == "suffix":
            return lambda s: s.lower().endswith(value)
        return lambda s: value in s.lower()
    if kind == "exact":
        return value.__eq__
    if kind == "prefix":
        return lambda s: s.startswith(value)
    if kind == "suffix":
        return lambda s: s.endswith(value)
    return lambda s: value in s


HeaderCheck = Callable[[Mapping[str, str], str, str, str, str], bool]
"""``(headers, method, host, path, query) -> matched``."""

_PSEUDO = frozenset({":method", ":authority", ":path", ":scheme"})


def header_test(matcher: Any, resource: str, field: str) -> HeaderCheck:
    """A check for one Envoy ``HeaderMatcher``, specialised for its kind at build time."""
    name = str(matcher.name).lower()
    kind = matcher.WhichOneof("header_match_specifier")
    invert = bool(matcher.invert_match)
    test: StringTest
    if kind == "present_match" or kind is None:
        # Envoy: no specifier means "present".
        present = kind is None or bool(matcher.present_match)
        return _presence_check(name, present != invert)
    if kind == "string_match":
        test = string_test(matcher.string_match, resource, f"{field}.string_match")
    elif kind == "safe_regex_match":
        pattern = compile_regex(matcher.safe_regex_match.regex, resource, f"{field}.{kind}")
        test = _regex_test(pattern)
    elif kind == "range_match":
        test = _range_test(int(matcher.range_match.start), int(matcher.range_match.end))
    else:
        literal = {"exact_match": "exact", "prefix_match": "prefix", "suffix_match": "suffix"}
        test = _literal_test(literal.get(kind, "contains"), str(getattr(matcher, kind)), False)
    missing = "" if matcher.treat_missing_header_as_empty else None
    if name in _PSEUDO:
        return _pseudo_check(name, test, invert)
    if not invert and missing is None:

        def check(
            headers: Mapping[str, str], method: str, host: str, path: str, query: str
        ) -> bool:
            value = headers.get(name)
            return value is not None and bool(test(value))

        return check

    def inverted(headers: Mapping[str, str], method: str, host: str, path: str, query: str) -> bool:
        value = headers.get(name, missing)
        return value is not None and bool(test(value)) != invert

    return inverted


def _presence_check(name: str, wanted: bool) -> HeaderCheck:
    if name in _PSEUDO:
        # Pseudo-headers are always there (:scheme defaults to http).
        return lambda headers, method, host, path, query: wanted

    def check(headers: Mapping[str, str], method: str, host: str, path: str, query: str) -> bool:
        return (name in headers) == wanted

    return check


def _pseudo_check(name: str, test: StringTest, invert: bool) -> HeaderCheck:
    def check(headers: Mapping[str, str], method: str, host: str, path: str, query: str) -> bool:
        if name == ":method":
            value = method
        elif name == ":authority":
            value = host
        elif name == ":path":
            value = f"{path}?{query}" if query else path
        else:
            value = headers.get(":scheme", "http")
        return bool(test(value)) != invert

    return check


def _regex_test(pattern: re.Pattern[str]) -> StringTest:
    match = pattern.fullmatch
    return lambda value: match(value) is not None


def all_of(checks: tuple[HeaderCheck, ...]) -> HeaderCheck | None:
    """One check for all of ``checks`` (None when there are none)."""
    if not checks:
        return None
    if len(checks) == 1:
        return checks[0]

    def check(headers: Mapping[str, str], method: str, host: str, path: str, query: str) -> bool:
        return all(one(headers, method, host, path, query) for one in checks)

    return check


def _range_test(start: int, end: int) -> StringTest:
    def test(value: str) -> bool:
        try:
            number = int(value)
        except ValueError:
            return False
        return start <= number < end

    return test


@dataclass(frozen=True, slots=True)
class QueryTest:
    name: str
    test: StringTest | None
    """None: the parameter is present."""

    def matches(self, params: Mapping[str, str]) -> bool:
        value = params.get(self.name)
        if value is None:
            return False
        return self.test is None or self.test(value)


def query_test(matcher: Any, resource: str, field: str) -> QueryTest:
    if matcher.HasField("string_match"):
        return QueryTest(
            str(matcher.name), string_test(matcher.string_match, resource, f"{field}.string_match")
        )
    return QueryTest(str(matcher.name), None)


def parse_query(query: str) -> dict[str, str]:
    """Query parameters by name, first value wins, undecoded (as Envoy's route matching)."""
    params: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        params.setdefault(name, value)
    return params


def path_test(match: Any, resource: str, field: str) -> StringTest | None:
    """The test of a ``RouteMatch`` path specifier (None: every path matches)."""
    kind = match.WhichOneof("path_specifier")
    sensitive = not match.HasField("case_sensitive") or bool(match.case_sensitive.value)
    if kind == "safe_regex":
        return _regex_test(compile_regex(match.safe_regex.regex, resource, f"{field}.safe_regex"))
    if kind == "prefix":
        value = str(match.prefix)
        if value in ("", "/"):
            return None
        return _literal_test("prefix", value, not sensitive)
    if kind == "path":
        return _literal_test("exact", str(match.path), not sensitive)
    if kind == "path_separated_prefix":
        value = str(match.path_separated_prefix)
        if not sensitive:
            value = value.lower()
            return lambda p: (p := p.lower()) == value or p.startswith(value + "/")
        return lambda p: p == value or p.startswith(value + "/")
    raise ConfigRejected(resource, f"{field}.{kind or 'path_specifier'}", "not supported")


@dataclass(frozen=True, slots=True)
class RouteMatcher(Generic[T]):
    """One compiled route: its tests, in Envoy's order, and what it leads to."""

    path: StringTest | None
    headers: HeaderCheck | None
    query: tuple[QueryTest, ...]
    fraction: float | None
    """Share of matching requests (0 to 1) that take this route; None: all."""
    grpc: bool
    action: T


def select(
    routes: tuple[RouteMatcher[T], ...],
    host: str,
    path: str,
    method: str,
    headers: Mapping[str, str],
    query: str,
) -> T | None:
    """The action of the first route in ``routes`` that matches the request."""
    params: dict[str, str] | None = None
    for route in routes:
        if route.path is not None and not route.path(path):
            continue
        if route.headers is not None and not route.headers(headers, method, host, path, query):
            continue
        if route.query:
            if params is None:
                params = parse_query(query)
            if not all(q.matches(params) for q in route.query):
                continue
        if route.grpc and not headers.get("content-type", "").startswith("application/grpc"):
            continue
        if route.fraction is not None and random.random() >= route.fraction:
            continue
        return route.action
    return None


@dataclass(frozen=True, slots=True)
class HostIndex(Generic[T]):
    """Virtual hosts by domain, in Envoy's search order."""

    exact: Mapping[str, T]
    suffixes: tuple[tuple[str, T], ...]
    """``*suffix`` domains as (suffix, value), longest suffix first."""
    prefixes: tuple[tuple[str, T], ...]
    """``prefix*`` domains as (prefix, value), longest prefix first."""
    default: T | None

    def find(self, host: str) -> T | None:
        host = host.lower()
        found = self.exact.get(host)
        if found is not None:
            return found
        for suffix, value in self.suffixes:
            if len(host) > len(suffix) and host.endswith(suffix):
                return value
        for prefix, value in self.prefixes:
            if len(host) > len(prefix) and host.startswith(prefix):
                return value
        return self.default


def host_index(hosts: list[tuple[str, list[str], T]], resource: str) -> HostIndex[T]:
    """The index of ``(name, domains, value)`` virtual hosts; a domain claimed twice is refused."""
    exact: dict[str, T] = {}
    suffixes: list[tuple[str, T]] = []
    prefixes: list[tuple[str, T]] = []
    default: T | None = None
    claimed: dict[str, str] = {}
    for name, domains, value in hosts:
        for raw in domains:
            domain = raw.lower()
            field = f"virtual_hosts[{name}].domains"
            if domain in claimed:
                raise ConfigRejected(
                    resource,
                    field,
                    f"domain {raw!r} is also claimed by virtual host {claimed[domain]!r}",
                )
            claimed[domain] = name
            if domain == "*":
                default = value
            elif "*" in domain[1:-1] or domain.count("*") > 1 or not domain:
                raise ConfigRejected(
                    resource, field, f"domain {raw!r}: only one '*', at the start or end"
                )
            elif domain.startswith("*"):
                suffixes.append((domain[1:], value))
            elif domain.endswith("*"):
                prefixes.append((domain[:-1], value))
            else:
                exact[domain] = value
    suffixes.sort(key=lambda item: -len(item[0]))
    prefixes.sort(key=lambda item: -len(item[0]))
    return HostIndex(exact, tuple(suffixes), tuple(prefixes), default)
