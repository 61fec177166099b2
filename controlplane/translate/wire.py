"""The few pieces of the protobuf wire format Pilotfish writes and reads by hand.

The xDS layer assembles responses from shared encoded parts
(:mod:`controlplane.xds.encoding`) and compares SotW requests as bytes
(:mod:`controlplane.xds.repeated_names`); the translator writes the resources
it makes most of, and whose shape is fixed, straight to bytes. All of them
need varints and length-delimited fields, written as protobuf writes them
(fields in number order, proto3 scalars left out when zero), and nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass


def encode_varint(value: int) -> bytes:
    # Lengths and ports, nearly all that is written, take one or two bytes.
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    """(value, offset after it); ``IndexError`` if ``data`` ends inside it."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def length_delimited(tag: bytes, data: bytes) -> bytes:
    """One length-delimited field: ``tag``, the length, ``data``."""
    return tag + encode_varint(len(data)) + data


def string_field(tag: bytes, value: str) -> bytes:
    """A singular proto3 string field: omitted when empty."""
    return length_delimited(tag, value.encode()) if value else b""


@dataclass(frozen=True, slots=True)
class Serialized:
    """A resource the translator wrote straight to bytes instead of building its message.

    ``data`` is byte for byte what protobuf's deterministic serialization of
    that message would be, so it hashes and versions the same. A translator's
    encoder is given it in place of the message; without an encoder the
    translator parses it back into the message.
    """

    type_url: str
    name: str
    data: bytes
