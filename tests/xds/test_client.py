from typing import Any

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.errors import ProtocolError
from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, Nack, SotwClient, SotwStream
from tests.xds.resources import NODE, base_mesh, eds_cluster, static_cluster

S1 = base_mesh()


def response(type_url: str, *messages: Any, version: str = "v1", nonce: str = "n1") -> Any:
    resp = discovery_pb2.DiscoveryResponse(type_url=type_url, version_info=version, nonce=nonce)
    for message in messages:
        resp.resources.add().Pack(message)
    return resp


def fields(req: Any) -> tuple[str, str, str, list[str], bool, str]:
    return (
        req.type_url,
        req.version_info,
        req.response_nonce,
        list(req.resource_names),
        req.HasField("node"),
        req.error_detail.message,
    )


def test_first_request_carries_the_node_and_later_ones_do_not():
    client = SotwClient(NODE)
    first = client.request(CLUSTER, [])
    second = client.request(LISTENER, [])
    assert fields(first) == (CLUSTER, "", "", [], True, "")
    assert first.node == NODE
    assert fields(second) == (LISTENER, "", "", [], False, "")


def test_accepted_response_is_acked_with_its_version_and_nonce():
    client = SotwClient(NODE)
    client.request(CLUSTER, ["a"])
    (ack,) = client.on_response(response(CLUSTER, static_cluster("a")))
    assert fields(ack) == (CLUSTER, "v1", "n1", ["a"], False, "")
    assert sorted(client.resources(CLUSTER)) == ["a"]
    assert client.version(CLUSTER) == "v1"


def test_validator_error_is_nacked_with_the_last_good_version():
    def refuse_b(type_url: str, resources: Any) -> None:
        if "b" in resources:
            raise ValueError("cluster b is not allowed")

    client = SotwClient(NODE, validate=refuse_b)
    client.request(CLUSTER, [])
    client.on_response(response(CLUSTER, static_cluster("a")))
    (nack,) = client.on_response(
        response(CLUSTER, static_cluster("a"), static_cluster("b"), version="v2", nonce="n2")
    )
    assert fields(nack) == (CLUSTER, "v1", "n2", [], False, "cluster b is not allowed")
    assert nack.error_detail.code == 3
    assert sorted(client.resources(CLUSTER)) == ["a"]
    assert client.last_error(CLUSTER) == "cluster b is not allowed"


def test_any_of_another_type_is_nacked():
    client = SotwClient(NODE)
    client.request(LISTENER, [])
    (nack,) = client.on_response(response(LISTENER, static_cluster("a")))
    assert nack.error_detail.message == f"resource of type {CLUSTER} in a {LISTENER} response"


def test_repeated_name_is_nacked():
    client = SotwClient(NODE)
    client.request(CLUSTER, [])
    (nack,) = client.on_response(response(CLUSTER, static_cluster("a"), static_cluster("a")))
    assert nack.error_detail.message == "resource 'a' appears twice in one response"


def test_response_for_a_type_never_requested_is_a_server_protocol_error():
    with pytest.raises(ProtocolError) as caught:
        SotwClient(NODE).on_response(response(CLUSTER, static_cluster("a")))
    assert caught.value.culprit == "server"


def test_full_state_response_replaces_and_partial_response_merges():
    client = SotwClient(NODE)
    for resp in SotwStream(lambda node: S1).on_request(client.request(ENDPOINT, ["a", "b"])):
        client.on_response(resp)
    client.request(CLUSTER, [])
    client.on_response(response(CLUSTER, static_cluster("a"), static_cluster("b")))
    client.on_response(response(CLUSTER, static_cluster("b"), nonce="n2"))
    assert sorted(client.resources(CLUSTER)) == ["b"]
    client.on_response(response(ENDPOINT, S1.resources(ENDPOINT)["a"].body, nonce="n9"))
    assert sorted(client.resources(ENDPOINT)) == ["a", "b"]


def test_unsubscribing_forgets_the_resource():
    client = SotwClient(NODE)
    server = SotwStream(lambda node: S1)
    for resp in server.on_request(client.request(ENDPOINT, ["a", "b"])):
        client.on_response(resp)
    request = client.unsubscribe(ENDPOINT, "b")
    assert list(request.resource_names) == ["a"]
    assert sorted(client.resources(ENDPOINT)) == ["a"]


def test_subscribe_adds_names_and_keeps_the_wildcard():
    client = SotwClient(NODE)
    client.request(LISTENER, ["*"])
    assert list(client.subscribe(LISTENER, "extra").resource_names) == ["*", "extra"]


def test_follow_subscribes_to_load_assignments_of_eds_clusters_after_the_ack():
    client = SotwClient(NODE, follow=True)
    client.request(CLUSTER, [])
    ack, follow = client.on_response(
        response(
            CLUSTER, eds_cluster("a"), eds_cluster("b", service_name="svc"), static_cluster("s")
        )
    )
    assert fields(ack) == (CLUSTER, "v1", "n1", [], False, "")
    assert fields(follow) == (ENDPOINT, "", "", ["a", "svc"], False, "")
    (ack_only,) = client.on_response(
        response(CLUSTER, eds_cluster("a"), eds_cluster("b", service_name="svc"), nonce="n2")
    )
    assert ack_only.type_url == CLUSTER


def test_follow_subscribes_to_route_configurations_of_listeners():
    client = SotwClient(NODE, follow=True)
    responses = SotwStream(lambda node: S1).on_request(client.request(LISTENER, []))
    _, follow = client.on_response(responses[0])
    assert (follow.type_url, list(follow.resource_names)) == (ROUTE, ["r1"])


def test_reconnect_restores_subscriptions_with_versions_and_without_nonces():
    client = SotwClient(NODE)
    client.request(ENDPOINT, ["a"])
    client.request(CLUSTER, [])
    client.on_response(response(CLUSTER, static_cluster("a"), version="v7", nonce="n3"))
    cds, eds = client.reconnect()
    assert fields(cds) == (CLUSTER, "v7", "", [], True, "")
    assert fields(eds) == (ENDPOINT, "", "", ["a"], False, "")


def test_reconnect_to_a_server_with_the_same_content_skips_the_wildcard_resend():
    client = SotwClient(NODE)
    old = SotwStream(lambda node: S1)
    for resp in old.on_request(client.request(CLUSTER, [])):
        client.on_response(resp)
    new = SotwStream(lambda node: base_mesh())
    (cds,) = client.reconnect()
    assert new.on_request(cds) == []


def test_nack_from_the_client_core_is_seen_by_the_server_core_and_not_resent():
    def refuse(type_url: str, resources: Any) -> None:
        raise ValueError("nope")

    client = SotwClient(NODE, validate=refuse)
    server = SotwStream(lambda node: S1)
    (resp,) = server.on_request(client.request(CLUSTER, []))
    (nack,) = client.on_response(resp)
    assert server.on_request(nack) == []
    (event,) = server.pop_events()
    assert isinstance(event, Nack)
    assert (event.message, event.kept_version) == ("nope", "")
