"""The structural check: field names, types and enum values against Istio's API.

:func:`check_message` walks a document's plain data alongside the field table
in :mod:`controlplane.config.istio_schema` and reports

* fields Istio's API does not have (``PF110``, an error, with a "did you
  mean" suggestion),
* fields Istio has but Pilotfish does not act on (``PF111``, a warning that
  names them, so real Istio YAML still loads),
* wrong types (``PF112``), bad enum values (``PF114``; ``PF118`` for load
  balancers), malformed durations (``PF116``) and oneof conflicts (``PF120``),
* fields that ask for TLS, which Pilotfish does not implement yet
  (``PF123``, an error, never a warning: ignoring them would carry as
  plaintext what was meant to be encrypted).

``SUPPORTED`` lists, per message, the fields Pilotfish acts on. Below a field
that is not acted on, types are still checked but no further warnings are
given: one warning per ignored subtree is enough.

Almost every document of a large directory is clean, so :func:`is_clean`
answers first whether :func:`check_message` would find anything at all, from
tables compiled once per message (field -> checker, without the fields that
would be warned about or that ask for TLS). It only ever says yes when the
walk would report nothing; at the first thing it is not sure of it says no,
and the caller runs the walk, which produces every finding. Diagnostics come
from one place only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from controlplane.config.durations import duration_error, parse_duration
from controlplane.config.istio_schema import ENUMS, MESSAGES, FieldSpec
from controlplane.config.report import Path, Reporter

_ALL = frozenset({"*"})

SUPPORTED: dict[str, frozenset[str]] = {
    "ObjectMeta": _ALL,
    "meta.v1.OwnerReference": _ALL,
    "meta.v1.ManagedFieldsEntry": _ALL,
    "VirtualService": frozenset({"hosts", "gateways", "http", "tcp", "exportTo"}),
    "HTTPRoute": frozenset(
        {
            "name",
            "match",
            "route",
            "redirect",
            "rewrite",
            "timeout",
            "retries",
            "fault",
            "mirror",
            "mirrorPercentage",
            "headers",
        }
    ),
    "HTTPMatchRequest": frozenset(
        {
            "name",
            "uri",
            "scheme",
            "method",
            "authority",
            "headers",
            "queryParams",
            "port",
            "ignoreUriCase",
            "withoutHeaders",
            "gateways",
        }
    ),
    "StringMatch": frozenset({"exact", "prefix", "regex"}),
    "HTTPRouteDestination": frozenset({"destination", "weight", "headers"}),
    "RouteDestination": frozenset({"destination", "weight"}),
    "Destination": frozenset({"host", "subset", "port"}),
    "PortSelector": frozenset({"number"}),
    "Headers": frozenset({"request", "response"}),
    "Headers.HeaderOperations": frozenset({"set", "add", "remove"}),
    "HTTPRedirect": frozenset({"uri", "authority", "port", "scheme", "redirectCode"}),
    "HTTPRewrite": frozenset({"uri", "authority"}),
    "HTTPRetry": frozenset({"attempts", "perTryTimeout", "retryOn"}),
    "HTTPFaultInjection": frozenset({"delay", "abort"}),
    "HTTPFaultInjection.Delay": frozenset({"fixedDelay", "percentage"}),
    "HTTPFaultInjection.Abort": frozenset({"httpStatus", "grpcStatus", "percentage"}),
    "Percent": frozenset({"value"}),
    "TCPRoute": frozenset({"match", "route"}),
    "L4MatchAttributes": frozenset({"port"}),
    "DestinationRule": frozenset({"host", "trafficPolicy", "subsets", "exportTo"}),
    "TrafficPolicy": frozenset(
        {"loadBalancer", "connectionPool", "outlierDetection", "portLevelSettings"}
    ),
    "TrafficPolicy.PortTrafficPolicy": frozenset(
        {"port", "loadBalancer", "connectionPool", "outlierDetection"}
    ),
    "Subset": frozenset({"name", "labels", "trafficPolicy"}),
    "LoadBalancerSettings": frozenset({"simple", "consistentHash"}),
    "LoadBalancerSettings.ConsistentHashLB": frozenset(
        {
            "httpHeaderName",
            "httpCookie",
            "useSourceIp",
            "httpQueryParameterName",
            "ringHash",
            "maglev",
            "minimumRingSize",
        }
    ),
    "LoadBalancerSettings.ConsistentHashLB.RingHash": frozenset({"minimumRingSize"}),
    "LoadBalancerSettings.ConsistentHashLB.MagLev": frozenset({"tableSize"}),
    "LoadBalancerSettings.ConsistentHashLB.HTTPCookie": frozenset({"name", "path", "ttl"}),
    "ConnectionPoolSettings": frozenset({"tcp", "http"}),
    "ConnectionPoolSettings.TCPSettings": frozenset({"maxConnections", "connectTimeout"}),
    "ConnectionPoolSettings.HTTPSettings": frozenset(
        {
            "http1MaxPendingRequests",
            "http2MaxRequests",
            "maxRequestsPerConnection",
            "maxRetries",
            "idleTimeout",
        }
    ),
    "OutlierDetection": frozenset(
        {
            "consecutive5xxErrors",
            "consecutiveGatewayErrors",
            "interval",
            "baseEjectionTime",
            "maxEjectionPercent",
        }
    ),
    "Gateway": frozenset({"selector", "servers"}),
    "Server": frozenset({"port", "hosts", "tls"}),
    "ServerTLSSettings": frozenset({"httpsRedirect"}),
    "Port": frozenset({"number", "name", "protocol", "targetPort"}),  # targetPort: refused
    "ServiceEntry": frozenset(
        {
            "hosts",
            "addresses",
            "ports",
            "location",
            "resolution",
            "endpoints",
            "workloadSelector",
            "exportTo",
        }
    ),
    "ServicePort": frozenset({"number", "protocol", "name", "targetPort"}),
    "WorkloadEntry": frozenset({"address", "ports", "labels", "weight", "locality"}),
    "WorkloadSelector": frozenset({"labels"}),
    "ServiceSpec": frozenset(
        # Cluster-networking fields mean nothing without kube-proxy; accepting them silently
        # keeps `kubectl get svc -o yaml` output free of noise.
        {
            "ports",
            "selector",
            "type",
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "internalTrafficPolicy",
            "sessionAffinity",
        }
    ),
    "core.v1.ServicePort": frozenset({"name", "protocol", "appProtocol", "port", "targetPort"}),
}

_INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_INT_TEXT = re.compile(r"^-?[0-9]+$")  # protobuf JSON writes 64-bit integers as strings
_TYPE_NAMES = {
    "string": "a string",
    "bool": "true or false",
    "double": "a number",
    "float": "a number",
    "duration": "a duration like 1.5s",
    "int-or-string": "a number or a name",
}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"string {value!r}"
    return f"{type(value).__name__} {value!r}"


def _expected(type_: str) -> str:
    if type_ in _TYPE_NAMES:
        return _TYPE_NAMES[type_]
    if type_ in _INT_RANGES:
        return "a non-negative integer" if type_.startswith("u") else "an integer"
    if type_.startswith("enum:"):
        return "one of " + ", ".join(ENUMS[type_[5:]])
    if type_.startswith(("message:", "map:")):
        return "a mapping"
    return type_


def suggest(name: str, choices: list[str]) -> str:
    lowered = {c.lower(): c for c in choices}
    if name.lower() in lowered:
        return f"; did you mean {lowered[name.lower()]!r}?"
    import difflib  # only for a misspelt field: not imported by a clean load

    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _tls_request(message: str, name: str, value: Any) -> str | None:
    """Why ``message.name`` set to ``value`` asks for TLS, or None when it does not."""
    if name != "tls":
        return None
    if message == "VirtualService":
        return (
            "tls routes (routing TLS connections by SNI) are not supported yet; the "
            "VirtualService is refused rather than its TLS traffic routed another way"
            if value
            else None
        )
    if message in ("TrafficPolicy", "TrafficPolicy.PortTrafficPolicy") and isinstance(value, dict):
        mode = value.get("mode") or "DISABLE"
        return (
            f"TLS to the upstream (mode {mode}) is not supported yet; the policy is refused "
            "rather than its traffic sent as plaintext (set mode: DISABLE only if plaintext "
            "is intended)"
            if mode != "DISABLE"
            else None
        )
    if message == "Server" and isinstance(value, dict):
        asked = sorted(k for k, v in value.items() if k != "httpsRedirect" and v is not None)
        return (
            f"TLS on a gateway server ({', '.join(asked)}) is not supported yet; the server "
            "is refused rather than served as plaintext (only tls.httpsRedirect is supported)"
            if asked
            else None
        )
    return None


def check_message(
    value: Any, message: str, path: Path, report: Reporter, *, warn: bool = True
) -> None:
    """Check a mapping against ``MESSAGES[message]``; report into ``report``."""
    if not isinstance(value, dict):
        report.error("PF112", path, f"expected a mapping, found {_describe(value)}")
        return
    fields = MESSAGES[message]
    supported = SUPPORTED.get(message, frozenset())
    oneofs: dict[str, str] = {}
    for name, item in value.items():
        spec = fields.get(name)
        here = (*path, name)
        if spec is None:
            where = message.rsplit(".", 1)[-1]
            report.error(
                "PF110",
                here,
                f"unknown field {name!r} in {where}{suggest(name, list(fields)) or '; remove it'}",
            )
            continue
        if item is None:
            continue
        if spec.oneof is not None:
            other = oneofs.get(spec.oneof)
            if other is not None:
                report.error(
                    "PF120", here, f"{name!r} and {other!r} exclude each other: set only one"
                )
            oneofs[spec.oneof] = name
        acted_on = supported is _ALL or name in supported
        if (tls := _tls_request(message, name, item)) is not None:
            report.error("PF123", here, tls)
            acted_on = False
        elif warn and not acted_on:
            report.warn(
                "PF111",
                here,
                f"field {name!r} is valid Istio but Pilotfish does not act on it yet; "
                "it is ignored",
            )
        _check_field(item, spec, here, report, warn=warn and acted_on)


def _check_field(value: Any, spec: FieldSpec, path: Path, report: Reporter, *, warn: bool) -> None:
    if spec.repeated:
        if not isinstance(value, list):
            report.error("PF112", path, f"expected a list, found {_describe(value)}")
            return
        for index, item in enumerate(value):
            if item is not None:
                _check_value(item, spec.type, (*path, index), report, warn=warn)
            elif not spec.type.startswith("message:"):
                # An empty item of a message list is an empty message; of a scalar list, a mistake.
                report.error(
                    "PF112", (*path, index), f"expected {_expected(spec.type)}, found null"
                )
        return
    _check_value(value, spec.type, path, report, warn=warn)


def _check_value(value: Any, type_: str, path: Path, report: Reporter, *, warn: bool) -> None:
    if type_ == "string":
        if not isinstance(value, str):
            report.error("PF112", path, f"expected a string, found {_describe(value)}")
    elif type_ in _INT_RANGES:
        low, high = _INT_RANGES[type_]
        if isinstance(value, str) and type_.endswith("64") and _INT_TEXT.match(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            report.error("PF112", path, f"expected {_expected(type_)}, found {_describe(value)}")
        elif not low <= value <= high:
            report.error("PF114", path, f"{value} is out of range for {type_}")
    elif type_ == "bool":
        if not isinstance(value, bool):
            report.error("PF112", path, f"expected true or false, found {_describe(value)}")
    elif type_ in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            report.error("PF112", path, f"expected a number, found {_describe(value)}")
    elif type_ == "duration":
        if not isinstance(value, str):
            report.error(
                "PF116", path, f"expected a duration like 1.5s or 100ms, found {_describe(value)}"
            )
        elif parse_duration(value) is None:
            report.error("PF116", path, duration_error(value))
    elif type_ == "int-or-string":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            report.error("PF112", path, f"expected a number or a name, found {_describe(value)}")
    elif type_ == "struct":
        pass
    elif type_.startswith("enum:"):
        enum_name = type_[5:]
        allowed = ENUMS[enum_name]
        if value not in allowed:
            code = "PF118" if enum_name == "LoadBalancerSettings.SimpleLB" else "PF114"
            report.error(
                code,
                path,
                f"{_describe(value)} is not one of {', '.join(allowed)}"
                f"{suggest(str(value), list(allowed))}",
            )
    elif type_.startswith("message:"):
        check_message(value, type_[8:], path, report, warn=warn)
    elif type_.startswith("map:"):
        if not isinstance(value, dict):
            report.error("PF112", path, f"expected a mapping, found {_describe(value)}")
            return
        inner = type_[4:]
        for key, item in value.items():
            if item is not None or inner == "string":
                _check_value(item, inner, (*path, key), report, warn=warn)
    else:  # pragma: no cover - the table is closed, see tests/config/test_istio_schema.py
        raise AssertionError(f"unknown schema type {type_!r}")


# The clean check: one table per message, compiled from MESSAGES and SUPPORTED.
# A field's entry is (checker, argument, list kind); a checker says whether a
# value would pass _check_value without a finding.
_SINGLE, _MESSAGE_LIST, _SCALAR_LIST = 0, 1, 2
_Checker = Callable[[Any, Any], bool]
_Entry = tuple[_Checker, Any, int]


class _CleanMessage:
    """What :func:`is_clean` needs of one message: its checked fields and oneof groups."""

    __slots__ = ("fields", "oneofs")

    def __init__(self) -> None:
        self.fields: dict[str, _Entry] = {}
        self.oneofs: tuple[tuple[str, ...], ...] = ()


def _clean_string(value: Any, _: Any) -> bool:
    return type(value) is str


def _clean_int(value: Any, bounds: tuple[int, int, bool]) -> bool:
    low, high, text_ok = bounds
    number: int
    if type(value) is int:
        number = value
    elif text_ok and type(value) is str and _INT_TEXT.match(value):
        number = int(value)
    else:
        return False
    return low <= number <= high


def _clean_bool(value: Any, _: Any) -> bool:
    return type(value) is bool


def _clean_number(value: Any, _: Any) -> bool:
    return type(value) is float or type(value) is int


def _clean_duration(value: Any, _: Any) -> bool:
    return type(value) is str and parse_duration(value) is not None


def _clean_int_or_string(value: Any, _: Any) -> bool:
    return type(value) is int or type(value) is str


def _clean_struct(value: Any, _: Any) -> bool:
    return True


def _clean_enum(value: Any, allowed: frozenset[str]) -> bool:
    return type(value) is str and value in allowed


def _clean_map(value: Any, inner: tuple[_Checker, Any, bool]) -> bool:
    if type(value) is not dict:
        return False
    check, argument, none_checked = inner
    if check is _clean_string:  # map:string (labels, annotations): no call per item
        for item in value.values():  # noqa: SIM110 - a loop, cheaper than all() of a generator
            if type(item) is not str:
                return False
        return True
    for item in value.values():
        if item is None:
            if none_checked:
                return False
        elif not check(item, argument):
            return False
    return True


def _clean_message(value: Any, message: _CleanMessage) -> bool:
    if type(value) is not dict:
        return False
    fields = message.fields
    for name, item in value.items():
        entry = fields.get(name)
        if entry is _STRING_FIELD:
            # Strings are most fields: checked here rather than by a call.
            if type(item) is not str and item is not None:
                return False
        elif entry is None:
            return False
        elif item is not None:
            check, argument, kind = entry
            if kind == _SINGLE:
                if not check(item, argument):
                    return False
            elif type(item) is not list:
                return False
            else:
                for element in item:
                    if element is None:
                        if kind == _SCALAR_LIST:
                            return False
                    elif not check(element, argument):
                        return False
    oneofs = message.oneofs
    if not oneofs or len(value) < 2:
        return True  # two fields of a oneof need two keys
    for group in oneofs:
        chosen = 0
        for name in group:
            if value.get(name) is not None:
                chosen += 1
        if chosen > 1:
            return False
    return True


# The entry of every single string field: one object, recognised by identity.
_STRING_FIELD: _Entry = (_clean_string, None, _SINGLE)

_SCALAR_CHECKS: dict[str, tuple[_Checker, Any]] = {
    "string": (_clean_string, None),
    "bool": (_clean_bool, None),
    "double": (_clean_number, None),
    "float": (_clean_number, None),
    "duration": (_clean_duration, None),
    "int-or-string": (_clean_int_or_string, None),
    "struct": (_clean_struct, None),
    **{
        name: (_clean_int, (low, high, name.endswith("64")))
        for name, (low, high) in _INT_RANGES.items()
    },
}


def _compile_type(type_: str, tables: dict[str, _CleanMessage]) -> tuple[_Checker, Any]:
    if type_ in _SCALAR_CHECKS:
        return _SCALAR_CHECKS[type_]
    if type_.startswith("enum:"):
        return _clean_enum, frozenset(ENUMS[type_[5:]])
    if type_.startswith("message:"):
        return _clean_message, tables[type_[8:]]
    if type_.startswith("map:"):
        inner = type_[4:]
        return _clean_map, (*_compile_type(inner, tables), inner == "string")
    raise AssertionError(f"unknown schema type {type_!r}")  # pragma: no cover


def _compile_tables() -> dict[str, _CleanMessage]:
    tables = {message: _CleanMessage() for message in MESSAGES}
    for message, fields in MESSAGES.items():
        table = tables[message]
        supported = SUPPORTED.get(message, frozenset())
        for name, spec in fields.items():
            # Left out, so that is_clean says no: fields that would be warned about, and
            # the one field name whose value can ask for TLS.
            if name == "tls" or not (supported is _ALL or name in supported):
                continue
            check, argument = _compile_type(spec.type, tables)
            kind = _SINGLE
            if spec.repeated:
                kind = _MESSAGE_LIST if spec.type.startswith("message:") else _SCALAR_LIST
            entry = (check, argument, kind)
            table.fields[name] = _STRING_FIELD if entry == _STRING_FIELD else entry
        groups: dict[str, list[str]] = {}
        for name, spec in fields.items():
            if spec.oneof is not None:
                groups.setdefault(spec.oneof, []).append(name)
        table.oneofs = tuple(tuple(names) for names in groups.values())
    return tables


_CLEAN_TABLES = _compile_tables()


def is_clean(value: Any, message: str) -> bool:
    """Whether ``check_message(value, message, ...)`` (with warnings) would report nothing.

    False means "not sure": the caller runs :func:`check_message` for the findings.
    """
    return _clean_message(value, _CLEAN_TABLES[message])


CleanTable = _CleanMessage
is_clean_by: Callable[[Any, CleanTable], bool] = _clean_message
"""``is_clean_by(value, clean_table(message))`` is ``is_clean(value, message)``, one lookup less."""


def clean_table(message: str) -> CleanTable:
    """The compiled table of ``message`` that :func:`is_clean_by` checks against."""
    return _CLEAN_TABLES[message]
