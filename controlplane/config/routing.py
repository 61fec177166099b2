"""VirtualService documents -> :class:`controlplane.model.VirtualService`.

The schema check has already vetted field names and types; this module
checks what a schema cannot (regexes compile, weights do not sum to 0, a rule
has exactly one action) and expands hosts to FQDNs in the resource's namespace.

Weights are relative, as in Istio: a destination gets its weight divided by
the sum of the rule's weights, an unset weight is 0, and a rule with a single
destination sends it everything whatever its weight. Only several
destinations whose weights sum to 0 (nothing could be sent anywhere) or to
more than Envoy's total allows are an error (``PF117``).
"""

from __future__ import annotations

import functools
import re
from typing import Any

from controlplane.config.durations import duration_error, parse_duration
from controlplane.config.report import Path, Reporter
from controlplane.config.resources import slot_constructor
from controlplane.config.visibility import export_to
from controlplane.config.yamlsource import share
from controlplane.model import (
    EXPORTED_EVERYWHERE,
    Abort,
    Delay,
    Fault,
    HeaderOperations,
    HttpMatch,
    HttpRoute,
    Redirect,
    Retries,
    Rewrite,
    RouteDestination,
    StringMatch,
    StringMatchKind,
    TcpMatch,
    TcpRoute,
    VirtualService,
    fqdn,
)

REDIRECT_CODES = (301, 302, 303, 307, 308)
MAX_TOTAL_WEIGHT = 2**32 - 1  # Envoy sums weighted clusters into a uint32
REGEX_CACHE_SIZE = 4096
"""Patterns whose verdict :func:`regex_error` remembers: a directory repeats a few; many
distinct ones (generated routes) must not grow the cache without end."""


@functools.lru_cache(maxsize=REGEX_CACHE_SIZE)
def regex_error(pattern: str) -> str | None:
    """Why ``pattern`` is not a usable (RE2-compatible) regex, or None when it is."""
    unescaped = re.sub(r"\\\D", "", pattern)  # an escaped character is a literal
    if re.search(r"\(\?[=!<]|\\[1-9]", pattern):
        return "lookaround and backreferences are not supported by Envoy's RE2 engine"
    if re.search(r"\(\?>|\(\?\(|\(\?P=|[*+?}]\+", unescaped):
        return (
            "atomic groups, possessive quantifiers, conditionals and named backreferences "
            "are not supported by Envoy's RE2 engine"
        )
    try:
        re.compile(pattern)
    except (re.error, OverflowError) as exc:
        return str(exc)
    except RecursionError:
        return "the pattern is nested too deeply"
    return None


def string_match(value: dict[str, Any], path: Path, report: Reporter) -> StringMatch | None:
    present = [k for k in ("exact", "prefix", "regex") if value.get(k) is not None]
    if not present:
        report.error("PF113", path, "a string match needs one of exact, prefix or regex")
        return None
    kind = present[0]
    text = value[kind]
    if kind == "regex":
        problem = regex_error(text)
        if problem:
            report.error("PF115", (*path, "regex"), f"invalid regex {text!r}: {problem}")
            return None
    return StringMatch(StringMatchKind(kind), text)


def _match_map(
    value: dict[str, Any] | None, path: Path, report: Reporter, *, lower: bool
) -> tuple[tuple[str, StringMatch], ...]:
    out: list[tuple[str, StringMatch]] = []
    for name, match in sorted((value or {}).items()):
        parsed = string_match(match or {}, (*path, name), report)
        if parsed is not None:
            out.append((name.lower() if lower else name, parsed))
    return tuple(out)


_NO_HEADER_OPERATIONS = HeaderOperations()


def header_operations(value: dict[str, Any] | None) -> HeaderOperations:
    if not value:
        return _NO_HEADER_OPERATIONS
    return HeaderOperations(
        set=tuple(sorted((k.lower(), str(v)) for k, v in (value.get("set") or {}).items())),
        add=tuple(sorted((k.lower(), str(v)) for k, v in (value.get("add") or {}).items())),
        remove=tuple(h.lower() for h in value.get("remove") or ()),
    )


def _percent(value: dict[str, Any] | None, path: Path, report: Reporter) -> float | None:
    if value is None:
        return None
    number = float(value.get("value") or 0.0)
    if not 0.0 <= number <= 100.0:
        report.error("PF114", (*path, "value"), f"a percentage must be 0 to 100, not {number}")
        return None
    return number


