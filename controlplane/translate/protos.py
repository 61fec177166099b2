"""Small constructors for the protobuf value types every resource builder uses.

Durations, wrapped integers, fractional percentages and ``Any`` packing
appear in clusters, routes and listeners alike; building them in one place
keeps the conversions (Istio percentages are floats, Envoy wants parts per
million) identical everywhere.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from envoy.config.core.v3 import config_source_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2

Message = Any
"""A protobuf message; the generated Envoy modules carry no static types."""


def duration(value: timedelta) -> Message:
    result = duration_pb2.Duration()
    result.FromTimedelta(value)
    return result


def uint32(value: int) -> Message:
    return wrappers_pb2.UInt32Value(value=value)


def fraction(percentage: float) -> Message:
    """Istio's float percentage as parts per million, clamped to [0, 100] %."""
    clamped = min(max(percentage, 0.0), 100.0)
    return percent_pb2.FractionalPercent(
        numerator=round(clamped * 10_000),
        denominator=percent_pb2.FractionalPercent.MILLION,
    )


def pack(message: Message) -> Message:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def ads() -> Message:
    """A config source saying "over the same ADS stream", in the v3 API."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )
