"""Responses are encoded once per content and shared; each decodes to the message it stands for."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, DeltaStream, SotwStream, encoding
from controlplane.xds.encoding import delta_response, sotw_response
from controlplane.xds.snapshot import Resource
from tests.xds.resources import NODE, base_mesh

S1 = base_mesh()


def sotw_stream() -> SotwStream:
    stream = SotwStream(lambda node: S1)
    stream.on_request(discovery_pb2.DiscoveryRequest(type_url=CLUSTER, node=NODE))
    return stream


def delta_stream() -> DeltaStream:
    return DeltaStream(lambda node: S1)


def test_a_sotw_response_is_byte_for_byte_the_message_protobuf_would_encode():
    resources = S1.resources(CLUSTER)
    ordered = [resources[name] for name in sorted(resources)]
    encoded = sotw_response({}, CLUSTER, "v1", ordered, "7")
    expected = discovery_pb2.DiscoveryResponse(version_info="v1", type_url=CLUSTER, nonce="7")
    expected.resources.extend(r.body for r in ordered)
    assert encoded.SerializeToString() == expected.SerializeToString()
    assert (encoded.type_url, encoded.version, encoded.nonce, encoded.count) == (
        CLUSTER,
        "v1",
        "7",
        2,
    )
    assert encoded.version_info == "v1"
    assert list(encoded.resources) == list(expected.resources)


def test_a_delta_response_decodes_to_the_resources_versions_names_and_removals():
    resources = S1.resources(ENDPOINT)
    chosen = [resources["a"], resources["b"]]
    encoded = delta_response({}, ENDPOINT, "v2", chosen, ["gone", ""], "3")
    decoded = discovery_pb2.DeltaDiscoveryResponse.FromString(encoded.SerializeToString())
    expected = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info="v2", type_url=ENDPOINT, nonce="3", removed_resources=["gone", ""]
    )
    for resource in chosen:
        item = expected.resources.add(name=resource.name, version=resource.hash)
        item.resource.CopyFrom(resource.body)
    assert decoded == expected
    assert (encoded.count, encoded.removed) == (2, 2)


def test_streams_sent_the_same_content_share_one_encoded_body():
    first, second = sotw_stream(), sotw_stream()
    (a,) = first.on_request(discovery_pb2.DiscoveryRequest(type_url=LISTENER))
    (b,) = second.on_request(discovery_pb2.DiscoveryRequest(type_url=LISTENER))
    assert a.body is b.body
    assert a.nonce == b.nonce == "2"
    assert a.SerializeToString() == b.SerializeToString()

    one, two = delta_stream(), delta_stream()
    wildcard = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, node=NODE)
    (c,) = one.on_request(wildcard)
    (d,) = two.on_request(wildcard)
    assert c.body is d.body
    assert c.nonce == d.nonce == "1"


def test_encoded_bodies_stay_within_their_budget(monkeypatch):
    monkeypatch.setattr(encoding, "BODY_BUDGET", 1)
    memo: dict = {}
    resources = S1.resources(CLUSTER)
    lists = [[resources["a"]], [resources["b"]], [resources["a"], resources["b"]]]
    bodies = [sotw_response(memo, CLUSTER, "v", chosen, "1").body for chosen in lists]
    assert sotw_response(memo, CLUSTER, "v", lists[2], "2").body is bodies[2]
    assert sotw_response(memo, CLUSTER, "v", lists[0], "2").body is not bodies[0]
    assert sotw_response(memo, CLUSTER, "v", lists[0], "2").body == bodies[0]


def test_released_bodies_are_built_again_equal_and_a_memo_in_use_keeps_working():
    memo: dict = {}
    resources = S1.resources(CLUSTER)
    ordered = [resources[name] for name in sorted(resources)]
    first = sotw_response(memo, CLUSTER, "v", ordered, "1").body
    delta = delta_response(memo, CLUSTER, "v", ordered, ["gone"], "1").body
    assert encoding.release_bodies() >= len(first) + len(delta)
    again = sotw_response(memo, CLUSTER, "v", ordered, "2").body
    assert again is not first
    assert again == first
    assert delta_response(memo, CLUSTER, "v", ordered, ["gone"], "2").body == delta
    assert sotw_response(memo, CLUSTER, "v", ordered, "3").body is again
    assert encoding.release_bodies() >= len(again)
    assert encoding.release_bodies() == 0


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(name=_TEXT, type_url=_TEXT, digest=_TEXT, value=st.binary(max_size=300))
def test_response_entries_are_byte_for_byte_what_protobuf_writes(name, type_url, digest, value):
    resource = Resource(name, type_url, digest, value, frozenset())
    sotw = discovery_pb2.DiscoveryResponse()
    sotw.resources.add(type_url=type_url, value=value)
    assert encoding.sotw_entry(resource) == sotw.SerializeToString(deterministic=True)
    delta = discovery_pb2.DeltaDiscoveryResponse()
    item = delta.resources.add(name=name, version=digest)
    item.resource.type_url, item.resource.value = type_url, value
    assert encoding.delta_entry(resource) == delta.SerializeToString(deterministic=True)
