"""The agent's Node: the metadata keys an Envoy bootstrap uses, so it gets an Envoy's config."""

from __future__ import annotations

import pytest

from agents.node import NodeIdentity, parse_bind_address, parse_labels, parse_namespace
from controlplane import __version__
from controlplane.translate.proxy import ProxyClass, ProxyRole


def test_node_carries_role_labels_bind_address_and_user_agent() -> None:
    node = NodeIdentity(
        "gw-1", role="gateway", labels={"istio": "ingress", "app": "gw"}, bind_address="10.0.0.5"
    ).to_node()
    assert (node.id, node.user_agent_name, node.user_agent_version) == (
        "gw-1",
        "pilotfish-agent",
        __version__,
    )
    fields = node.metadata.fields
    assert fields["pilotfish.io/role"].string_value == "gateway"
    assert fields["pilotfish.io/bind-address"].string_value == "10.0.0.5"
    assert {k: v.string_value for k, v in fields["labels"].struct_value.fields.items()} == {
        "app": "gw",
        "istio": "ingress",
    }


def test_control_plane_classifies_the_agent_as_an_envoy_of_the_same_class() -> None:
    gateway = NodeIdentity("g", role="gateway", labels={"istio": "ingress"}, bind_address="::1")
    assert ProxyClass.from_node(gateway.to_node()) == ProxyClass(
        role=ProxyRole.GATEWAY, labels=(("istio", "ingress"),), bind_address="::1"
    )
    sidecar = NodeIdentity("s", bind_address="127.0.0.1")
    assert ProxyClass.from_node(sidecar.to_node()) == ProxyClass(
        role=ProxyRole.SIDECAR, bind_address="127.0.0.1"
    )


def test_labels_parse_from_comma_separated_pairs() -> None:
    assert parse_labels("app=web, version = v1,,") == {"app": "web", "version": "v1"}
    assert parse_labels("") == {}
    assert parse_labels("empty=") == {"empty": ""}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("app", "'app' is not a label like key=value"),
        ("=web", "'=web' is not a label like key=value"),
        ("a=1,a=2", "label 'a' is given twice"),
    ],
)
def test_bad_labels_are_refused_with_the_offending_part(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_labels(text)
    assert str(caught.value) == message


def test_bind_address_is_an_ip_address() -> None:
    assert parse_bind_address("[::1]") == "::1"
    assert parse_bind_address("127.0.0.1") == "127.0.0.1"
    with pytest.raises(ValueError) as caught:
        parse_bind_address("localhost")
    assert str(caught.value) == "'localhost' is not an IP address"


def test_the_namespace_goes_where_istio_bootstraps_put_it_and_selects_its_export_view() -> None:
    node = NodeIdentity("s", namespace="shop").to_node()
    assert node.metadata.fields["NAMESPACE"].string_value == "shop"
    assert ProxyClass.from_node(node) == ProxyClass(
        role=ProxyRole.SIDECAR, bind_address="127.0.0.1", namespace="shop"
    )
    assert ProxyClass.from_node(NodeIdentity("d").to_node()).namespace == "default"


def test_a_cache_written_for_another_namespace_is_not_one_for_this_proxy() -> None:
    assert "namespace" not in NodeIdentity("s").fingerprint()
    assert NodeIdentity("s", namespace="shop").fingerprint()["namespace"] == "shop"


@pytest.mark.parametrize("text", ["Shop", "-shop", "shop.prod", "", "a" * 64])
def test_a_namespace_that_is_not_a_dns_label_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a namespace name"):
        parse_namespace(text)
