from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.errors import ProtocolError
from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, DeltaClient, DeltaStream, Nack
from tests.xds.resources import NODE, base_mesh, eds_cluster, load_assignment, static_cluster

S1 = base_mesh()


def response(
    type_url: str,
    *messages: Any,
    removed: tuple[str, ...] = (),
    nonce: str = "n1",
    system_version: str = "v1",
) -> Any:
    resp = discovery_pb2.DeltaDiscoveryResponse(
        type_url=type_url,
        system_version_info=system_version,
        nonce=nonce,
        removed_resources=list(removed),
    )
    for message in messages:
        item = resp.resources.add(name=_name(message), version=f"{_name(message)}-1")
        item.resource.Pack(message)
    return resp


def _name(message: Any) -> str:
    return str(getattr(message, "name", "") or message.cluster_name)


def fields(req: Any) -> tuple[str, list[str], list[str], str, dict[str, str], bool, str]:
    return (
        req.type_url,
        list(req.resource_names_subscribe),
        list(req.resource_names_unsubscribe),
        req.response_nonce,
        dict(req.initial_resource_versions),
        req.HasField("node"),
        req.error_detail.message,
    )


def test_first_request_carries_the_node_and_later_ones_do_not():
    client = DeltaClient(NODE)
    first = client.subscribe(CLUSTER)
    second = client.subscribe(ENDPOINT, "b", "a")
    assert fields(first) == (CLUSTER, [], [], "", {}, True, "")
    assert first.node == NODE
    assert fields(second) == (ENDPOINT, ["a", "b"], [], "", {}, False, "")


def test_node_on_every_request_when_asked():
    client = DeltaClient(NODE, node_on_every_request=True)
    client.subscribe(CLUSTER)
    assert client.subscribe(ENDPOINT, "a").node == NODE


def test_first_subscription_without_names_is_the_legacy_wildcard_for_cds_and_lds_only():
    client = DeltaClient(NODE)
    client.subscribe(CLUSTER)
    client.subscribe(ENDPOINT)
    assert (client.subscription(CLUSTER), client.subscription(ENDPOINT)) == (["*"], [])


def test_star_subscribes_to_the_wildcard_explicitly():
    client = DeltaClient(NODE)
    assert list(client.subscribe(LISTENER, "*", "extra").resource_names_subscribe) == [
        "*",
        "extra",
    ]
    assert client.subscription(LISTENER) == ["*", "extra"]


def test_accepted_response_is_acked_by_nonce_and_stored_with_versions():
    client = DeltaClient(NODE)
    client.subscribe(CLUSTER)
    (ack,) = client.on_response(response(CLUSTER, static_cluster("a"), static_cluster("b")))
    assert fields(ack) == (CLUSTER, [], [], "n1", {}, False, "")
    assert dict(client.versions(CLUSTER)) == {"a": "a-1", "b": "b-1"}
    assert sorted(client.resources(CLUSTER)) == ["a", "b"]
    assert (client.system_version(CLUSTER), client.nonce(CLUSTER)) == ("v1", "n1")


def test_updates_merge_and_removals_drop():
    client = DeltaClient(NODE)
    client.subscribe(CLUSTER)
    client.on_response(response(CLUSTER, static_cluster("a"), static_cluster("b")))
    client.on_response(response(CLUSTER, static_cluster("c"), removed=("a",), nonce="n2"))
    assert sorted(client.resources(CLUSTER)) == ["b", "c"]


def test_validator_error_is_nacked_with_the_nonce_and_nothing_is_applied():
    def refuse_b(type_url: str, resources: Any) -> None:
        if "b" in resources:
            raise ValueError("cluster b is not allowed")

    client = DeltaClient(NODE, validate=refuse_b)
    client.subscribe(CLUSTER)
    client.on_response(response(CLUSTER, static_cluster("a")))
    (nack,) = client.on_response(
        response(CLUSTER, static_cluster("b"), removed=("a",), nonce="n2", system_version="v2")
    )
    assert fields(nack) == (CLUSTER, [], [], "n2", {}, False, "cluster b is not allowed")
    assert nack.error_detail.code == 3
    assert sorted(client.resources(CLUSTER)) == ["a"]
    assert client.system_version(CLUSTER) == "v1"
    assert client.last_error(CLUSTER) == "cluster b is not allowed"


