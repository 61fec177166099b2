"""Load assignments written as bytes are what protobuf writes for the same message.

The oracle, :func:`message_assignment`, builds the ``ClusterLoadAssignment``
field by field as the translator did before it wrote bytes; its deterministic
serialization is what the writer must produce for any endpoints, and the
translator's resources, hashes and versions are what the oracle's messages give.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.model import Endpoint, Locality, Mesh
from controlplane.translate import ENDPOINT_TYPE, ProxyClass, ProxyRole
from controlplane.translate.endpoints import assignment_bytes, is_ip, load_assignment
from controlplane.translate.protos import Message
from controlplane.translate.translator import Translator
from controlplane.translate.upstreams import Discovery, upstreams
from controlplane.xds import Snapshot
from controlplane.xds.snapshot import Resource
from tests.translate.support import ZONE_A, ZONE_B, kitchen_sink_mesh, reweighted


def message_assignment(cluster: str, endpoints: Iterable[Endpoint]) -> Message:
    """The assignment built as a message, field by field: the writer's oracle."""
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster)

    def order(e: Endpoint) -> tuple[str, str, str, str, int]:
        return (e.locality.region, e.locality.zone, e.locality.subzone, e.address, e.port)

    for locality, group in groupby(sorted(endpoints, key=order), key=lambda e: order(e)[:3]):
        entry = assignment.endpoints.add()
        entry.locality.SetInParent()
        entry.locality.region, entry.locality.zone, entry.locality.sub_zone = locality
        total = 0
        for endpoint in group:
            weight = max(endpoint.weight, 1)
            total += weight
            lb_endpoint = entry.lb_endpoints.add()
            socket = lb_endpoint.endpoint.address.socket_address
            socket.address = endpoint.address
            socket.port_value = endpoint.port
            lb_endpoint.load_balancing_weight.value = weight
        entry.load_balancing_weight.value = total
    return assignment


def oracle_bytes(cluster: str, endpoints: Iterable[Endpoint]) -> bytes:
    return message_assignment(cluster, endpoints).SerializeToString(deterministic=True)


def oracle_assignments(mesh: Mesh) -> list[Message]:
    """What the translator sent before it wrote bytes: one message per EDS cluster."""
    return [
        message_assignment(u.name, [e for e in u.selected_endpoints if is_ip(e.address)])
        for u in upstreams(mesh)
        if u.discovery is Discovery.EDS
    ]


texts = st.text(max_size=150)
localities = st.one_of(
    st.just(Locality()),
    st.sampled_from([ZONE_A, ZONE_B, Locality("us-east1"), Locality("", "", "s")]),
    st.builds(Locality, texts, texts, texts),
)
endpoints = st.builds(
    Endpoint,
    address=st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(str),
        st.sampled_from(["10.0.0.1", "10.0.0.2", "fd00::1", "web.internal"]),
        st.text(max_size=200),
    ),
    port=st.one_of(st.integers(0, 65535), st.sampled_from([0, 1, 127, 128, 16383, 16384, 65535])),
    # Up to 30 endpoints of at most 2**27 each: a group's sum fits the uint32 it is written as.
    weight=st.one_of(st.integers(-3, 300), st.integers(0, 2**27)),
    locality=localities,
)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200), st.lists(endpoints, max_size=30))
def test_assignment_bytes_are_the_deterministic_serialization_of_its_message(
    cluster: str, chosen: list[Endpoint]
) -> None:
    assert assignment_bytes(cluster, chosen) == oracle_bytes(cluster, chosen)


@settings(max_examples=100, deadline=None)
@given(st.lists(endpoints, max_size=12))
def test_a_load_assignment_message_equals_the_one_built_field_by_field(
    chosen: list[Endpoint],
) -> None:
    assert load_assignment("c", chosen) == message_assignment("c", chosen)


def test_an_assignment_without_endpoints_is_its_cluster_name_only() -> None:
    assert assignment_bytes("c", []) == b"\x0a\x01c" == oracle_bytes("c", [])


def test_port_zero_is_written_because_the_port_is_a_oneof_member() -> None:
    endpoint = Endpoint("10.0.0.1", 0)
    data = assignment_bytes("c", [endpoint])
    assert data == oracle_bytes("c", [endpoint])
    assert b"\x12\x0810.0.0.1\x18\x00" in data


def test_an_unknown_locality_is_written_as_an_empty_locality_message() -> None:
    data = assignment_bytes("c", [Endpoint("10.0.0.1", 80)])
    locality = b"\x0a\x00"
    socket = b"\x0a\x0c\x12\x0810.0.0.1\x18\x50"
    lb_endpoint = b"\x12\x16\x0a\x10\x0a\x0e" + socket + b"\x22\x02\x08\x01"
    group = locality + lb_endpoint + b"\x1a\x02\x08\x01"
    assert data == b"\x0a\x01c\x12\x1e" + group
    assert data == oracle_bytes("c", [Endpoint("10.0.0.1", 80)])


def test_lengths_over_127_take_several_bytes_as_protobuf_writes_them() -> None:
    far = Locality("r" * 200, "z" * 130, "s")
    chosen = [Endpoint(f"fd00::{i:x}", 65535, weight=2**31 // 40, locality=far) for i in range(40)]
    assert assignment_bytes("c" * 300, chosen) == oracle_bytes("c" * 300, chosen)


def test_a_group_weight_over_a_uint32_is_refused_as_by_the_message() -> None:
    heavy = [Endpoint("10.0.0.1", 80, weight=2**32 - 1), Endpoint("10.0.0.2", 80, weight=1)]
    with pytest.raises(ValueError):
        oracle_bytes("c", heavy)
    with pytest.raises(ValueError):
        assignment_bytes("c", heavy)


def wire(snapshot: Snapshot) -> dict[str, list[tuple[str, str, bytes]]]:
    return {
        url: [(name, r.hash, r.value) for name, r in snapshot.resources(url).items()]
        for url in snapshot.type_urls
    }


@pytest.mark.parametrize(
    "proxy",
    [ProxyClass(), ProxyClass(role=ProxyRole.GATEWAY, labels=(("app", "edge"),))],
    ids=["sidecar", "gateway"],
)
def test_translator_load_assignments_hash_and_version_as_the_oracle_messages(
    proxy: ProxyClass,
) -> None:
    mesh = kitchen_sink_mesh()
    translator = Translator(encode=Resource.from_message)
    for current in (mesh, reweighted(mesh, "web.shop.svc.cluster.local")):
        written = Snapshot(translator.translate(current, proxy))
        expected = sorted(oracle_assignments(current.seen_from(proxy.namespace)), key=_cluster)
        assert len(expected) > 5
        oracle = Snapshot({ENDPOINT_TYPE: [Resource.from_message(m) for m in expected]})
        assert wire(written)[ENDPOINT_TYPE] == wire(oracle)[ENDPOINT_TYPE]
        assert written.versions[ENDPOINT_TYPE] == oracle.versions[ENDPOINT_TYPE]


def test_translator_without_encoder_returns_the_oracle_messages() -> None:
    mesh = kitchen_sink_mesh()
    translated = Translator().translate(mesh, ProxyClass())[ENDPOINT_TYPE]
    assert translated == sorted(oracle_assignments(mesh), key=_cluster)


def _cluster(assignment: Message) -> str:
    return str(assignment.cluster_name)