def _duration(value: str | None, path: Path, report: Reporter) -> Any:
    if value is None:
        return None
    parsed = parse_duration(value)
    if parsed is None:
        report.error("PF116", path, duration_error(value))
    return parsed


def _destination(
    value: dict[str, Any] | None, path: Path, namespace: str, report: Reporter
) -> tuple[str, str | None, int | None] | None:
    if not value or not value.get("host"):
        report.error("PF113", (*path, "host"), "a destination needs a host")
        return None
    port = (value.get("port") or {}).get("number")
    if port is not None and not 1 <= port <= 65535:
        report.error("PF114", (*path, "port", "number"), f"port {port} is not 1-65535")
    return fqdn(value["host"], namespace), value.get("subset") or None, port


_new_route_destination = slot_constructor(RouteDestination)


def _route_destination(
    dest: tuple[str, str | None, int | None], weight: int, headers: dict[str, Any] | None
) -> RouteDestination:
    if not headers:
        return _new_route_destination(
            dest[0], dest[1], dest[2], weight, _NO_HEADER_OPERATIONS, _NO_HEADER_OPERATIONS
        )
    return _new_route_destination(
        dest[0],
        dest[1],
        dest[2],
        weight,
        header_operations(headers.get("request")),
        header_operations(headers.get("response")),
    )


def _weighted(
    routes: list[dict[str, Any]], path: Path, namespace: str, report: Reporter
) -> tuple[RouteDestination, ...]:
    out: list[RouteDestination] = []
    total = 0
    for index, item in enumerate(routes):
        item = item or {}
        dest = _destination(
            item.get("destination"), (*path, index, "destination"), namespace, report
        )
        weight = item.get("weight")
        if weight is None:
            weight = 100 if len(routes) == 1 else 0
        if weight < 0:
            report.error("PF114", (*path, index, "weight"), "a weight cannot be negative")
        total += weight
        if dest is None:
            continue
        out.append(_route_destination(dest, weight, item.get("headers") or {}))
    if len(routes) > 1 and not 0 < total <= MAX_TOTAL_WEIGHT:
        weights = ", ".join(str((r or {}).get("weight", "unset")) for r in routes)
        fix = (
            "give at least one destination a weight above 0"
            if total <= 0
            else f"keep the sum at most {MAX_TOTAL_WEIGHT}"
        )
        report.error(
            "PF117",
            path,
            f"route weights sum to {total} ({weights}); weights are relative, {fix}",
        )
    return tuple(out)


def _http_match(value: dict[str, Any], path: Path, namespace: str, report: Reporter) -> HttpMatch:
    def single(key: str) -> StringMatch | None:
        item = value.get(key)
        return string_match(item, (*path, key), report) if item is not None else None

    without: list[tuple[str, StringMatch | None]] = []
    for name, match in sorted((value.get("withoutHeaders") or {}).items()):
        parsed = string_match(match, (*path, "withoutHeaders", name), report) if match else None
        without.append((name.lower(), parsed))
    port = value.get("port")
    if port is not None and not 1 <= port <= 65535:
        report.error("PF114", (*path, "port"), f"port {port} is not 1-65535")
    return HttpMatch(
        name=value.get("name") or "",
        uri=single("uri"),
        scheme=single("scheme"),
        method=single("method"),
        authority=single("authority"),
        headers=_match_map(value.get("headers"), (*path, "headers"), report, lower=True),
        without_headers=tuple(without),
        query_params=_match_map(
            value.get("queryParams"), (*path, "queryParams"), report, lower=False
        ),
        port=port,
        ignore_uri_case=bool(value.get("ignoreUriCase")),
        gateways=tuple(_gateway_ref(g, namespace) for g in value.get("gateways") or ()),
    )


def _redirect(value: dict[str, Any], path: Path, report: Reporter) -> Redirect:
    code = value.get("redirectCode") or 301
    port = value.get("port")
    if port is not None and not 1 <= port <= 65535:
        report.error("PF114", (*path, "port"), f"port {port} is not 1-65535")
    if code not in REDIRECT_CODES:
        report.error(
            "PF114",
            (*path, "redirectCode"),
            f"redirectCode {code} is not one of {', '.join(map(str, REDIRECT_CODES))}",
        )
    return Redirect(
        uri=value.get("uri"),
        authority=value.get("authority"),
        port=port,
        scheme=value.get("scheme"),
        redirect_code=code,
    )


