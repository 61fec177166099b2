"""The few pieces of the protobuf wire format the xDS layer writes and reads by hand.

Responses are assembled from shared encoded parts (:mod:`encoding`) and SotW
requests are compared as bytes (:mod:`repeated_names`); both need varints and
length-delimited fields, and nothing more.
"""

from __future__ import annotations


def encode_varint(value: int) -> bytes:
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
