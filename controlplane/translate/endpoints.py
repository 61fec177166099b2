"""Load assignments: the hosts of a cluster, grouped by locality.

EDS clusters get their hosts from a ``ClusterLoadAssignment`` named after the
cluster; DNS clusters carry the same structure inline. Endpoints are grouped
into one ``LocalityLbEndpoints`` per locality (sorted by region, zone,
subzone; the unknown locality is an empty ``Locality`` message, never left
unset, so that the output has one shape), each endpoint carries its weight
(at least 1: Envoy rejects 0) and each group the sum of its endpoints'
weights, so that locality-weighted balancing, when enabled, splits traffic in
proportion to capacity.

An EDS host must be an IP address: Envoy rejects the whole update on a name,
so endpoints whose address does not parse as an IP are left out of EDS
clusters (DNS clusters are where names belong).

Assignments are the most numerous resources, rebuilt on every endpoint
change, and their shape is fixed, so they are written straight to bytes
(:func:`assignment_bytes`): exactly what protobuf's deterministic
serialization of the message writes, fields in number order. An EDS
assignment leaves as a :class:`~controlplane.translate.wire.Serialized`
resource; where a message is needed (a DNS cluster's inline assignment,
proxyless gRPC, :func:`build_load_assignments`) it is parsed from those
bytes, which costs less than building it field by field and leaves one
writer of the format. Most endpoints need one formatting each: with an
address under 100 bytes and a weight under 128, every nested length fits
one byte.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from itertools import groupby
from operator import attrgetter

from envoy.config.endpoint.v3 import endpoint_pb2

from controlplane.model import Endpoint, Mesh
from controlplane.translate.protos import Message
from controlplane.translate.upstreams import Discovery, Upstream, upstreams
from controlplane.translate.wire import Serialized, encode_varint, length_delimited, string_field

ENDPOINT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def load_assignment(cluster: str, endpoints: Iterable[Endpoint]) -> Message:
    """The assignment of ``cluster`` to ``endpoints``, as a message (parsed from its bytes)."""
    return endpoint_pb2.ClusterLoadAssignment.FromString(assignment_bytes(cluster, endpoints))


def assignment_bytes(cluster: str, endpoints: Iterable[Endpoint]) -> bytes:
    """The deterministic serialization of the assignment of ``cluster`` to ``endpoints``."""
    head = string_field(b"\x0a", cluster)
    chosen = list(endpoints)
    if not chosen:
        return head
    locality = chosen[0].locality
    for endpoint in chosen:
        if endpoint.locality is not locality:
            break
    else:
        # One locality object, the common case: sorted by address and port alone.
        ordered = sorted(chosen, key=_address_and_port)
        return head + _group(_locality_of(ordered[0]), ordered)
    groups = groupby(sorted(chosen, key=_order), key=_locality_of)
    return head + b"".join([_group(locality, list(group)) for locality, group in groups])


def _group(locality: tuple[str, str, str], endpoints: list[Endpoint]) -> bytes:
    """One ``LocalityLbEndpoints`` as a field of ``ClusterLoadAssignment``."""
    parts = [_locality_field(locality)]
    append = parts.append
    total = 0
    for endpoint in endpoints:
        weight = endpoint.weight
        if weight < 1:
            weight = 1  # Envoy rejects 0
        total += weight
        host = endpoint.address.encode()
        size = len(host)
        # port_value is in a oneof: present, so written, even when 0.
        port = _port_value(endpoint.port)
        if 0 < size < _SHORT and weight < 0x80:
            # Every length fits one byte: one formatting writes the five nested messages.
            socket = size + 3 + len(port)
            append(
                _SHORT_LB_ENDPOINT
                % (socket + 10, socket + 4, socket + 2, socket, size, host, port, weight)
            )
        else:
            append(_lb_endpoint(endpoint.address, port, weight))
    append(_weight(b"\x1a", total))
    return length_delimited(b"\x12", b"".join(parts))


def _lb_endpoint(address: str, port: bytes, weight: int) -> bytes:
    """``LbEndpoint{endpoint{address{socket_address{address, port_value}}}, weight}``
    as a field of ``LocalityLbEndpoints``, whatever the lengths."""
    socket = string_field(b"\x12", address) + b"\x18" + port
    inner = length_delimited(b"\x0a", length_delimited(b"\x0a", socket))
    return length_delimited(b"\x12", length_delimited(b"\x0a", inner) + _weight(b"\x22", weight))


_SHORT = 100
"""Addresses shorter than this (every IP) make an ``LbEndpoint`` under 128 bytes."""
_SHORT_LB_ENDPOINT = b"\x12%c\x0a%c\x0a%c\x0a%c\x12%c%b\x18%b\x22\x02\x08%c"
_port_value = functools.lru_cache(maxsize=1024)(encode_varint)
"""A port's varint: a mesh has few distinct ports."""


def _weight(tag: bytes, value: int) -> bytes:
    """A ``UInt32Value`` field of a weight (at least 1); too large for it, a ``ValueError``
    as the message would raise."""
    if value > _UINT32_MAX:
        raise ValueError(f"weight {value} does not fit a uint32")
    return length_delimited(tag, b"\x08" + encode_varint(value))


@functools.lru_cache(maxsize=256)
def _locality_field(locality: tuple[str, str, str]) -> bytes:
    """The ``locality`` field of ``LocalityLbEndpoints``: present even when empty."""
    region, zone, subzone = locality
    return length_delimited(
        b"\x0a",
        string_field(b"\x0a", region)
        + string_field(b"\x12", zone)
        + string_field(b"\x1a", subzone),
    )


_UINT32_MAX = 2**32 - 1

_locality_of = attrgetter("locality.region", "locality.zone", "locality.subzone")
_order = attrgetter("locality.region", "locality.zone", "locality.subzone", "address", "port")
_address_and_port = attrgetter("address", "port")


def build_load_assignments(mesh: Mesh) -> list[Message]:
    """One assignment per EDS cluster of ``mesh``, sorted by cluster name."""
    parse = endpoint_pb2.ClusterLoadAssignment.FromString
    return [
        parse(upstream_assignment(u).data) for u in upstreams(mesh) if u.discovery is Discovery.EDS
    ]


def upstream_assignment(upstream: Upstream) -> Serialized:
    """The assignment of an EDS upstream, as bytes: its endpoints with an IP address."""
    name = upstream.name
    selected = upstream.selected_endpoints
    data = assignment_bytes(name, [e for e in selected if is_ip(e.address)])
    return Serialized(ENDPOINT_TYPE, name, data)


_IPV4_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"(?:{_IPV4_OCTET}\.){{3}}{_IPV4_OCTET}")


@functools.lru_cache(maxsize=65536)
def is_ip(address: str) -> bool:
    # Dotted IPv4, the common case, is what this pattern accepts (no leading zeros,
    # as ipaddress); anything else (IPv6, names, mistakes) takes the precise path.
    if _IPV4.fullmatch(address) is not None:
        return True
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True