def _fault(value: dict[str, Any], path: Path, report: Reporter) -> Fault:
    delay = abort = None
    if (d := value.get("delay")) is not None:
        fixed = _duration(d.get("fixedDelay"), (*path, "delay", "fixedDelay"), report)
        if d.get("fixedDelay") is None:
            report.error("PF113", (*path, "delay", "fixedDelay"), "a delay needs fixedDelay")
        pct = _percent(d.get("percentage"), (*path, "delay", "percentage"), report)
        if fixed is not None:
            delay = Delay(fixed, 100.0 if pct is None else pct)
    if (a := value.get("abort")) is not None:
        status, grpc = a.get("httpStatus"), a.get("grpcStatus")
        if status is None and grpc is None:
            report.error("PF113", (*path, "abort"), "an abort needs httpStatus or grpcStatus")
        if status is not None and not 200 <= status <= 599:
            report.error(
                "PF114", (*path, "abort", "httpStatus"), f"HTTP status {status} is not 200-599"
            )
        pct = _percent(a.get("percentage"), (*path, "abort", "percentage"), report)
        abort = Abort(status, grpc, 100.0 if pct is None else pct)
    if delay is None and abort is None and not report.failed:
        report.error("PF113", path, "a fault needs a delay or an abort")
    return Fault(delay, abort)


def _http_route(
    value: dict[str, Any], path: Path, namespace: str, report: Reporter
) -> HttpRoute | None:
    routes, redirect = value.get("route"), value.get("redirect")
    if routes and redirect is not None:
        report.error("PF120", (*path, "redirect"), "a rule has either route or redirect, not both")
    if not routes and redirect is None:
        if value.get("directResponse") is not None or value.get("delegate") is not None:
            return None
        report.error("PF113", (*path, "route"), "a rule needs a route (or a redirect)")
    if redirect is not None and value.get("rewrite") is not None:
        report.error("PF120", (*path, "rewrite"), "a redirect rule cannot also rewrite")
    retries = None
    if (r := value.get("retries")) is not None:
        attempts = r.get("attempts") or 0
        if attempts < 0:
            report.error("PF114", (*path, "retries", "attempts"), "attempts cannot be negative")
        retry_on = tuple(p.strip() for p in (r.get("retryOn") or "").split(",") if p.strip())
        retries = Retries(
            attempts=attempts,
            per_try_timeout=_duration(
                r.get("perTryTimeout"), (*path, "retries", "perTryTimeout"), report
            ),
            retry_on=retry_on,
        )
    mirror = None
    if (m := value.get("mirror")) is not None:
        dest = _destination(m, (*path, "mirror"), namespace, report)
        if dest is not None:
            mirror = RouteDestination(host=dest[0], subset=dest[1], port=dest[2])
    rewrite = None
    if (rw := value.get("rewrite")) is not None:
        rewrite = Rewrite(uri=rw.get("uri"), authority=rw.get("authority"))
    headers = value.get("headers") or {}
    return HttpRoute(
        name=value.get("name") or "",
        matches=tuple(
            _http_match(m or {}, (*path, "match", i), namespace, report)
            for i, m in enumerate(value.get("match") or ())
        ),
        destinations=_weighted(routes or [], (*path, "route"), namespace, report),
        redirect=_redirect(redirect, (*path, "redirect"), report) if redirect is not None else None,
        rewrite=rewrite,
        timeout=_duration(value.get("timeout"), (*path, "timeout"), report),
        retries=retries,
        fault=_fault(value["fault"], (*path, "fault"), report) if value.get("fault") else None,
        mirror=mirror,
        mirror_percentage=_percent(
            value.get("mirrorPercentage"), (*path, "mirrorPercentage"), report
        ),
        request_headers=header_operations(headers.get("request")),
        response_headers=header_operations(headers.get("response")),
    )


def _gateway_ref(name: str, namespace: str) -> str:
    return name if name == "mesh" or "/" in name else f"{namespace}/{name}"


