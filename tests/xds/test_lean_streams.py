"""What a server stream core keeps while it waits: a server holds one per proxy, so
the idle state must stay small (see docs/performance.md, "Where the rest goes")."""

from __future__ import annotations

import gc

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.xds import CLUSTER, ENDPOINT, DeltaStream, SotwStream
from controlplane.xds import delta as delta_module
from controlplane.xds import stream as stream_module
from controlplane.xds.stream import Ack, StaleRequest
from controlplane.xds.subscription import Subscription
from tests.xds.resources import NODE, base_mesh

S1 = base_mesh()


@pytest.mark.parametrize("core_class", [SotwStream, DeltaStream])
def test_cores_are_slotted_and_decode_the_node_only_when_asked(core_class):
    core = core_class(lambda node: S1)
    assert not hasattr(core, "__dict__")
    assert (core.node, core.has_node) == (None, False)
    request = core_class.request_type(type_url=CLUSTER)
    request.node.CopyFrom(NODE)
    core.on_request(request)
    assert core.has_node
    assert core.node == NODE
    # Decoded anew each time: no decoded message (with its own arena) is kept.
    assert core.node is not core.node


@pytest.mark.parametrize("core_class", [SotwStream, DeltaStream])
def test_an_ads_stream_keys_its_types_by_the_shared_type_url_constants(core_class):
    core = core_class(lambda node: S1)
    request = core_class.request_type(type_url="".join(CLUSTER))  # an equal, distinct string
    request.node.CopyFrom(NODE)
    core.on_request(request)
    (kept,) = core._types
    assert kept is CLUSTER


def test_a_settled_delta_stream_holds_the_shared_empty_sets_and_no_pending_map():
    core = DeltaStream(lambda node: S1)
    first = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER)
    first.node.CopyFrom(NODE)
    (cds,) = core.on_request(first)
    (eds,) = core.on_request(
        discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=["a", "b"])
    )
    for response in (cds, eds):
        assert (
            core.on_request(
                discovery_pb2.DeltaDiscoveryRequest(
                    type_url=response.type_url, response_nonce=response.nonce
                )
            )
            == []
        )
    assert core._warming is delta_module._NONE
    for type_url in (CLUSTER, ENDPOINT):
        state = core._types[type_url]
        assert state.answer is delta_module._NONE
        assert state.pending is None
    assert core.pop_events() == [
        Ack(CLUSTER, cds.version, cds.nonce),
        Ack(ENDPOINT, eds.version, eds.nonce),
    ]
    assert core._events is None


def test_a_sotw_type_state_is_its_own_subscription():
    # One object per type and stream, not a state plus a Subscription (72 bytes more).
    core = SotwStream(lambda node: S1)
    first = discovery_pb2.DiscoveryRequest(type_url=ENDPOINT, resource_names=["a"])
    first.node.CopyFrom(NODE)
    core.on_request(first)
    state = core._types[ENDPOINT]
    assert isinstance(state, Subscription)
    assert (state.wildcard, state.names) == (False, frozenset({"a"}))
    assert not hasattr(state, "__dict__")
    assert not [r for r in gc.get_referents(state) if isinstance(r, Subscription)]


def test_delta_streams_subscribed_to_the_same_missing_names_share_one_absent_set():
    cores = []
    for _ in range(2):
        core = DeltaStream(lambda node: S1)
        first = discovery_pb2.DeltaDiscoveryRequest(
            type_url=ENDPOINT, resource_names_subscribe=["a", "gone-1", "gone-2"]
        )
        first.node.CopyFrom(NODE)
        (eds,) = core.on_request(first)
        assert sorted(eds.removed_names) == ["gone-1", "gone-2"]
        cores.append(core)
    one, other = (core._types[ENDPOINT].absent for core in cores)
    assert one == {"gone-1", "gone-2"}
    assert one is other


def test_a_delta_nonce_sent_again_after_it_was_settled_is_stale():
    core = DeltaStream(lambda node: S1)
    first = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER)
    first.node.CopyFrom(NODE)
    (cds,) = core.on_request(first)
    ack = discovery_pb2.DeltaDiscoveryRequest(type_url=CLUSTER, response_nonce=cds.nonce)
    assert core.on_request(ack) == []
    assert core.on_request(ack) == []
    assert core.pop_events() == [
        Ack(CLUSTER, cds.version, cds.nonce),
        StaleRequest(CLUSTER, cds.nonce, cds.nonce),
    ]


@pytest.mark.parametrize("core_class", [SotwStream, DeltaStream])
def test_streams_share_the_texts_of_their_nonces(core_class):
    cores = [core_class(lambda node: S1) for _ in range(2)]
    nonces = []
    for core in cores:
        request = core_class.request_type(type_url=CLUSTER)
        request.node.CopyFrom(NODE)
        (response,) = core.on_request(request)
        nonces.append(response.nonce)
    assert nonces[0] == "1"
    assert nonces[0] is nonces[1]
    assert cores[0]._types[CLUSTER].nonce is cores[1]._types[CLUSTER].nonce


def test_nonces_beyond_the_shared_texts_still_count_up():
    core = SotwStream(lambda node: S1)
    core._counter = len(stream_module._NONCES) - 1
    assert core._next_nonce() == str(len(stream_module._NONCES))
    assert core._next_nonce() == str(len(stream_module._NONCES) + 1)


@pytest.mark.parametrize(
    "node",
    [
        NODE,
        base_pb2.Node(cluster="only-cluster"),
        base_pb2.Node(id="ünïcode~10.0.0.1~pod.ns", cluster="c", user_agent_name="envoy"),
    ],
)
def test_the_node_id_is_read_from_the_encoding_as_decoding_would(node):
    core = SotwStream(lambda node: S1)
    assert core.node_id is None
    request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER)
    request.node.CopyFrom(node)
    request.node.metadata.fields["labels"].string_value = "x" * 300  # a long field to skip
    request.node.user_agent_build_version.version.major_number = 1
    request.node.extensions.add(name="envoy.filters.http.router", category="envoy.filters.http")
    core.on_request(request)
    assert core.node_id == core.node.id == node.id
