"""Consistency checks for the Istio/Kubernetes field table in controlplane.config.istio_schema."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from controlplane.config.istio_schema import ENUMS, KINDS, MESSAGES, TOP_LEVEL_FIELDS, FieldSpec

_SCALARS = frozenset(
    {
        "string",
        "bool",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "double",
        "float",
        "duration",
        "struct",
        "int-or-string",
    }
)
_LOWER_CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
# Original proto names that Istio's CRDs accept as alternatives (kubebuilder altName).
_ALT_NAMES = frozenset({("HTTPRoute", "mirror_percent")})


def _all_fields() -> list[tuple[str, str, FieldSpec]]:
    fields = [(msg, name, spec) for msg, body in MESSAGES.items() for name, spec in body.items()]
    fields += [("<top-level>", name, spec) for name, spec in TOP_LEVEL_FIELDS.items()]
    return fields


def _check_type(type_: str) -> str | None:
    """Return a problem description if ``type_`` does not resolve, else None."""
    if type_.startswith("map:"):
        return _check_type(type_.removeprefix("map:"))
    if type_.startswith("message:"):
        name = type_.removeprefix("message:")
        return None if name in MESSAGES else f"unknown message {name!r}"
    if type_.startswith("enum:"):
        name = type_.removeprefix("enum:")
        return None if name in ENUMS else f"unknown enum {name!r}"
    return None if type_ in _SCALARS else f"unknown type {type_!r}"


def test_every_type_reference_resolves() -> None:
    problems = []
    for msg, name, spec in _all_fields():
        problem = _check_type(spec.type)
        if problem:
            problems.append(f"{msg}.{name}: {problem}")
    assert problems == []


def test_field_specs_are_field_specs() -> None:
    for msg, name, spec in _all_fields():
        assert isinstance(spec, FieldSpec), f"{msg}.{name}"
        assert isinstance(spec.repeated, bool), f"{msg}.{name}"


def test_oneof_groups_have_at_least_two_members() -> None:
    for msg, body in MESSAGES.items():
        groups = Counter(spec.oneof for spec in body.values() if spec.oneof is not None)
        for group, count in groups.items():
            assert count >= 2, f"{msg}: oneof {group!r} has a single member"


def test_oneof_members_are_not_repeated_or_maps() -> None:
    for msg, name, spec in _all_fields():
        if spec.oneof is not None:
            assert not spec.repeated, f"{msg}.{name}"
            assert not spec.type.startswith("map:"), f"{msg}.{name}"


def test_field_names_are_lower_camel_case() -> None:
    for msg, name, _spec in _all_fields():
        if (msg, name) in _ALT_NAMES:
            continue
        assert _LOWER_CAMEL.match(name), f"{msg}.{name} is not lowerCamelCase"


def test_enums_are_non_empty_and_unique() -> None:
    for name, values in ENUMS.items():
        assert values, name
        assert len(set(values)) == len(values), name
        assert all(isinstance(v, str) and v for v in values), name


def test_every_message_and_enum_is_reachable() -> None:
    roots = [spec for _versions, spec in KINDS.values()] + ["ObjectMeta"]
    seen_messages: set[str] = set()
    seen_enums: set[str] = set()
    stack = list(roots)
    while stack:
        msg = stack.pop()
        if msg in seen_messages:
            continue
        seen_messages.add(msg)
        for spec in MESSAGES[msg].values():
            type_ = spec.type.removeprefix("map:")
            if type_.startswith("message:"):
                stack.append(type_.removeprefix("message:"))
            elif type_.startswith("enum:"):
                seen_enums.add(type_.removeprefix("enum:"))
    assert set(MESSAGES) - seen_messages == set()
    assert set(ENUMS) - seen_enums == set()


def test_kinds_and_top_level() -> None:
    istio_versions = {
        "networking.istio.io/v1",
        "networking.istio.io/v1beta1",
        "networking.istio.io/v1alpha3",
    }
    for kind in ("VirtualService", "DestinationRule", "Gateway", "ServiceEntry", "WorkloadEntry"):
        versions, spec = KINDS[kind]
        assert set(versions) == istio_versions
        assert spec == kind
    assert KINDS["Service"] == (("v1",), "ServiceSpec")
    for _versions, spec in KINDS.values():
        assert spec in MESSAGES
    assert set(TOP_LEVEL_FIELDS) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert TOP_LEVEL_FIELDS["metadata"].type == "message:ObjectMeta"


@pytest.mark.parametrize(
    ("message", "field", "expected"),
    [
        ("VirtualService", "http", FieldSpec("message:HTTPRoute", repeated=True)),
        ("VirtualService", "exportTo", FieldSpec("string", repeated=True)),
        ("HTTPRoute", "mirrorPercentage", FieldSpec("message:Percent")),
        ("HTTPRoute", "corsPolicy", FieldSpec("message:CorsPolicy")),
        ("HTTPRoute", "timeout", FieldSpec("duration")),
        ("HTTPRetry", "perTryTimeout", FieldSpec("duration")),
        ("HTTPMatchRequest", "port", FieldSpec("uint32")),
        ("HTTPMatchRequest", "ignoreUriCase", FieldSpec("bool")),
        ("HTTPMatchRequest", "withoutHeaders", FieldSpec("map:message:StringMatch")),
        ("HTTPMatchRequest", "queryParams", FieldSpec("map:message:StringMatch")),
        ("StringMatch", "regex", FieldSpec("string", oneof="match_type")),
        ("HTTPFaultInjection.Delay", "percent", FieldSpec("int32")),
        ("HTTPFaultInjection.Delay", "fixedDelay", FieldSpec("duration", oneof="http_delay_type")),
        ("HTTPRedirect", "port", FieldSpec("uint32", oneof="redirect_port")),
        (
            "HTTPRedirect",
            "derivePort",
            FieldSpec("enum:HTTPRedirect.RedirectPortSelection", oneof="redirect_port"),
        ),
        ("HTTPRedirect", "redirectCode", FieldSpec("uint32")),
        ("OutlierDetection", "consecutive5xxErrors", FieldSpec("uint32")),
        ("OutlierDetection", "maxEjectionPercent", FieldSpec("int32")),
        ("ConnectionPoolSettings.HTTPSettings", "http1MaxPendingRequests", FieldSpec("int32")),
        (
            "ConnectionPoolSettings.TCPSettings",
            "tcpKeepalive",
            FieldSpec("message:ConnectionPoolSettings.TCPSettings.TcpKeepalive"),
        ),
        (
            "LoadBalancerSettings",
            "simple",
            FieldSpec("enum:LoadBalancerSettings.SimpleLB", oneof="lb_policy"),
        ),
        (
            "LoadBalancerSettings.ConsistentHashLB",
            "httpCookie",
            FieldSpec("message:LoadBalancerSettings.ConsistentHashLB.HTTPCookie", oneof="hash_key"),
        ),
        (
            "TrafficPolicy",
            "portLevelSettings",
            FieldSpec("message:TrafficPolicy.PortTrafficPolicy", repeated=True),
        ),
        ("ServiceEntry", "resolution", FieldSpec("enum:ServiceEntry.Resolution")),
        ("ServiceEntry", "endpoints", FieldSpec("message:WorkloadEntry", repeated=True)),
        ("WorkloadEntry", "ports", FieldSpec("map:uint32")),
        ("WorkloadEntry", "weight", FieldSpec("uint32")),
        ("Server", "tls", FieldSpec("message:ServerTLSSettings")),
        ("ServiceSpec", "type", FieldSpec("enum:core.v1.ServiceType")),
        ("core.v1.ServicePort", "targetPort", FieldSpec("int-or-string")),
        ("ObjectMeta", "annotations", FieldSpec("map:string")),
    ],
)
def test_spot_check_fields(message: str, field: str, expected: FieldSpec) -> None:
    assert MESSAGES[message][field] == expected


def test_spot_check_enums() -> None:
    assert set(ENUMS["LoadBalancerSettings.SimpleLB"]) == {
        "UNSPECIFIED",
        "RANDOM",
        "PASSTHROUGH",
        "ROUND_ROBIN",
        "LEAST_REQUEST",
        "LEAST_CONN",
    }
    assert set(ENUMS["ServiceEntry.Resolution"]) >= {"NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"}
    assert set(ENUMS["ServiceEntry.Location"]) == {"MESH_EXTERNAL", "MESH_INTERNAL"}
    assert set(ENUMS["ClientTLSSettings.TLSmode"]) == {
        "DISABLE",
        "SIMPLE",
        "MUTUAL",
        "ISTIO_MUTUAL",
    }
    assert "ISTIO_MUTUAL" in ENUMS["ServerTLSSettings.TLSmode"]
    assert set(ENUMS["core.v1.Protocol"]) == {"TCP", "UDP", "SCTP"}


def test_unknown_fields_are_absent() -> None:
    # Fields Istio removed (reserved in the protos) must be rejected as unknown.
    assert "websocketUpgrade" not in MESSAGES["HTTPRoute"]
    assert "appendHeaders" not in MESSAGES["HTTPRoute"]
    assert "name" not in MESSAGES["PortSelector"]
    assert "percent" not in MESSAGES["HTTPFaultInjection.Abort"]
    assert "sourceSubnet" not in MESSAGES["TLSMatchAttributes"]
