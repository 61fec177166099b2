"""The state-of-the-world rules of /work/shared/xds-conformance.md, one test (or a
few) per rule, against the server core alone and paired with the client core."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.errors import ProtocolError
from controlplane.xds import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    Ack,
    Nack,
    Snapshot,
    SotwClient,
    SotwStream,
    StaleRequest,
    content_version,
    short_name,
)
from tests.xds.resources import NODE, base_mesh, mesh, names

S1 = base_mesh()
EMPTY_VERSION = Snapshot.empty().version(CLUSTER)


def request(
    type_url: str,
    resource_names: tuple[str, ...] | list[str] = (),
    *,
    version: str = "",
    nonce: str = "",
    node: bool = False,
    error: str | None = None,
) -> Any:
    req = discovery_pb2.DiscoveryRequest(
        type_url=type_url,
        resource_names=list(resource_names),
        version_info=version,
        response_nonce=nonce,
    )
    if node:
        req.node.CopyFrom(NODE)
    if error is not None:
        req.error_detail.code = 3
        req.error_detail.message = error
    return req


def summary(responses: list[Any]) -> list[tuple[str, str, str, list[str]]]:
    return [(short_name(r.type_url), r.version_info, r.nonce, names(r)) for r in responses]


def v(snapshot: Snapshot, type_url: str) -> str:
    return snapshot.version(type_url)


def stream(snapshot: Snapshot = S1) -> SotwStream:
    return SotwStream(lambda node: snapshot)


def fully_subscribed(snapshot: Snapshot = S1) -> SotwStream:
    """A stream with CDS and LDS on wildcard, EDS on a and b, RDS on r1 (nonces 1-4)."""
    s = stream(snapshot)
    s.on_request(request(CLUSTER, node=True))
    s.on_request(request(ENDPOINT, ["a", "b"]))
    s.on_request(request(LISTENER))
    s.on_request(request(ROUTE, ["r1"]))
    return s


MOVED_A = {"a": ("10.0.0.9:80",), "b": ("10.0.0.2:80",)}
MOVED_B = {"a": ("10.0.0.1:80",), "b": ("10.0.0.8:80",)}
WITH_C = {"a": ("10.0.0.1:80",), "b": ("10.0.0.2:80",), "c": ("10.0.0.3:80",)}


# 1-12: versions, nonces, ACK and NACK


def test_rule_01_each_type_has_its_own_version_on_one_ads_stream():
    s = stream()
    cds = s.on_request(request(CLUSTER, node=True))
    lds = s.on_request(request(LISTENER))
    eds = s.on_request(request(ENDPOINT, ["a", "b"]))
    assert summary(cds + lds + eds) == [
        ("CDS", v(S1, CLUSTER), "1", ["a", "b"]),
        ("LDS", v(S1, LISTENER), "2", ["http"]),
        ("EDS", v(S1, ENDPOINT), "3", ["a", "b"]),
    ]
    assert len({v(S1, CLUSTER), v(S1, LISTENER), v(S1, ENDPOINT)}) == 3
    s2 = base_mesh(clusters=MOVED_A)
    assert summary(s.on_snapshot(s2)) == [("EDS", v(s2, ENDPOINT), "4", ["a"])]
    assert s.status(CLUSTER).version == v(S1, CLUSTER) == v(s2, CLUSTER)


def test_rule_02_every_response_has_a_new_nonce_and_nonces_restart_with_the_stream():
    s = stream()
    first = s.on_request(request(CLUSTER, node=True))
    second = s.on_request(request(LISTENER))
    third = s.on_snapshot(base_mesh(timeouts={"a": 5}))
    assert [r.nonce for r in first + second + third] == ["1", "2", "3"]
    again = stream()
    replay = again.on_request(request(CLUSTER, version="old", nonce="3", node=True))
    assert summary(replay) == [("CDS", v(S1, CLUSTER), "1", ["a", "b"])]
    assert again.pop_events() == []


def test_rule_03_node_of_the_first_request_is_remembered():
    looked_up: list[str] = []

    def lookup(node: base_pb2.Node) -> Snapshot:
        looked_up.append(node.id)
        return S1

    s = SotwStream(lookup)
    s.on_request(request(CLUSTER, node=True))
    other = request(LISTENER)
    other.node.id = "someone-else"
    assert summary(s.on_request(other)) == [("LDS", v(S1, LISTENER), "2", ["http"])]
    assert summary(s.on_request(request(ROUTE, ["r1"]))) == [("RDS", v(S1, ROUTE), "3", ["r1"])]
    assert looked_up == [NODE.id]
    assert s.node == NODE


def test_rule_03_first_request_without_node_is_a_client_protocol_error():
    with pytest.raises(ProtocolError) as caught:
        stream().on_request(request(CLUSTER))
    assert caught.value.culprit == "client"


def test_rule_04_ack_echoes_version_and_nonce_and_is_not_answered():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    assert s.on_request(request(CLUSTER, version=v(S1, CLUSTER), nonce="1")) == []
    assert s.pop_events() == [Ack(CLUSTER, v(S1, CLUSTER), "1")]
    assert s.status(CLUSTER).acked_version == v(S1, CLUSTER)


def test_rule_05_nack_is_told_by_error_detail_and_carries_the_last_good_version():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    s.on_request(request(CLUSTER, version=v(S1, CLUSTER), nonce="1"))
    s2 = base_mesh(timeouts={"a": 5})
    s.on_snapshot(s2)
    s.pop_events()
    nack = request(CLUSTER, version=v(S1, CLUSTER), nonce="2", error="bad cluster a")
    assert s.on_request(nack) == []
    assert s.pop_events() == [
        Nack(
            CLUSTER,
            rejected_version=v(s2, CLUSTER),
            kept_version=v(S1, CLUSTER),
            nonce="2",
            message="bad cluster a",
        )
    ]
    status = s.status(CLUSTER)
    assert (status.acked_version, status.nacked_version) == (v(S1, CLUSTER), v(s2, CLUSTER))


def test_rule_05_nack_echoing_the_sent_version_is_still_a_nack():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    s.on_request(request(CLUSTER, version=v(S1, CLUSTER), nonce="1", error="no"))
    assert [type(e) for e in s.pop_events()] == [Nack]


def test_rule_05_request_without_error_detail_is_an_ack_whatever_its_version():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    s.on_request(request(CLUSTER, version="something-else", nonce="1"))
    assert s.pop_events() == [Ack(CLUSTER, v(S1, CLUSTER), "1")]


def test_rule_06_snapshot_with_unchanged_content_sends_nothing():
    s = fully_subscribed()
    assert s.on_snapshot(base_mesh()) == []


def test_rule_06_nacked_resources_are_not_resent_until_they_change():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    s.on_request(request(CLUSTER, version=v(S1, CLUSTER), nonce="1", error="rejected"))
    assert s.on_snapshot(base_mesh()) == []
    assert s.on_request(request(CLUSTER, version=v(S1, CLUSTER), nonce="1")) == []
    s3 = base_mesh(timeouts={"b": 7})
    assert summary(s.on_snapshot(s3)) == [("CDS", v(s3, CLUSTER), "2", ["a", "b"])]


def test_rule_07_newer_request_replaces_the_older_subscription():
    s = stream()
    s.on_request(request(ENDPOINT, ["a", "b"], node=True))
    assert s.on_request(request(ENDPOINT, ["b"], version=v(S1, ENDPOINT), nonce="1")) == []
    assert s.on_snapshot(base_mesh(clusters=MOVED_A)) == []
    s3 = base_mesh(clusters={"a": ("10.0.0.9:80",), "b": ("10.0.0.8:80",)})
    assert summary(s.on_snapshot(s3)) == [("EDS", v(s3, ENDPOINT), "2", ["b"])]


def test_rule_08_request_with_a_stale_nonce_is_ignored():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    s2 = base_mesh(timeouts={"a": 5})
    s.on_snapshot(s2)
    assert s.on_request(request(CLUSTER, ["a"], version=v(S1, CLUSTER), nonce="1")) == []
    assert s.pop_events() == [StaleRequest(CLUSTER, nonce="1", expected_nonce="2")]
    status = s.status(CLUSTER)
    assert (status.wildcard, status.names, status.acked_version) == (True, frozenset(), "")


def test_rule_09_new_names_at_the_current_version_are_a_subscription_change():
    s = stream()
    s.on_request(request(ENDPOINT, ["a"], node=True))
    more = s.on_request(request(ENDPOINT, ["a", "b"], version=v(S1, ENDPOINT), nonce="1"))
    assert summary(more) == [("EDS", v(S1, ENDPOINT), "2", ["b"])]
    assert s.pop_events() == [Ack(ENDPOINT, v(S1, ENDPOINT), "1")]


def test_rule_10_reconnect_on_wildcard_at_the_current_version_is_not_resent():
    s = stream()
    assert s.on_request(request(CLUSTER, version=v(S1, CLUSTER), node=True)) == []
    assert s.status(CLUSTER).version == v(S1, CLUSTER)
    s2 = base_mesh(timeouts={"a": 5})
    assert summary(s.on_snapshot(s2)) == [("CDS", v(s2, CLUSTER), "1", ["a", "b"])]


def test_rule_10_reconnect_with_named_resources_is_answered_at_the_current_version():
    s = stream()
    answer = s.on_request(request(ENDPOINT, ["a", "b"], version=v(S1, ENDPOINT), node=True))
    assert summary(answer) == [("EDS", v(S1, ENDPOINT), "1", ["a", "b"])]


def test_rule_10_reconnect_with_an_older_version_is_answered():
    s = stream()
    answer = s.on_request(request(CLUSTER, version="0123456789abcdef", node=True))
    assert summary(answer) == [("CDS", v(S1, CLUSTER), "1", ["a", "b"])]


def test_rule_11_a_name_never_appears_twice_in_one_response():
    s = stream()
    cds = s.on_request(request(CLUSTER, ["a", "a", "*", "b"], node=True))
    eds = s.on_request(request(ENDPOINT, ["a", "a", "b", "b"]))
    assert summary(cds + eds) == [
        ("CDS", v(S1, CLUSTER), "1", ["a", "b"]),
        ("EDS", v(S1, ENDPOINT), "2", ["a", "b"]),
    ]


def test_rule_12_type_url_is_required_on_ads():
    s = stream()
    with pytest.raises(ProtocolError) as caught:
        s.on_request(request("", node=True))
    assert caught.value.culprit == "client"


def test_rule_12_every_any_carries_the_type_url_of_its_response():
    s = fully_subscribed()
    responses = s.on_snapshot(
        mesh(WITH_C, {"http": "r1", "admin": "r2"}, {"r1": ("c",), "r2": ("a",)})
    )
    assert len(responses) == 4
    for response in responses:
        assert {body.type_url for body in response.resources} == {response.type_url}


def test_rule_12_single_type_stream_fills_in_its_type_url_and_refuses_others():
    s = SotwStream(lambda node: S1, type_url=LISTENER)
    assert summary(s.on_request(request("", node=True))) == [
        ("LDS", v(S1, LISTENER), "1", ["http"])
    ]
    with pytest.raises(ProtocolError) as caught:
        s.on_request(request(CLUSTER))
    assert caught.value.culprit == "client"


# 13-19: subscriptions and wildcard


def test_rule_13_a_newly_requested_name_is_sent_even_though_it_did_not_change():
    s = stream()
    assert summary(s.on_request(request(CLUSTER, ["a"], node=True))) == [
        ("CDS", v(S1, CLUSTER), "1", ["a"])
    ]
    both = s.on_request(request(CLUSTER, ["a", "b"], version=v(S1, CLUSTER), nonce="1"))
    assert summary(both) == [("CDS", v(S1, CLUSTER), "2", ["a", "b"])]


def test_rule_14_star_subscribes_to_every_resource_including_new_ones():
    s = stream()
    assert summary(s.on_request(request(CLUSTER, ["*"], node=True))) == [
        ("CDS", v(S1, CLUSTER), "1", ["a", "b"])
    ]
    assert (s.status(CLUSTER).wildcard, s.status(CLUSTER).names) == (True, frozenset())
    s2 = base_mesh(clusters=WITH_C)
    assert summary(s.on_snapshot(s2)) == [("CDS", v(s2, CLUSTER), "2", ["a", "b", "c"])]


def test_rule_15_empty_first_request_is_legacy_wildcard_and_stays_so():
    s = stream()
    assert names(s.on_request(request(CLUSTER, node=True))[0]) == ["a", "b"]
    assert s.on_request(request(CLUSTER, version=v(S1, CLUSTER), nonce="1")) == []
    s2 = base_mesh(clusters=WITH_C)
    assert summary(s.on_snapshot(s2)) == [("CDS", v(s2, CLUSTER), "2", ["a", "b", "c"])]


def test_rule_15_empty_list_after_explicit_names_unsubscribes_everything():
    s = stream()
    s.on_request(request(CLUSTER, ["a"], node=True))
    assert s.on_request(request(CLUSTER, [], version=v(S1, CLUSTER), nonce="1")) == []
    assert (s.status(CLUSTER).wildcard, s.status(CLUSTER).names) == (False, frozenset())
    assert s.on_snapshot(base_mesh(clusters=WITH_C, timeouts={"a": 9})) == []


def test_rule_16_star_with_names_is_wildcard_plus_those_names():
    s = stream()
    answer = s.on_request(request(LISTENER, ["*", "not-yet"], node=True))
    assert summary(answer) == [("LDS", v(S1, LISTENER), "1", ["http"])]
    status = s.status(LISTENER)
    assert (status.wildcard, status.names) == (True, frozenset({"not-yet"}))
    s2 = mesh(BASE_CLUSTERS, {"http": "r1", "not-yet": "r1"}, {"r1": ("a",)})
    assert summary(s.on_snapshot(s2)) == [("LDS", v(s2, LISTENER), "2", ["http", "not-yet"])]


BASE_CLUSTERS = {"a": ("10.0.0.1:80",), "b": ("10.0.0.2:80",)}


def test_rule_17_names_that_do_not_exist_yet_are_sent_when_they_appear():
    s = stream()
    assert summary(s.on_request(request(ENDPOINT, ["a", "c"], node=True))) == [
        ("EDS", v(S1, ENDPOINT), "1", ["a"])
    ]
    s2 = base_mesh(clusters=WITH_C)
    assert summary(s.on_snapshot(s2)) == [("EDS", v(s2, ENDPOINT), "2", ["c"])]


def test_rule_18_unsubscribe_is_the_list_without_the_name_and_resubscribing_resends():
    s = stream()
    s.on_request(request(ENDPOINT, ["a", "b"], node=True))
    assert s.on_request(request(ENDPOINT, ["a"], version=v(S1, ENDPOINT), nonce="1")) == []
    assert s.status(ENDPOINT).names == {"a"}
    back = s.on_request(request(ENDPOINT, ["a", "b"], version=v(S1, ENDPOINT), nonce="1"))
    assert summary(back) == [("EDS", v(S1, ENDPOINT), "2", ["b"])]


def test_rule_19_several_names_and_several_streams_share_one_snapshot():
    one, two = stream(), stream()
    first = one.on_request(request(ENDPOINT, ["a", "b"], node=True))
    second = two.on_request(request(ENDPOINT, ["b", "a"], node=True))
    assert summary(first) == summary(second) == [("EDS", v(S1, ENDPOINT), "1", ["a", "b"])]
    assert list(first[0].resources) == [
        S1.resources(ENDPOINT)["a"].body,
        S1.resources(ENDPOINT)["b"].body,
    ]
    s2 = base_mesh(clusters=MOVED_B)
    assert (
        summary(one.on_snapshot(s2))
        == summary(two.on_snapshot(s2))
        == [("EDS", v(s2, ENDPOINT), "2", ["b"])]
    )


# 20-22: removal in state of the world


def test_rule_20_full_state_response_omits_deleted_names_and_can_be_empty():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    only_a = mesh({"a": ("10.0.0.1:80",)})
    assert summary(s.on_snapshot(only_a)) == [("CDS", v(only_a, CLUSTER), "2", ["a"])]
    nothing = s.on_snapshot(Snapshot.empty())
    assert summary(nothing) == [("CDS", EMPTY_VERSION, "3", [])]
    assert list(nothing[0].resources) == []


def test_rule_20_first_request_of_a_full_state_type_is_answered_even_when_empty():
    s = stream(Snapshot.empty())
    assert summary(s.on_request(request(LISTENER, node=True))) == [("LDS", EMPTY_VERSION, "1", [])]


def test_rule_21_partial_types_carry_only_changed_resources():
    s = stream()
    s.on_request(request(ENDPOINT, ["a", "b"], node=True))
    s2 = base_mesh(clusters=MOVED_B)
    assert summary(s.on_snapshot(s2)) == [("EDS", v(s2, ENDPOINT), "2", ["b"])]


def test_rule_21_partial_resource_that_disappears_and_returns_unchanged_is_resent():
    s = stream()
    s.on_request(request(ENDPOINT, ["a", "b"], node=True))
    without_b = mesh({"a": ("10.0.0.1:80",)})
    assert s.on_snapshot(without_b) == []
    assert summary(s.on_snapshot(S1)) == [("EDS", v(S1, ENDPOINT), "2", ["b"])]


def test_rule_21_partial_type_with_nothing_to_send_is_not_answered():
    s = stream()
    assert s.on_request(request(ROUTE, ["missing"], node=True)) == []


def test_rule_22_client_treats_a_missing_partial_resource_as_absent_after_15_seconds():
    now = [100.0]
    client = SotwClient(NODE, clock=lambda: now[0])
    server = stream()
    for response in server.on_request(client.request(ENDPOINT, ["a", "zz"])):
        client.on_response(response)
    now[0] = 114.9
    assert client.absent(ENDPOINT) == set()
    now[0] = 115.0
    assert client.absent(ENDPOINT) == {"zz"}
    assert sorted(client.resources(ENDPOINT)) == ["a"]


def test_rule_22_client_treats_a_name_missing_from_a_full_state_response_as_absent_at_once():
    client = SotwClient(NODE)
    server = stream()
    for response in server.on_request(client.request(CLUSTER, ["a", "x"])):
        client.on_response(response)
    assert client.absent(CLUSTER) == {"x"}


# 35-38: ordering and warming


def test_rule_35_a_change_to_every_type_is_pushed_cds_eds_lds_rds():
    s = fully_subscribed()
    s2 = mesh(
        {"a": ("10.0.0.9:80",), "b": ("10.0.0.2:80",), "c": ("10.0.0.3:80",)},
        {"http": "r1", "admin": "r2"},
        {"r1": ("a", "c"), "r2": ("b",)},
    )
    assert summary(s.on_snapshot(s2)) == [
        ("CDS", v(s2, CLUSTER), "5", ["a", "b", "c"]),
        ("EDS", v(s2, ENDPOINT), "6", ["a", "b"]),
        ("LDS", v(s2, LISTENER), "7", ["admin", "http"]),
        ("RDS", v(s2, ROUTE), "8", ["r1"]),
    ]


def test_rule_35_removed_clusters_are_deleted_only_after_routes_moved_away():
    s = fully_subscribed()
    s2 = mesh({"a": ("10.0.0.1:80",), "c": ("10.0.0.3:80",)}, {"http": "r1"}, {"r1": ("a", "c")})
    interim = {
        "a": s2.resources(CLUSTER)["a"],
        "b": S1.resources(CLUSTER)["b"],
        "c": s2.resources(CLUSTER)["c"],
    }
    assert summary(s.on_snapshot(s2)) == [
        ("CDS", content_version(interim), "5", ["a", "b", "c"]),
        ("EDS", v(s2, ENDPOINT), "6", ["a"]),
        ("RDS", v(s2, ROUTE), "7", ["r1"]),
        ("CDS", v(s2, CLUSTER), "8", ["a", "c"]),
    ]
    assert s.status(CLUSTER).nonce == "8"


def test_rule_35_cluster_removal_without_route_changes_is_a_single_response():
    start = mesh(BASE_CLUSTERS, {"http": "r1"}, {"r1": ("a",)})
    s = fully_subscribed(start)
    s2 = mesh({"a": ("10.0.0.1:80",)}, {"http": "r1"}, {"r1": ("a",)})
    assert summary(s.on_snapshot(s2)) == [
        ("CDS", v(s2, CLUSTER), "5", ["a"]),
        ("EDS", v(s2, ENDPOINT), "6", ["a"]),
    ]


def test_rule_36_eds_is_resent_after_any_cds_change_even_with_unchanged_endpoints():
    s = fully_subscribed()
    s2 = base_mesh(timeouts={"a": 5})
    assert v(s2, ENDPOINT) == v(S1, ENDPOINT)
    assert summary(s.on_snapshot(s2)) == [
        ("CDS", v(s2, CLUSTER), "5", ["a", "b"]),
        ("EDS", v(S1, ENDPOINT), "6", ["a", "b"]),
    ]


class Pair:
    """A server core and a client core joined by an in-memory, ordered "wire".

    The responses of one server event all reach the client before any of the
    client's answers reach the server, as on a real stream.
    """

    def __init__(self, snapshot: Snapshot, client: SotwClient) -> None:
        self.snapshot = snapshot
        self.server = SotwStream(lambda node: self.snapshot)
        self.client = client
        self.responses: list[Any] = []

    def send(self, *requests: Any) -> None:
        pending = deque(requests)
        while pending:
            answers = self.server.on_request(pending.popleft())
            pending.extend(self._deliver(answers))

    def push(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.send(*self._deliver(self.server.on_snapshot(snapshot)))

    def _deliver(self, responses: list[Any]) -> list[Any]:
        self.responses.extend(responses)
        return [req for response in responses for req in self.client.on_response(response)]

    def assert_converged(self, snapshot: Snapshot) -> None:
        for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
            assert sorted(self.client.resources(type_url)) == sorted(snapshot.resources(type_url))
            held = {
                n: m.SerializeToString(deterministic=True)
                for n, m in self.client.resources(type_url).items()
            }
            assert held == {n: r.body.value for n, r in snapshot.resources(type_url).items()}


def envoy_like(validate: Any = None) -> SotwClient:
    return SotwClient(NODE, follow=True, validate=validate)


def test_rule_37_routes_never_arrive_before_the_clusters_they_use():
    checked: list[str] = []
    client: SotwClient

    def routes_need_clusters(type_url: str, resources: Any) -> None:
        if type_url != ROUTE:
            return
        for config in resources.values():
            for host in config.virtual_hosts:
                for route in host.routes:
                    if route.route.cluster not in client.resources(CLUSTER):
                        raise ValueError(f"route to unknown cluster {route.route.cluster}")
                    checked.append(route.route.cluster)

    client = envoy_like(routes_need_clusters)
    pair = Pair(S1, client)
    pair.send(client.request(CLUSTER, []), client.request(LISTENER, []))
    s2 = mesh(WITH_C, {"http": "r1"}, {"r1": ("c",)})
    pair.push(s2)
    s3 = mesh({"d": ("10.0.0.4:80",)}, {"http": "r1"}, {"r1": ("d",)})
    pair.push(s3)
    assert all(client.last_error(t) == "" for t in (CLUSTER, ENDPOINT, LISTENER, ROUTE))
    assert checked == ["a", "b", "c", "d"]
    pair.assert_converged(s3)


def test_rule_38_one_ads_stream_orders_every_type_and_converges_with_acks():
    client = envoy_like()
    pair = Pair(S1, client)
    pair.send(client.request(CLUSTER, []), client.request(LISTENER, []))
    pair.assert_converged(S1)
    assert [short_name(r.type_url) for r in pair.responses] == ["CDS", "LDS", "EDS", "RDS"]
    s2 = mesh(
        {"a": ("10.0.0.9:80",), "c": ("10.0.0.3:80",)},
        {"http": "r1", "admin": "r2"},
        {"r1": ("a", "c"), "r2": ("a",)},
    )
    pair.responses.clear()
    pair.push(s2)
    pair.assert_converged(s2)
    assert [short_name(r.type_url) for r in pair.responses] == [
        "CDS",
        "EDS",
        "LDS",
        "RDS",
        "CDS",
        "EDS",
        "RDS",
    ]
    for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
        status = pair.server.status(type_url)
        assert status.acked_version == status.version == client.version(type_url)
        assert status.nacked_version == ""
    assert client.version(CLUSTER) == v(s2, CLUSTER)
