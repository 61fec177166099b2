"""Streams of proxies of one build share their nodes' build fields (user agent,
extensions, client features): one bytes object for all, the node's own fields per
stream, and the node decodes back to what the client sent."""

from __future__ import annotations

from unittest import mock

import pytest
from envoy.config.core.v3 import base_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.xds import CLUSTER, DeltaStream, SotwStream
from controlplane.xds import stream as stream_module
from controlplane.xds.interning import Interner
from tests.xds.resources import base_mesh

S1 = base_mesh()

CATEGORIES = ("envoy.filters.http", "envoy.filters.network", "envoy.transport_sockets.upstream")


def envoy_node(node_id: str, *, extensions: int = 200, build: str = "1.31.2") -> base_pb2.Node:
    """A node shaped like a real Envoy's: a few own fields, a long build part."""
    node = base_pb2.Node(
        id=node_id,
        cluster="payments",
        user_agent_name="envoy",
        client_features=["envoy.lb.does_not_support_overprovisioning", "xds.config.resource-ttl"],
    )
    node.user_agent_build_version.version.major_number = 1
    node.user_agent_build_version.metadata.fields["build.label"].string_value = build
    node.metadata.fields["pod"].string_value = node_id
    node.locality.zone = "eu-west-1a"
    for index in range(extensions):
        category = CATEGORIES[index % len(CATEGORIES)]
        extension = node.extensions.add(name=f"{category}.extension_{index}", category=category)
        extension.type_urls.append(f"type.googleapis.com/envoy.extensions.v3.Config{index}")
    return node


def first_request(core_class, node: base_pb2.Node):
    request = core_class.request_type(type_url=CLUSTER)
    request.node.CopyFrom(node)
    return request


def connected(node: base_pb2.Node, core_class=SotwStream):
    core = core_class(lambda node: S1)
    core.on_request(first_request(core_class, node))
    return core


@pytest.mark.parametrize("core_class", [SotwStream, DeltaStream])
def test_two_streams_of_one_build_share_one_bytes_object_and_keep_their_own_ids(core_class):
    first = connected(envoy_node("a"), core_class)
    second = connected(envoy_node("b"), core_class)
    assert first._node_shared is second._node_shared
    assert first._node_shared is not None
    assert (first.node_id, second.node_id) == ("a", "b")
    assert (first.node, second.node) == (envoy_node("a"), envoy_node("b"))
    # Only the node's own fields stay per stream.
    assert len(first._node) < 200


def test_the_shared_part_holds_exactly_the_build_fields():
    core = connected(envoy_node("a"))
    shared = base_pb2.Node.FromString(core._node_shared)
    own = base_pb2.Node.FromString(core._node)
    expected = envoy_node("a")
    for name in ("id", "cluster", "metadata", "locality"):
        expected.ClearField(name)
    assert shared == expected
    assert [field.name for field, _ in own.ListFields()] == [
        "id",
        "cluster",
        "metadata",
        "locality",
    ]


def test_a_small_node_or_one_without_build_fields_is_kept_whole():
    small = base_pb2.Node(id="proxy-1", cluster="c", user_agent_name="envoy")
    core = connected(small)
    assert (core._node, core._node_shared) == (small.SerializeToString(deterministic=True), None)
    assert core.node == small
    no_build = envoy_node("a", extensions=0)
    no_build.ClearField("client_features")
    no_build.ClearField("user_agent_name")
    no_build.ClearField("user_agent_build_version")
    no_build.metadata.fields["padding"].string_value = "x" * 600
    core = connected(no_build)
    assert (core._node, core._node_shared) == (no_build.SerializeToString(deterministic=True), None)
    assert (core.node, core.node_id) == (no_build, "a")


def test_distinct_builds_beyond_the_table_budget_push_older_ones_out_and_still_decode(
    monkeypatch,
):
    table: Interner[bytes] = Interner(64 * 1024, len)
    monkeypatch.setattr(stream_module, "_SHARED_PARTS", table)
    cores = [connected(envoy_node(f"p{build}", build=f"build-{build}")) for build in range(40)]
    assert table.size <= 64 * 1024
    assert 1 <= len(table) < 40
    for build, core in enumerate(cores):
        assert core.node == envoy_node(f"p{build}", build=f"build-{build}")
        assert core.node_id == f"p{build}"
    # A dropped build comes back as a new shared object, no longer the old stream's.
    again = connected(envoy_node("q", build="build-0"))
    assert again._node_shared == cores[0]._node_shared
    assert again._node_shared is not cores[0]._node_shared
    assert again._node_shared is connected(envoy_node("r", build="build-0"))._node_shared


def test_a_node_with_unknown_fields_decodes_back_with_them():
    node = envoy_node("a")
    # Field 99, start group / end group: the client may send fields this server does not know.
    wire = node.SerializeToString() + b"\x9b\x06\x9c\x06"
    request = SotwStream.request_type(type_url=CLUSTER)
    request.node.MergeFromString(wire)
    core = SotwStream(lambda node: S1)
    core.on_request(request)
    # Unknown fields come last in the encoding, so they ride along with the shared part.
    assert core._node_shared == connected(envoy_node("b"))._node_shared + b"\x9b\x06\x9c\x06"
    assert core.node == request.node
    assert core.node != node
    assert core.node_id == "a"


texts = st.text(max_size=12)
nodes = st.builds(
    lambda *fields: _node(*fields),
    texts,
    texts,
    texts,
    st.one_of(st.none(), texts, st.integers(0, 2**20)),
    st.lists(texts, max_size=30),
    st.lists(st.tuples(texts, texts, st.lists(texts, max_size=3)), max_size=40),
    st.dictionaries(texts, st.one_of(texts, st.floats(allow_nan=False)), max_size=4),
    texts,
    st.lists(st.integers(0, 65535), max_size=3),
    st.dictionaries(texts, texts, max_size=3),
)


def _node(
    node_id, cluster, agent, version, features, extensions, meta, zone, addresses, params
) -> base_pb2.Node:
    node = base_pb2.Node(
        id=node_id, cluster=cluster, user_agent_name=agent, client_features=features
    )
    if isinstance(version, str):
        node.user_agent_version = version
    elif isinstance(version, int):
        node.user_agent_build_version.version.minor_number = version
    for name, category, type_urls in extensions:
        node.extensions.add(name=name, category=category, type_urls=type_urls)
    for key, value in meta.items():
        if isinstance(value, str):
            node.metadata.fields[key].string_value = value
        else:
            node.metadata.fields[key].number_value = value
    if zone:
        node.locality.zone = zone
    for port in addresses:  # field 11, above the shared ones
        node.listening_addresses.add().socket_address.port_value = port
    for key, value in params.items():  # field 12
        node.dynamic_parameters[key].params[key] = value
    return node


@settings(max_examples=300, deadline=None)
@given(nodes, st.sampled_from([0, 512]))
def test_the_kept_node_decodes_to_the_requests_node(node, split_from):
    with mock.patch.object(stream_module, "_SPLIT_FROM", split_from):
        core = connected(node)
    assert core.node == node
    assert core.node_id == node.id
    has_build = any(field.number in stream_module._SHARED_FIELDS for field, _ in node.ListFields())
    if split_from == 0:
        assert (core._node_shared is not None) == has_build
    if core._node_shared is not None:
        own = base_pb2.Node.FromString(core._node)
        shared = base_pb2.Node.FromString(core._node_shared)
        assert {field.number for field, _ in shared.ListFields()} <= stream_module._SHARED_FIELDS
        assert not {field.number for field, _ in own.ListFields()} & stream_module._SHARED_FIELDS
