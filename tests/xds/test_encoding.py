"""Responses are encoded once per content and shared; each decodes to the message it stands for."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2

from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, DeltaStream, SotwStream, encoding
from controlplane.xds.encoding import delta_response, sotw_response
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