def virtual_service(
    spec: dict[str, Any], namespace: str, name: str, report: Reporter
) -> VirtualService:
    hosts = spec.get("hosts") or []
    if not hosts:
        report.error("PF113", ("spec", "hosts"), "a VirtualService needs at least one host")
    gateways = tuple(_gateway_ref(g, namespace) for g in spec.get("gateways") or ()) or ("mesh",)
    seen: dict[str, int] = {}
    for index, host in enumerate(hosts):
        expanded = fqdn(host, namespace) if isinstance(host, str) else host
        if expanded in seen:
            report.error(
                "PF114",
                ("spec", "hosts", index),
                f"host {host!r} is listed twice (also spec.hosts[{seen[expanded]}]); remove one",
            )
        seen.setdefault(expanded, index)
        if host == "*" and "mesh" in gateways:
            report.error(
                "PF114", ("spec", "hosts", index), "host '*' is only allowed for gateways, not mesh"
            )
    http: list[HttpRoute] = []
    for index, rule in enumerate(spec.get("http") or ()):
        route = _http_route(rule or {}, ("spec", "http", index), namespace, report)
        if route is not None:
            http.append(route)
    tcp: list[TcpRoute] = []
    for index, rule in enumerate(spec.get("tcp") or ()):
        path: Path = ("spec", "tcp", index)
        rule = rule or {}
        if not rule.get("route"):
            report.error("PF113", (*path, "route"), "a tcp rule needs a route")
        for i, m in enumerate(rule.get("match") or ()):
            port = (m or {}).get("port")
            if port is not None and not 1 <= port <= 65535:
                report.error("PF114", (*path, "match", i, "port"), f"port {port} is not 1-65535")
        matches = tuple(
            TcpMatch(
                port=m.get("port"),
                destination_subnets=tuple(m.get("destinationSubnets") or ()),
                source_labels=tuple(sorted((m.get("sourceLabels") or {}).items())),
                gateways=tuple(_gateway_ref(g, namespace) for g in m.get("gateways") or ()),
            )
            for m in (rule.get("match") or ())
            if m is not None
        )
        tcp.append(
            TcpRoute(
                matches, _weighted(rule.get("route") or [], (*path, "route"), namespace, report)
            )
        )
    return VirtualService(
        namespace=namespace,
        name=name,
        hosts=tuple(fqdn(h, namespace) for h in hosts),
        gateways=gateways,
        http=tuple(http),
        tcp=tuple(tcp),
        export_to=export_to(
            spec.get("exportTo") or (), namespace, ("spec", "exportTo"), report, allow_nobody=False
        ),
    )


# The common case in one pass. Each clean_* function below returns what its
# counterpart above returns for a value the schema check passed, when that
# counterpart would report nothing; on anything else (or anything rare: tcp
# routes, redirects, faults, exportTo) it returns None, "not sure", and the
# caller converts with the functions above, which report.

_MATCH_KINDS = {kind.value: kind for kind in StringMatchKind}
_new_virtual_service = slot_constructor(VirtualService)
_new_http_route = slot_constructor(HttpRoute)
_new_http_match = slot_constructor(HttpMatch)
_new_string_match = slot_constructor(StringMatch)
_new_retries = slot_constructor(Retries)
_new_rewrite = slot_constructor(Rewrite)


def clean_virtual_service(spec: dict[str, Any], namespace: str, name: str) -> VirtualService | None:
    """:func:`virtual_service` of a spec it would report nothing about, else None."""
    hosts = spec.get("hosts")
    if not hosts or spec.get("tcp") or spec.get("exportTo"):
        return None
    gateways = spec.get("gateways")
    gateways = tuple([_gateway_ref(g, namespace) for g in gateways]) if gateways else ("mesh",)
    expanded = tuple([share(fqdn(host, namespace)) for host in hosts])
    if len(expanded) > 1 and len(set(expanded)) != len(expanded):
        return None
    if "*" in hosts and "mesh" in gateways:
        return None
    http: list[HttpRoute] = []
    for rule in spec.get("http") or ():
        route = _clean_http_route(rule, namespace) if rule else None
        if route is None:
            return None
        http.append(route)
    return _new_virtual_service(
        namespace, name, expanded, gateways, tuple(http), (), EXPORTED_EVERYWHERE
    )


