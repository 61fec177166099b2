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
        return re.compile(translated, re.ASCII)
    except re.error as error:
        raise ConfigRejected(
            resource, field, f"regex {pattern!r} does not compile: {error}"
        ) from None


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
        return compile_regex(matcher.safe_regex.regex, resource, f"{field}.safe_regex").fullmatch  # type: ignore[return-value]
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


_PSEUDO = {":method": 1, ":authority": 2, ":path": 3, ":scheme": 4}


@dataclass(frozen=True, slots=True)
class HeaderTest:
    """One ``HeaderMatcher``: ``source`` 0 reads ``headers[name]``, else a pseudo-header."""

    name: str
    source: int
    test: StringTest | None
    """None: a presence test."""
    present: bool = True
    invert: bool = False
    missing_as_empty: bool = False

    def matches(
        self, headers: Mapping[str, str], method: str, host: str, path: str, query: str
    ) -> bool:
        source = self.source
        value: str | None
        if source == 0:
            value = headers.get(self.name)
        elif source == 1:
            value = method
        elif source == 2:
            value = host
        elif source == 3:
            value = f"{path}?{query}" if query else path
        else:
            value = headers.get(":scheme", "http")
        if self.test is None:
            return ((value is not None) == self.present) != self.invert
        if value is None:
            if not self.missing_as_empty:
                return False
            value = ""
        return bool(self.test(value)) != self.invert


def header_test(matcher: Any, resource: str, field: str) -> HeaderTest:
    name = str(matcher.name).lower()
    kind = matcher.WhichOneof("header_match_specifier")
    test: StringTest | None
    present = True
    if kind == "string_match":
        test = string_test(matcher.string_match, resource, f"{field}.string_match")
    elif kind == "present_match":
        test, present = None, bool(matcher.present_match)
    elif kind is None:
        # Envoy: no specifier means "present".
        test = None
    elif kind == "safe_regex_match":
        pattern = compile_regex(matcher.safe_regex_match.regex, resource, f"{field}.{kind}")
        test = pattern.fullmatch  # type: ignore[assignment]
    elif kind == "range_match":
        start, end = int(matcher.range_match.start), int(matcher.range_match.end)
        test = _range_test(start, end)
    else:
        literal = {"exact_match": "exact", "prefix_match": "prefix", "suffix_match": "suffix"}
        test = _literal_test(literal.get(kind, "contains"), str(getattr(matcher, kind)), False)
    return HeaderTest(
        name=name,
        source=_PSEUDO.get(name, 0),
        test=test,
        present=present,
        invert=bool(matcher.invert_match),
        missing_as_empty=bool(matcher.treat_missing_header_as_empty),
    )


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
        return self.test is None or bool(self.test(value))


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
        pattern = compile_regex(match.safe_regex.regex, resource, f"{field}.safe_regex")
        return pattern.fullmatch  # type: ignore[return-value]
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
    headers: tuple[HeaderTest, ...]
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
        if route.headers and not all(
            h.matches(headers, method, host, path, query) for h in route.headers
        ):
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