@pytest.mark.parametrize(
    ("build", "error"),
    [
        pytest.param(
            lambda: response(LISTENER, static_cluster("a")),
            f"resource of type {CLUSTER} in a {LISTENER} response",
            id="foreign-type",
        ),
        pytest.param(
            lambda: response(LISTENER, *[_listener("l")] * 2),
            "resource 'l' appears twice in one response",
            id="repeated-name",
        ),
        pytest.param(
            lambda: _renamed(response(LISTENER, _listener("l")), "other"),
            "resource 'other' holds LDS 'l'",
            id="name-mismatch",
        ),
        pytest.param(
            lambda: response(LISTENER, _listener("l"), removed=("l",)),
            "resource 'l' is both updated and removed",
            id="updated-and-removed",
        ),
    ],
)
def test_malformed_responses_are_nacked(build: Any, error: str):
    client = DeltaClient(NODE)
    client.subscribe(LISTENER)
    (nack,) = client.on_response(build())
    assert nack.error_detail.message == error
    assert dict(client.resources(LISTENER)) == {}


def _listener(name: str) -> Any:
    return listener_pb2.Listener(name=name)


def _renamed(resp: Any, name: str) -> Any:
    resp.resources[0].name = name
    return resp


def test_response_for_a_type_never_requested_is_a_server_protocol_error():
    with pytest.raises(ProtocolError) as caught:
        DeltaClient(NODE).on_response(response(CLUSTER, static_cluster("a")))
    assert caught.value.culprit == "server"


def test_resources_that_were_not_requested_are_ignored():
    client = DeltaClient(NODE)
    client.subscribe(ENDPOINT, "a")
    resp = discovery_pb2.DeltaDiscoveryResponse(type_url=ENDPOINT, nonce="n1")
    for name in ("a", "b"):
        item = resp.resources.add(name=name, version=S1.resources(ENDPOINT)[name].hash)
        item.resource.CopyFrom(S1.resources(ENDPOINT)[name].body)
    client.on_response(resp)
    assert sorted(client.resources(ENDPOINT)) == ["a"]


def test_removal_of_an_explicitly_subscribed_name_marks_it_absent():
    client = DeltaClient(NODE)
    client.subscribe(ROUTE, "r1", "r2")
    client.on_response(response(ROUTE, removed=("r2",)))
    assert client.absent(ROUTE) == {"r2"}
    client.unsubscribe(ROUTE, "r2")
    assert client.absent(ROUTE) == set()


def test_unsubscribing_forgets_the_resource_and_sends_only_the_dropped_name():
    client = DeltaClient(NODE)
    server = DeltaStream(lambda node: S1)
    for resp in server.on_request(client.subscribe(ENDPOINT, "a", "b")):
        client.on_response(resp)
    request = client.unsubscribe(ENDPOINT, "b")
    assert fields(request) == (ENDPOINT, [], ["b"], "", {}, False, "")
    assert sorted(client.resources(ENDPOINT)) == ["a"]


def test_unsubscribing_an_explicit_name_on_wildcard_keeps_the_resource_for_the_server_to_settle():
    client = DeltaClient(NODE)
    client.subscribe(LISTENER, "*", "l")
    client.on_response(response(LISTENER, _listener("l")))
    client.unsubscribe(LISTENER, "l")
    assert sorted(client.resources(LISTENER)) == ["l"]
    client.on_response(response(LISTENER, removed=("l",), nonce="n2"))
    assert sorted(client.resources(LISTENER)) == []