def _clean_http_route(value: dict[str, Any], namespace: str) -> HttpRoute | None:
    get = value.get
    routes = get("route")
    if not routes or get("redirect") is not None or get("fault"):
        return None
    destinations = _clean_weighted(routes, namespace)
    if destinations is None:
        return None
    matches: tuple[HttpMatch, ...] = ()
    if match_items := get("match"):
        found: list[HttpMatch] = []
        for item in match_items:
            match = _clean_http_match(item or {}, namespace)
            if match is None:
                return None
            found.append(match)
        matches = tuple(found)
    retries = None
    if (r := get("retries")) is not None:
        attempts = r.get("attempts") or 0
        per_try_timeout = r.get("perTryTimeout")
        if (
            per_try_timeout is not None
            and (per_try_timeout := parse_duration(per_try_timeout)) is None
        ):
            return None
        if attempts < 0:
            return None
        retry_on = tuple([p.strip() for p in (r.get("retryOn") or "").split(",") if p.strip()])
        retries = _new_retries(attempts, per_try_timeout, retry_on)
    mirror = None
    if (m := get("mirror")) is not None:
        dest = _clean_destination(m, namespace)
        if dest is None:
            return None
        mirror = RouteDestination(host=dest[0], subset=dest[1], port=dest[2])
    rewrite = None
    if (rw := get("rewrite")) is not None:
        rewrite = _new_rewrite(rw.get("uri"), rw.get("authority"))
    timeout = get("timeout")
    if timeout is not None and (timeout := parse_duration(timeout)) is None:
        return None
    mirror_percentage = None
    if (percent := get("mirrorPercentage")) is not None:
        mirror_percentage = float(percent.get("value") or 0.0)
        if not 0.0 <= mirror_percentage <= 100.0:
            return None
    headers = get("headers")
    return _new_http_route(
        get("name") or "",
        matches,
        destinations,
        None,
        rewrite,
        timeout,
        retries,
        None,
        mirror,
        mirror_percentage,
        header_operations(headers.get("request")) if headers else _NO_HEADER_OPERATIONS,
        header_operations(headers.get("response")) if headers else _NO_HEADER_OPERATIONS,
    )


def _clean_weighted(
    routes: list[dict[str, Any]], namespace: str
) -> tuple[RouteDestination, ...] | None:
    out: list[RouteDestination] = []
    total = 0
    single = len(routes) == 1
    for item in routes:
        dest = _clean_destination(item.get("destination"), namespace) if item else None
        if dest is None:
            return None
        weight = item.get("weight")
        if weight is None:
            weight = 100 if single else 0
        elif weight < 0:
            return None
        total += weight
        out.append(_route_destination(dest, weight, item.get("headers")))
    if not single and not 0 < total <= MAX_TOTAL_WEIGHT:
        return None
    return tuple(out)


def _clean_destination(
    value: dict[str, Any] | None, namespace: str
) -> tuple[str, str | None, int | None] | None:
    if not value:
        return None
    host = value.get("host")
    if not host:
        return None
    port = value.get("port")
    if port is not None and (port := port.get("number")) is not None and not 1 <= port <= 65535:
        return None
    subset = value.get("subset")
    return share(fqdn(host, namespace)), share(subset) if subset else None, port


def _clean_http_match(value: dict[str, Any], namespace: str) -> HttpMatch | None:
    get = value.get
    uri, scheme, method, authority = get("uri"), get("scheme"), get("method"), get("authority")
    if uri is not None and (uri := _clean_string_match(uri)) is None:
        return None
    if scheme is not None and (scheme := _clean_string_match(scheme)) is None:
        return None
    if method is not None and (method := _clean_string_match(method)) is None:
        return None
    if authority is not None and (authority := _clean_string_match(authority)) is None:
        return None
    headers = _clean_match_map(get("headers"), lower=True)
    query_params = _clean_match_map(get("queryParams"), lower=False)
    if headers is None or query_params is None:
        return None
    without: list[tuple[str, StringMatch | None]] = []
    for header, match in sorted((get("withoutHeaders") or {}).items()):
        parsed = _clean_string_match(match) if match else None
        if match and parsed is None:
            return None
        without.append((share(header.lower()), parsed))
    port = get("port")
    if port is not None and not 1 <= port <= 65535:
        return None
    gateways = get("gateways")
    return _new_http_match(
        get("name") or "",
        uri,
        scheme,
        method,
        authority,
        headers,
        tuple(without),
        query_params,
        port,
        bool(get("ignoreUriCase")),
        tuple([_gateway_ref(g, namespace) for g in gateways]) if gateways else (),
    )


def _clean_match_map(
    value: dict[str, Any] | None, *, lower: bool
) -> tuple[tuple[str, StringMatch], ...] | None:
    if not value:
        return ()
    out: list[tuple[str, StringMatch]] = []
    for name, match in sorted(value.items()):
        parsed = _clean_string_match(match) if match else None
        if parsed is None:
            return None
        out.append((share(name.lower() if lower else name), parsed))
    return tuple(out)


def _clean_string_match(value: dict[str, Any]) -> StringMatch | None:
    for kind in ("exact", "prefix", "regex"):
        text = value.get(kind)
        if text is not None:
            if kind == "regex" and regex_error(text) is not None:
                return None
            return _new_string_match(_MATCH_KINDS[kind], share(text))
    return None
