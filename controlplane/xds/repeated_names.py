"""Recognizing, from its bytes, a state-of-the-world request that repeats its name list.

A SotW client repeats its whole subscription in every request, ACKs included:
an Envoy following 3,000 clusters sends 3,000 EDS names (about 150 KB) in each
EDS ACK, so 10,000 streams send 1.5 GB of names per push that are nearly always
the list they sent last time. Decoding each list into strings only to find it
unchanged would cost more than everything else the server does per stream.

Instead the stream keeps, per type, the encoding of its last list
(:func:`names_wire`, one shared object per distinct list, within a byte
budget: see :mod:`~controlplane.xds.interning`), and
:func:`shrink` walks the top-level fields of a received request (a handful:
version, node, names, type URL, nonce, error), finds where its names begin and
checks that a kept encoding follows there, byte for byte, and that no other
name follows anywhere. Such a request becomes a :class:`ShrunkRequest`: its
bytes without the names (small, cheap to decode and to hold while it waits)
plus a reference to the encoding it repeated. Field order does not matter; a
client that splits its list around other fields, or encodes it some other way,
simply never gets the shortcut, and its request is decoded in full.

Proto3 string fields are encoded one way only (tag, length, UTF-8 bytes), so
equal bytes are equal names in the same order.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from envoy.service.discovery.v3 import discovery_pb2

from controlplane.translate.wire import read_varint
from controlplane.xds.interning import Interner, MiB

NAMES_TAG = 0x1A
"""``resource_names`` (field 3, length-delimited) as it opens each entry."""

_WIRES: Interner[bytes] = Interner(32 * MiB, len)


@dataclass(frozen=True, slots=True)
class ShrunkRequest:
    """A request's bytes without a name list that repeated ``names`` at offset ``at``."""

    wire: bytes
    at: int
    names: bytes

    def expand(self) -> bytes:
        """The request's bytes as received."""
        return self.wire[: self.at] + self.names + self.wire[self.at :]


def names_wire(resource_names: Any) -> bytes:
    """The encoding of ``resource_names`` alone; one shared object per distinct list."""
    wire = discovery_pb2.DiscoveryRequest(resource_names=resource_names).SerializeToString()
    return _WIRES.intern(wire)


def shrink(wire: bytes, known: Collection[bytes]) -> bytes | ShrunkRequest:
    """``wire`` as a :class:`ShrunkRequest` if its names are exactly one of ``known``
    (non-empty encodings, longest first); otherwise ``wire`` itself."""
    at, end = 0, len(wire)
    found: bytes | None = None
    found_at = 0
    try:
        while at < end:
            tag, after = read_varint(wire, at)
            if tag == NAMES_TAG:
                if found is not None:
                    return wire
                for names in known:
                    if wire.startswith(names, at):
                        found, found_at = names, at
                        break
                else:
                    return wire
                at += len(found)
                continue
            kind = tag & 7
            if kind == 2:
                size, after = read_varint(wire, after)
                at = after + size
            elif kind == 0:
                at = read_varint(wire, after)[1]
            elif kind == 1:
                at = after + 8
            elif kind == 5:
                at = after + 4
            else:
                return wire
    except IndexError:
        return wire
    if found is None or at != end:
        return wire
    return ShrunkRequest(wire[:found_at] + wire[found_at + len(found) :], found_at, found)
