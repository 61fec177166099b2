"""The hand-written wire pieces write what protobuf writes."""

from __future__ import annotations

from google.protobuf import wrappers_pb2
from hypothesis import given
from hypothesis import strategies as st

from controlplane.translate.wire import encode_varint, read_varint

# Lengths and ports take the short paths; the rest up to 64 bits the loop.
varints = st.one_of(
    st.integers(1, 0x7F),
    st.integers(0x80, 0x3FFF),
    st.integers(0x4000, 2**64 - 1),
    st.sampled_from([0x80, 0x3FFF, 0x4000, 2**21 - 1, 2**21, 2**32 - 1, 2**63, 2**64 - 1]),
)


@given(varints)
def test_a_varint_is_written_as_protobuf_writes_a_uint64(value: int) -> None:
    written = wrappers_pb2.UInt64Value(value=value).SerializeToString(deterministic=True)
    assert written == b"\x08" + encode_varint(value)


@given(varints, st.binary(max_size=3))
def test_a_written_varint_reads_back_with_the_offset_after_it(value: int, rest: bytes) -> None:
    data = b"\xff" + encode_varint(value) + rest
    assert read_varint(data, 1) == (value, len(data) - len(rest))


def test_zero_is_one_zero_byte() -> None:
    assert encode_varint(0) == b"\x00"
