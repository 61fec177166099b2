"""ProxyClass: reading a proxy's class from its Envoy Node."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from controlplane.translate import ProxyClass, ProxyRole


def node(metadata: dict[str, Any] | None = None, node_id: str = "proxy-1") -> Any:
    result = base_pb2.Node(id=node_id, cluster="test")
    if metadata is not None:
        result.metadata.update(metadata)
    return result


def test_a_node_without_metadata_is_a_sidecar_binding_all_addresses() -> None:
    assert ProxyClass.from_node(node()) == ProxyClass(ProxyRole.SIDECAR, (), "0.0.0.0")


def test_a_gateway_node_keeps_its_labels_sorted_by_key() -> None:
    proxy = ProxyClass.from_node(
        node(
            {
                "pilotfish.io/role": "gateway",
                "labels": {"istio": "ingressgateway", "app": "edge"},
            }
        )
    )
    assert proxy == ProxyClass(
        ProxyRole.GATEWAY, (("app", "edge"), ("istio", "ingressgateway")), "0.0.0.0"
    )


def test_a_sidecar_node_drops_its_labels_since_they_do_not_change_its_config() -> None:
    proxy = ProxyClass.from_node(node({"pilotfish.io/role": "sidecar", "labels": {"app": "web"}}))
    assert proxy == ProxyClass(ProxyRole.SIDECAR, (), "0.0.0.0")


def test_the_bind_address_is_read_and_normalised() -> None:
    proxy = ProxyClass.from_node(node({"pilotfish.io/bind-address": " 127.0.0.1 "}))
    assert proxy.bind_address == "127.0.0.1"
    ipv6 = ProxyClass.from_node(node({"pilotfish.io/bind-address": "0:0:0:0:0:0:0:0"}))
    assert ipv6.bind_address == "::"


def test_the_role_is_read_case_insensitively() -> None:
    assert ProxyClass.from_node(node({"pilotfish.io/role": " Gateway "})).role is ProxyRole.GATEWAY


@pytest.mark.parametrize(
    "metadata",
    [
        {"pilotfish.io/role": 7},
        {"pilotfish.io/role": "ingress"},
        {"pilotfish.io/role": ["gateway"]},
        {"pilotfish.io/bind-address": "localhost"},
        {"pilotfish.io/bind-address": 127},
        {"pilotfish.io/bind-address": {"ip": "10.0.0.1"}},
        {"labels": "app=web"},
        {"labels": None},
    ],
    ids=lambda m: repr(m),
)
def test_malformed_metadata_falls_back_to_the_defaults(metadata: dict[str, Any]) -> None:
    assert ProxyClass.from_node(node(metadata)) == ProxyClass()


def test_gateway_labels_with_non_string_values_are_left_out() -> None:
    proxy = ProxyClass.from_node(
        node({"pilotfish.io/role": "gateway", "labels": {"app": "edge", "replicas": 3, "x": None}})
    )
    assert proxy.labels == (("app", "edge"),)


def test_a_gateway_with_malformed_labels_has_none() -> None:
    proxy = ProxyClass.from_node(node({"pilotfish.io/role": "gateway", "labels": ["app"]}))
    assert proxy == ProxyClass(ProxyRole.GATEWAY, (), "0.0.0.0")


def test_nodes_of_one_class_share_a_key_whatever_their_identity() -> None:
    first = ProxyClass.from_node(node({"labels": {"app": "a"}}, node_id="a"))
    second = ProxyClass.from_node(node({"labels": {"app": "b"}}, node_id="b"))
    assert first.key == second.key == "sidecar|0.0.0.0|{}"


def test_the_key_names_role_bind_address_and_labels() -> None:
    proxy = ProxyClass(ProxyRole.GATEWAY, (("app", "edge"), ("tier", "a|b")), "10.0.0.1")
    assert proxy.key == 'gateway|10.0.0.1|{"app":"edge","tier":"a|b"}'


def test_keys_differ_when_classes_differ() -> None:
    classes = [
        ProxyClass(),
        ProxyClass(bind_address="127.0.0.1"),
        ProxyClass(ProxyRole.GATEWAY),
        ProxyClass(ProxyRole.GATEWAY, (("app", "edge"),)),
        ProxyClass(ProxyRole.GATEWAY, (("app", "edge,x"),)),
        ProxyClass(ProxyRole.GATEWAY, (("app", "edge"), ("x", ""))),
    ]
    assert len({c.key for c in classes}) == len(classes)


def test_struct_values_of_every_kind_never_raise() -> None:
    value = struct_pb2.Value(list_value=struct_pb2.ListValue())
    broken = base_pb2.Node()
    broken.metadata.fields["pilotfish.io/role"].CopyFrom(value)
    broken.metadata.fields["labels"].CopyFrom(struct_pb2.Value())
    broken.metadata.fields["pilotfish.io/bind-address"].CopyFrom(struct_pb2.Value(bool_value=True))
    assert ProxyClass.from_node(broken) == ProxyClass()


@pytest.mark.parametrize(
    ("metadata", "node_id", "namespace"),
    [
        (None, "proxy-1", "default"),
        ({"NAMESPACE": "bookinfo"}, "proxy-1", "bookinfo"),
        ({"pilotfish.io/namespace": "shop"}, "proxy-1", "shop"),
        ({"NAMESPACE": "bookinfo", "pilotfish.io/namespace": "shop"}, "proxy-1", "bookinfo"),
        (None, "sidecar~10.0.0.1~reviews-v1-abc.bookinfo~bookinfo.svc.cluster.local", "bookinfo"),
        ({"NAMESPACE": "Not_A_Label"}, "proxy-1", "default"),
        ({"NAMESPACE": 7}, "proxy-1", "default"),
        (None, "sidecar~10.0.0.1~no-namespace~x", "default"),
    ],
)
def test_the_namespace_comes_from_istio_metadata_ours_or_an_istio_node_id(
    metadata: dict[str, Any] | None, node_id: str, namespace: str
) -> None:
    assert ProxyClass.from_node(node(metadata, node_id)).namespace == namespace


def test_the_namespace_splits_classes_and_the_default_one_keeps_the_old_key() -> None:
    default = ProxyClass.from_node(node({"NAMESPACE": "default"}))
    shop = ProxyClass.from_node(node({"NAMESPACE": "shop"}))
    grpc = ProxyClass.from_node(node({"NAMESPACE": "shop", "pilotfish.io/role": "grpc"}))
    assert default.key == "sidecar|0.0.0.0|{}"
    assert shop.key == "sidecar|0.0.0.0|{}|shop"
    assert grpc.key == "grpc|0.0.0.0|{}|shop"
