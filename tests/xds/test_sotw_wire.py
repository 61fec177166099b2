"""A SotW stream given each request's bytes behaves exactly as one given the message alone.

With the bytes, :class:`SotwStream` recognizes an ACK that repeats the last
name list by comparing bytes (``_repeats_names``) instead of decoding thousands
of names. These tests encode requests the way any client might (fields in any
order, the name list split around other fields, node or not, extra fields) and
check that the shortcut never changes an answer.
"""

from __future__ import annotations

from typing import Any

from envoy.service.discovery.v3 import discovery_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.xds import ENDPOINT, SotwStream
from controlplane.xds.repeated_names import ShrunkRequest
from tests.xds.resources import NODE, base_mesh, names

S1 = base_mesh(clusters={"a": ("10.0.0.1:80",), "b": ("10.0.0.2:80",), "c": ("10.0.0.3:80",)})
CANDIDATES = ["a", "b", "c", "zz", "*"]


def encode(
    names_: list[str], *, version: str, nonce: str, node: bool, order: list[int], split: int
) -> bytes:
    """A request whose fields are concatenated in ``order`` (protobuf allows any order);
    the name list is cut at ``split`` into two runs placed apart."""
    runs = [names_[:split], names_[split:]]
    parts: dict[int, bytes] = {
        0: discovery_pb2.DiscoveryRequest(version_info=version).SerializeToString(),
        1: discovery_pb2.DiscoveryRequest(node=NODE).SerializeToString() if node else b"",
        2: discovery_pb2.DiscoveryRequest(resource_names=runs[0]).SerializeToString(),
        3: discovery_pb2.DiscoveryRequest(type_url=ENDPOINT).SerializeToString(),
        4: discovery_pb2.DiscoveryRequest(response_nonce=nonce).SerializeToString(),
        5: discovery_pb2.DiscoveryRequest(resource_names=runs[1]).SerializeToString(),
    }
    return b"".join(parts[i] for i in order)


def pair_of_streams() -> tuple[SotwStream, SotwStream]:
    return SotwStream(lambda node: S1), SotwStream(lambda node: S1)


def feed(plain: SotwStream, wired: SotwStream, wire: bytes) -> tuple[list[Any], list[Any], Any]:
    request = discovery_pb2.DiscoveryRequest.FromString(wire)
    return plain.on_request(request), wired.on_wire(wire), request


def described(stream: SotwStream) -> Any:
    return stream.status(ENDPOINT)


requests = st.lists(
    st.tuples(
        st.lists(st.sampled_from(CANDIDATES), max_size=4),
        st.permutations(range(6)),
        st.integers(0, 4),
        st.booleans(),
        st.booleans(),
        st.integers(1, 3),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(steps=requests)
def test_request_bytes_never_change_what_a_sotw_stream_answers(steps):
    """Requests arrive in bursts; the wired stream shrinks a whole burst on arrival
    (against what it held before any of it) and handles it afterwards, in order."""
    plain, wired = pair_of_streams()
    nonce = ""
    index = 0
    while index < len(steps):
        burst = steps[index : index + steps[index][5]]
        wires = []
        for listed, order, split, with_node, ack, _ in burst:
            wires.append(
                encode(
                    listed,
                    version=described(plain).version if index and ack else "",
                    nonce=nonce if ack else "",
                    node=with_node or index == 0,
                    order=list(order),
                    split=min(split, len(listed)),
                )
            )
        shrunk = [wired.shrink(wire) for wire in wires]
        for wire, data in zip(wires, shrunk, strict=True):
            out_plain = plain.on_request(discovery_pb2.DiscoveryRequest.FromString(wire))
            out_wired = wired.on_wire(data)
            assert [r.SerializeToString() for r in out_wired] == [
                r.SerializeToString() for r in out_plain
            ]
            assert described(wired) == described(plain)
            if out_plain:
                nonce = out_plain[-1].nonce
        index += len(burst)


def test_an_ack_repeating_the_held_list_is_shrunk_to_its_other_fields():
    plain, wired = pair_of_streams()
    first = encode(["a", "b"], version="", nonce="", node=True, order=[0, 1, 2, 3, 4, 5], split=2)
    out, _, _ = feed(plain, wired, first)
    ack = encode(
        ["a", "b"],
        version=out[0].version_info,
        nonce="1",
        node=True,
        order=[0, 1, 2, 3, 4, 5],
        split=2,
    )
    shrunk = wired.shrink(ack)
    assert isinstance(shrunk, ShrunkRequest)
    assert shrunk.expand() == ack
    assert list(discovery_pb2.DiscoveryRequest.FromString(shrunk.wire).resource_names) == []
    assert len(shrunk.wire) == len(ack) - len(
        discovery_pb2.DiscoveryRequest(resource_names=["a", "b"]).SerializeToString()
    )
    assert wired.on_wire(shrunk) == []
    assert described(wired).acked_version == out[0].version_info


def test_an_ack_repeating_the_list_in_another_field_order_is_still_an_ack():
    plain, wired = pair_of_streams()
    first = encode(["a", "b"], version="", nonce="", node=True, order=[0, 1, 2, 3, 4, 5], split=2)
    out, _, _ = feed(plain, wired, first)
    assert names(out[0]) == ["a", "b"]
    ack = encode(
        ["a", "b"],
        version=out[0].version_info,
        nonce="1",
        node=False,
        order=[4, 3, 2, 0, 1, 5],
        split=2,
    )
    out_plain, out_wired, _ = feed(plain, wired, ack)
    assert out_plain == out_wired == []
    assert described(wired).names == frozenset({"a", "b"})
    assert described(wired).acked_version == out[0].version_info


def test_a_list_with_the_same_length_but_another_name_is_a_subscription_change():
    plain, wired = pair_of_streams()
    first = encode(["a", "b"], version="", nonce="", node=True, order=[0, 1, 2, 3, 4, 5], split=2)
    out, _, _ = feed(plain, wired, first)
    change = encode(
        ["a", "c"],
        version=out[0].version_info,
        nonce="1",
        node=False,
        order=[0, 1, 2, 3, 4, 5],
        split=2,
    )
    out_plain, out_wired, _ = feed(plain, wired, change)
    assert described(wired).names == frozenset({"a", "c"}) == described(plain).names
    assert [names(r) for r in out_wired] == [names(r) for r in out_plain] == [["c"]]


def test_a_repeated_list_followed_by_one_more_name_elsewhere_is_a_subscription_change():
    plain, wired = pair_of_streams()
    first = encode(["a", "b"], version="", nonce="", node=True, order=[0, 1, 2, 3, 4, 5], split=2)
    out, _, _ = feed(plain, wired, first)
    grown = encode(
        ["a", "b", "c"],
        version=out[0].version_info,
        nonce="1",
        node=False,
        order=[0, 2, 1, 3, 4, 5],
        split=2,
    )
    out_plain, out_wired, _ = feed(plain, wired, grown)
    assert described(wired).names == frozenset({"a", "b", "c"})
    assert [names(r) for r in out_wired] == [names(r) for r in out_plain] == [["c"]]


def test_the_ack_weight_of_a_stream_fed_bytes_is_its_longest_name_list():
    plain, wired = pair_of_streams()
    first = encode(["a", "b"], version="", nonce="", node=True, order=[0, 1, 2, 3, 4, 5], split=2)
    feed(plain, wired, first)
    listed = discovery_pb2.DiscoveryRequest(resource_names=["a", "b"]).SerializeToString()
    assert wired.ack_weight == len(listed)
    assert plain.ack_weight == 0  # decoded requests keep no encoding to compare