def test_leaving_the_wildcard_forgets_what_is_not_explicitly_subscribed():
    client = DeltaClient(NODE)
    client.subscribe(LISTENER, "*", "l")
    client.on_response(response(LISTENER, _listener("l"), _listener("m")))
    request = client.unsubscribe(LISTENER, "*")
    assert list(request.resource_names_unsubscribe) == ["*"]
    assert sorted(client.resources(LISTENER)) == ["l"]
    assert client.subscription(LISTENER) == ["l"]


def test_follow_subscribes_to_load_assignments_after_the_ack_and_drops_unused_ones():
    client = DeltaClient(NODE, follow=True)
    client.subscribe(CLUSTER)
    ack, follow = client.on_response(
        response(
            CLUSTER, eds_cluster("a"), eds_cluster("b", service_name="svc"), static_cluster("s")
        )
    )
    assert fields(ack) == (CLUSTER, [], [], "n1", {}, False, "")
    assert fields(follow) == (ENDPOINT, ["a", "svc"], [], "", {}, False, "")
    ack, follow = client.on_response(response(CLUSTER, removed=("a",), nonce="n2"))
    assert fields(follow) == (ENDPOINT, [], ["a"], "", {}, False, "")
    (ack_only,) = client.on_response(response(CLUSTER, static_cluster("t"), nonce="n3"))
    assert ack_only.type_url == CLUSTER


def test_follow_subscribes_to_route_configurations_of_listeners():
    client = DeltaClient(NODE, follow=True)
    responses = DeltaStream(lambda node: S1).on_request(client.subscribe(LISTENER))
    _, follow = client.on_response(responses[0])
    assert fields(follow) == (ROUTE, ["r1"], [], "", {}, False, "")


def test_reconnect_restates_subscriptions_with_initial_versions_and_no_nonces():
    client = DeltaClient(NODE)
    client.subscribe(ENDPOINT, "a", "missing")
    client.subscribe(CLUSTER)
    client.subscribe(LISTENER, "*", "l")
    client.subscribe(ROUTE, "gone")
    client.unsubscribe(ROUTE, "gone")
    client.on_response(response(CLUSTER, static_cluster("c")))
    client.on_response(response(ENDPOINT, load_assignment("a", "10.0.0.1:80"), nonce="n2"))
    client.on_response(response(LISTENER, _listener("l"), nonce="n3"))
    cds, eds, lds = client.reconnect()
    assert fields(cds) == (CLUSTER, [], [], "", {"c": "c-1"}, True, "")
    assert fields(eds) == (ENDPOINT, ["a", "missing"], [], "", {"a": "a-1"}, False, "")
    assert fields(lds) == (LISTENER, ["*", "l"], [], "", {"l": "l-1"}, False, "")


def test_reconnect_states_a_legacy_wildcard_with_names_as_star_and_names():
    client = DeltaClient(NODE)
    client.subscribe(CLUSTER)
    client.subscribe(CLUSTER, "extra")
    (cds,) = client.reconnect()
    assert list(cds.resource_names_subscribe) == ["*", "extra"]


def test_reconnect_to_a_server_with_the_same_content_resends_nothing():
    client = DeltaClient(NODE, follow=True)
    old = DeltaStream(lambda node: S1)
    pending = [client.subscribe(CLUSTER), client.subscribe(LISTENER)]
    while pending:
        for resp in old.on_request(pending.pop(0)):
            pending.extend(client.on_response(resp))
    new = DeltaStream(lambda node: base_mesh())
    assert [new.on_request(req) for req in client.reconnect()] == [[], [], [], []]


def test_nack_from_the_client_core_is_seen_by_the_server_core_and_not_resent():
    def refuse(type_url: str, resources: Any) -> None:
        raise ValueError("nope")

    client = DeltaClient(NODE, validate=refuse)
    server = DeltaStream(lambda node: S1)
    (resp,) = server.on_request(client.subscribe(CLUSTER))
    (nack,) = client.on_response(resp)
    assert server.on_request(nack) == []
    (event,) = server.pop_events()
    assert isinstance(event, Nack)
    assert (event.message, event.kept_version, event.rejected_version) == (
        "nope",
        "",
        S1.version(CLUSTER),
    )
