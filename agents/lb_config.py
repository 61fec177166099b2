"""A cluster's load balancing and outlier detection settings, read from its Envoy ``Cluster``.

:func:`parse_lb` turns the legacy ``lb_policy`` (with its
``*_lb_config``) or the typed ``load_balancing_policy`` list into one
:class:`LbConfig`; :func:`parse_outlier` turns ``outlier_detection`` into an
:class:`OutlierConfig`. Both run when the forwarding table is built, never
per request, and both read only what Envoy would: unset fields get Envoy's
defaults.

``load_balancing_policy`` is an ordered list; like Envoy and gRPC, the agent
takes the first policy it supports and skips the others, so the control plane
can put Pilotfish's own latency-aware policy
(``pilotfish.lb.v1.LatencyAware``, packed directly or in an ``xds.type.v3``
or ``udpa.type.v1`` ``TypedStruct``) first and a policy every proxy knows
second. A list with no supported policy, or a legacy ``lb_policy`` the agent
does not implement, raises :class:`~agents.errors.ConfigRejected`, which
NACKs the update.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, TypeVar

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.load_balancing_policies.least_request.v3 import least_request_pb2
from envoy.extensions.load_balancing_policies.maglev.v3 import maglev_pb2
from envoy.extensions.load_balancing_policies.random.v3 import random_pb2
from envoy.extensions.load_balancing_policies.ring_hash.v3 import ring_hash_pb2
from envoy.extensions.load_balancing_policies.round_robin.v3 import round_robin_pb2
from google.protobuf import any_pb2, duration_pb2, json_format
from udpa.type.v1 import typed_struct_pb2 as udpa_typed_struct_pb2
from xds.type.v3 import typed_struct_pb2

from agents.errors import ConfigRejected
from pilotfish.lb.v1 import latency_aware_pb2

Cluster = cluster_pb2.Cluster

LbKind = Literal["round_robin", "random", "least_request", "ring_hash", "maglev", "latency_aware"]

LATENCY_AWARE_TYPE = "pilotfish.lb.v1.LatencyAware"
DEFAULT_DECAY = 10.0
DEFAULT_MIN_RING = 1024
DEFAULT_MAX_RING = 8 * 1024 * 1024
DEFAULT_MAGLEV_TABLE = 65537


@dataclass(frozen=True, slots=True)
class LbConfig:
    kind: LbKind = "round_robin"
    choice_count: int = 2
    """Least request and latency-aware: candidates compared per pick."""
    active_request_bias: float = 1.0
    """Least request with unequal weights: weight / (outstanding + 1) ** bias."""
    min_ring_size: int = DEFAULT_MIN_RING
    max_ring_size: int = DEFAULT_MAX_RING
    table_size: int = DEFAULT_MAGLEV_TABLE
    """Maglev lookup table size (a prime)."""
    decay: float = DEFAULT_DECAY
    """Latency-aware: time constant of the response time EWMA, in seconds."""
    locality_weighted: bool = False
    """Weigh localities by their ``load_balancing_weight`` first, then endpoints within."""
    panic_threshold: float = 50.0
    """Percent of available endpoints below which all endpoints are used (0 disables)."""


@dataclass(frozen=True, slots=True)
class OutlierConfig:
    """Envoy's consecutive-error outlier detection, with Envoy's defaults; durations in seconds."""

    consecutive_5xx: int = 5
    enforcing_consecutive_5xx: int = 100
    consecutive_gateway_failure: int = 5
    enforcing_consecutive_gateway_failure: int = 0
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejection_percent: int = 10
    always_eject_one_host: bool = False


ROUND_ROBIN = LbConfig()

_LEGACY: dict[int, LbKind] = {
    Cluster.ROUND_ROBIN: "round_robin",
    Cluster.RANDOM: "random",
    Cluster.LEAST_REQUEST: "least_request",
    Cluster.RING_HASH: "ring_hash",
    Cluster.MAGLEV: "maglev",
}


def parse_lb(cluster: cluster_pb2.Cluster) -> LbConfig:
    """The balancer ``cluster`` asks for; :class:`ConfigRejected` if the agent has none."""
    resource = f"Cluster {cluster.name}"
    panic = 50.0
    locality = False
    if cluster.HasField("common_lb_config"):
        common = cluster.common_lb_config
        if common.HasField("healthy_panic_threshold"):
            panic = common.healthy_panic_threshold.value
        locality = common.HasField("locality_weighted_lb_config")
    if cluster.HasField("load_balancing_policy"):
        return _typed_policy(cluster, resource, panic)
    policy = cluster.lb_policy
    if policy == Cluster.CLUSTER_PROVIDED and cluster.type == Cluster.ORIGINAL_DST:
        # An original-destination cluster has no endpoints to balance over.
        return LbConfig(panic_threshold=panic)
    kind = _LEGACY.get(policy)
    if kind is None:
        name = Cluster.LbPolicy.Name(policy) if policy in Cluster.LbPolicy.values() else policy
        raise ConfigRejected(
            resource,
            "lb_policy",
            f"{name} is not supported; use ROUND_ROBIN, RANDOM, LEAST_REQUEST, RING_HASH, "
            "MAGLEV or load_balancing_policy",
        )
    config = LbConfig(kind=kind, panic_threshold=panic, locality_weighted=locality)
    if kind == "least_request" and cluster.HasField("least_request_lb_config"):
        return _least_request(
            config, cluster.least_request_lb_config, resource, "least_request_lb_config"
        )
    if kind == "ring_hash" and cluster.HasField("ring_hash_lb_config"):
        return _ring_hash(config, cluster.ring_hash_lb_config, resource, "ring_hash_lb_config")
    if kind == "maglev" and cluster.HasField("maglev_lb_config"):
        return _maglev(config, cluster.maglev_lb_config, resource, "maglev_lb_config")
    return config


def _typed_policy(cluster: cluster_pb2.Cluster, resource: str, panic: float) -> LbConfig:
    skipped: list[str] = []
    for index, policy in enumerate(cluster.load_balancing_policy.policies):
        extension = policy.typed_extension_config
        field = f"load_balancing_policy.policies[{index}]"
        type_name, value = _unwrap(extension.typed_config, resource, field)
        parser = _TYPED.get(type_name)
        if parser is None:
            skipped.append(type_name or extension.name or "(empty)")
            continue
        return parser(value, LbConfig(panic_threshold=panic), resource, field)
    raise ConfigRejected(
        resource,
        "load_balancing_policy",
        "no supported policy among "
        + (", ".join(skipped) or "none")
        + "; the agent supports round robin, random, least request, ring hash, maglev and "
        + LATENCY_AWARE_TYPE,
    )


def _unwrap(typed: any_pb2.Any, resource: str, field: str) -> tuple[str, any_pb2.Any]:
    """The type name of ``typed``, looking inside a TypedStruct, and an Any of the config."""
    type_name = typed.type_url.rpartition("/")[2]
    struct_type = _TYPED_STRUCTS.get(type_name)
    if struct_type is None:
        return type_name, typed
    wrapper = struct_type()
    typed.Unpack(wrapper)
    inner = wrapper.type_url.rpartition("/")[2]
    message_type = _MESSAGES.get(inner)
    if message_type is None:
        return inner, typed
    message = message_type()
    try:
        # Fields a newer control plane may add are ignored, not NACKed.
        json_format.ParseDict(
            json_format.MessageToDict(wrapper.value), message, ignore_unknown_fields=True
        )
    except json_format.ParseError as exc:
        raise ConfigRejected(resource, f"{field}.typed_config.value", str(exc)) from exc
    packed = any_pb2.Any()
    packed.Pack(message)
    return inner, packed


M = TypeVar(
    "M",
    round_robin_pb2.RoundRobin,
    random_pb2.Random,
    least_request_pb2.LeastRequest,
    ring_hash_pb2.RingHash,
    maglev_pb2.Maglev,
    latency_aware_pb2.LatencyAware,
)


def _unpack(typed: any_pb2.Any, message: M, resource: str, field: str) -> M:
    if not typed.Unpack(message):
        raise ConfigRejected(resource, f"{field}.typed_config", "cannot decode the policy")
    return message


def _round_robin(typed: any_pb2.Any, base: LbConfig, resource: str, field: str) -> LbConfig:
    message = _unpack(typed, round_robin_pb2.RoundRobin(), resource, field)
    return _replace(base, "round_robin", _locality(message))


def _random(typed: any_pb2.Any, base: LbConfig, resource: str, field: str) -> LbConfig:
    message = _unpack(typed, random_pb2.Random(), resource, field)
    return _replace(base, "random", _locality(message))


def _least_request_typed(typed: any_pb2.Any, base: LbConfig, resource: str, field: str) -> LbConfig:
    message = _unpack(typed, least_request_pb2.LeastRequest(), resource, field)
    config = _replace(base, "least_request", _locality(message))
    return _least_request(config, message, resource, f"{field}.typed_config")


def _ring_hash_typed(typed: any_pb2.Any, base: LbConfig, resource: str, field: str) -> LbConfig:
    message = _unpack(typed, ring_hash_pb2.RingHash(), resource, field)
    return _ring_hash(
        _replace(base, "ring_hash", False), message, resource, f"{field}.typed_config"
    )


def _maglev_typed(typed: any_pb2.Any, base: LbConfig, resource: str, field: str) -> LbConfig:
    message = _unpack(typed, maglev_pb2.Maglev(), resource, field)
    return _maglev(_replace(base, "maglev", False), message, resource, f"{field}.typed_config")


def _latency_aware(typed: any_pb2.Any, base: LbConfig, resource: str, field: str) -> LbConfig:
    message = _unpack(typed, latency_aware_pb2.LatencyAware(), resource, field)
    config = _replace(base, "latency_aware", False)
    if message.HasField("decay"):
        decay = _seconds(message.decay)
        if decay <= 0:
            raise ConfigRejected(
                resource, f"{field}.typed_config.decay", f"{decay:g}s is not a positive duration"
            )
        config = replace(config, decay=decay)
    return config


def _least_request(
    config: LbConfig,
    message: cluster_pb2.Cluster.LeastRequestLbConfig | least_request_pb2.LeastRequest,
    resource: str,
    field: str,
) -> LbConfig:
    choices = message.choice_count.value if message.HasField("choice_count") else 2
    if choices < 2:
        raise ConfigRejected(resource, f"{field}.choice_count", f"{choices} is less than 2")
    bias = (
        message.active_request_bias.default_value
        if message.HasField("active_request_bias")
        else 1.0
    )
    if bias < 0:
        raise ConfigRejected(resource, f"{field}.active_request_bias", f"{bias:g} is negative")
    return replace(config, choice_count=choices, active_request_bias=bias)


def _ring_hash(
    config: LbConfig,
    message: cluster_pb2.Cluster.RingHashLbConfig | ring_hash_pb2.RingHash,
    resource: str,
    field: str,
) -> LbConfig:
    low = (
        message.minimum_ring_size.value
        if message.HasField("minimum_ring_size")
        else DEFAULT_MIN_RING
    )
    high = (
        message.maximum_ring_size.value
        if message.HasField("maximum_ring_size")
        else DEFAULT_MAX_RING
    )
    if low < 1 or low > DEFAULT_MAX_RING:
        raise ConfigRejected(
            resource, f"{field}.minimum_ring_size", f"{low} is not 1-{DEFAULT_MAX_RING}"
        )
    if high < low or high > DEFAULT_MAX_RING:
        raise ConfigRejected(
            resource,
            f"{field}.maximum_ring_size",
            f"{high} is not between minimum_ring_size {low} and {DEFAULT_MAX_RING}",
        )
    return replace(config, min_ring_size=low, max_ring_size=high)


def _maglev(
    config: LbConfig,
    message: cluster_pb2.Cluster.MaglevLbConfig | maglev_pb2.Maglev,
    resource: str,
    field: str,
) -> LbConfig:
    size = message.table_size.value if message.HasField("table_size") else DEFAULT_MAGLEV_TABLE
    if size < 2 or not _is_prime(size) or size > 5_000_011:
        raise ConfigRejected(
            resource, f"{field}.table_size", f"{size} is not a prime up to 5000011"
        )
    return replace(config, table_size=size)


def _locality(
    message: round_robin_pb2.RoundRobin | random_pb2.Random | least_request_pb2.LeastRequest,
) -> bool:
    return bool(
        message.HasField("locality_lb_config")
        and message.locality_lb_config.HasField("locality_weighted_lb_config")
    )


def _replace(base: LbConfig, kind: LbKind, locality: bool) -> LbConfig:
    return replace(base, kind=kind, locality_weighted=locality)


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    factor = 3
    while factor * factor <= n:
        if n % factor == 0:
            return False
        factor += 2
    return True


def _seconds(value: duration_pb2.Duration) -> float:
    return float(value.seconds + value.nanos / 1e9)


_TYPED = {
    round_robin_pb2.RoundRobin.DESCRIPTOR.full_name: _round_robin,
    random_pb2.Random.DESCRIPTOR.full_name: _random,
    least_request_pb2.LeastRequest.DESCRIPTOR.full_name: _least_request_typed,
    ring_hash_pb2.RingHash.DESCRIPTOR.full_name: _ring_hash_typed,
    maglev_pb2.Maglev.DESCRIPTOR.full_name: _maglev_typed,
    LATENCY_AWARE_TYPE: _latency_aware,
}

_TYPED_STRUCTS: dict[
    str, type[typed_struct_pb2.TypedStruct] | type[udpa_typed_struct_pb2.TypedStruct]
] = {
    typed_struct_pb2.TypedStruct.DESCRIPTOR.full_name: typed_struct_pb2.TypedStruct,
    udpa_typed_struct_pb2.TypedStruct.DESCRIPTOR.full_name: udpa_typed_struct_pb2.TypedStruct,
}

_MESSAGES = {
    round_robin_pb2.RoundRobin.DESCRIPTOR.full_name: round_robin_pb2.RoundRobin,
    random_pb2.Random.DESCRIPTOR.full_name: random_pb2.Random,
    least_request_pb2.LeastRequest.DESCRIPTOR.full_name: least_request_pb2.LeastRequest,
    ring_hash_pb2.RingHash.DESCRIPTOR.full_name: ring_hash_pb2.RingHash,
    maglev_pb2.Maglev.DESCRIPTOR.full_name: maglev_pb2.Maglev,
    LATENCY_AWARE_TYPE: latency_aware_pb2.LatencyAware,
}


def parse_outlier(cluster: cluster_pb2.Cluster) -> OutlierConfig | None:
    """``cluster``'s outlier detection, or None when it has none."""
    if not cluster.HasField("outlier_detection"):
        return None
    od = cluster.outlier_detection
    resource = f"Cluster {cluster.name}"
    default = OutlierConfig()

    def count(name: str, fallback: int) -> int:
        return int(getattr(od, name).value) if od.HasField(name) else fallback

    def seconds(name: str, fallback: float) -> float:
        if not od.HasField(name):
            return fallback
        value = _seconds(getattr(od, name))
        if value <= 0:
            raise ConfigRejected(
                resource, f"outlier_detection.{name}", f"{value:g}s is not a positive duration"
            )
        return value

    base = seconds("base_ejection_time", default.base_ejection_time)
    config = OutlierConfig(
        consecutive_5xx=count("consecutive_5xx", default.consecutive_5xx),
        enforcing_consecutive_5xx=count(
            "enforcing_consecutive_5xx", default.enforcing_consecutive_5xx
        ),
        consecutive_gateway_failure=count(
            "consecutive_gateway_failure", default.consecutive_gateway_failure
        ),
        enforcing_consecutive_gateway_failure=count(
            "enforcing_consecutive_gateway_failure", default.enforcing_consecutive_gateway_failure
        ),
        interval=seconds("interval", default.interval),
        base_ejection_time=base,
        max_ejection_time=max(seconds("max_ejection_time", default.max_ejection_time), base),
        max_ejection_percent=count("max_ejection_percent", default.max_ejection_percent),
        always_eject_one_host=bool(od.always_eject_one_host.value),
    )
    for name in (
        "enforcing_consecutive_5xx",
        "enforcing_consecutive_gateway_failure",
        "max_ejection_percent",
    ):
        value = getattr(config, name)
        if value > 100:
            raise ConfigRejected(
                resource, f"outlier_detection.{name}", f"{value} is not a percentage 0-100"
            )
    return config
