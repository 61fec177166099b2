"""The delta rules (23-34) of /work/shared/xds-conformance.md, plus the ordering and
warming rules as they apply to delta, against the server core alone and paired with
the client core in memory."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
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
    DeltaClient,
    DeltaStream,
    Nack,
    Snapshot,
    SotwClient,
    SotwStream,
    StaleRequest,
    short_name,
)
from tests.xds.resources import NODE, base_mesh, mesh

S1 = base_mesh()
EMPTY_VERSION = Snapshot.empty().version(CLUSTER)
MOVED_A = {"a": ("10.0.0.9:80",), "b": ("10.0.0.2:80",)}
MOVED_BOTH = {"a": ("10.0.0.9:80",), "b": ("10.0.0.8:80",)}
WITH_C = {"a": ("10.0.0.1:80",), "b": ("10.0.0.2:80",), "c": ("10.0.0.3:80",)}
ALL_TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)


def request(
    type_url: str,
    subscribe: Sequence[str] = (),
    unsubscribe: Sequence[str] = (),
    *,
    nonce: str = "",
    node: bool = False,
    error: str | None = None,
    initial: Mapping[str, str] | None = None,
) -> Any:
    req = discovery_pb2.DeltaDiscoveryRequest(
        type_url=type_url,
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        response_nonce=nonce,
    )
    for name, version in (initial or {}).items():
        req.initial_resource_versions[name] = version
    if node:
        req.node.CopyFrom(NODE)
    if error is not None:
        req.error_detail.code = 3
        req.error_detail.message = error
    return req


Summary = tuple[str, str, str, list[str], list[str]]


def summary(responses: list[Any]) -> list[Summary]:
    """(type, system version, nonce, resource names, removed names) per response."""
    return [
        (
            short_name(r.type_url),
            r.system_version_info,
            r.nonce,
            [item.name for item in r.resources],
            list(r.removed_resources),
        )
        for r in responses
    ]


def v(snapshot: Snapshot, type_url: str) -> str:
    return snapshot.version(type_url)


def h(snapshot: Snapshot, type_url: str, name: str) -> str:
    return snapshot.resources(type_url)[name].hash


def stream(snapshot: Snapshot = S1) -> DeltaStream:
    return DeltaStream(lambda node: snapshot)


def fully_subscribed(snapshot: Snapshot = S1) -> DeltaStream:
    """CDS and LDS on legacy wildcard, EDS on a and b, RDS on r1 (nonces 1-4)."""
    s = stream(snapshot)
    s.on_request(request(CLUSTER, node=True))
    s.on_request(request(ENDPOINT, ["a", "b"]))
    s.on_request(request(LISTENER))
    s.on_request(request(ROUTE, ["r1"]))
    return s


# -- the server core alone ---------------------------------------------------------------


def test_first_request_without_node_is_a_client_protocol_error():
    with pytest.raises(ProtocolError) as caught:
        stream().on_request(request(CLUSTER))
    assert caught.value.culprit == "client"


def test_node_of_the_first_request_is_remembered_and_looked_up_once():
    looked_up: list[str] = []

    def lookup(node: base_pb2.Node) -> Snapshot:
        looked_up.append(node.id)
        return S1

    s = DeltaStream(lookup)
    s.on_request(request(CLUSTER, node=True))
    other = request(ENDPOINT, ["a"])
    other.node.id = "someone-else"
    assert summary(s.on_request(other)) == [("EDS", v(S1, ENDPOINT), "2", ["a"], [])]
    assert looked_up == [NODE.id]
    assert s.node == NODE


def test_rule_23_every_response_has_a_new_nonce_and_the_type_version_as_system_version():
    s = stream()
    cds = s.on_request(request(CLUSTER, node=True))
    eds = s.on_request(request(ENDPOINT, ["a", "b"]))
    lds = s.on_request(request(LISTENER))
    s2 = base_mesh(clusters=MOVED_A)
    pushed = s.on_snapshot(s2)
    assert summary(cds + eds + lds + pushed) == [
        ("CDS", v(S1, CLUSTER), "1", ["a", "b"], []),
        ("EDS", v(S1, ENDPOINT), "2", ["a", "b"], []),
        ("LDS", v(S1, LISTENER), "3", ["http"], []),
        ("EDS", v(s2, ENDPOINT), "4", ["a"], []),
    ]


def test_rule_23_each_resource_carries_its_content_hash_as_version_and_the_shared_any():
    (cds,) = stream().on_request(request(CLUSTER, node=True))
    assert [(r.name, r.version) for r in cds.resources] == [
        ("a", h(S1, CLUSTER, "a")),
        ("b", h(S1, CLUSTER, "b")),
    ]
    assert [r.resource for r in cds.resources] == [
        S1.resources(CLUSTER)["a"].body,
        S1.resources(CLUSTER)["b"].body,
    ]


def test_rule_23_system_version_is_not_used_to_decide_what_to_send():
    s = stream()
    s.on_request(request(ENDPOINT, ["a", "b"], node=True))
    s2 = base_mesh(clusters=MOVED_A)
    assert summary(s.on_snapshot(s2)) == [("EDS", v(s2, ENDPOINT), "2", ["a"], [])]
    assert summary(s.on_snapshot(S1)) == [("EDS", v(S1, ENDPOINT), "3", ["a"], [])]


def test_rule_24_a_request_echoing_a_nonce_is_an_ack_and_is_not_answered():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    assert s.on_request(request(CLUSTER, nonce="1")) == []
    assert s.pop_events() == [Ack(CLUSTER, v(S1, CLUSTER), "1")]
    assert s.status(CLUSTER).acked_version == v(S1, CLUSTER)


def test_rule_24_error_detail_makes_it_a_nack_that_keeps_the_last_acked_version():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    s.on_request(request(CLUSTER, nonce="1"))
    s2 = base_mesh(timeouts={"a": 5})
    assert summary(s.on_snapshot(s2)) == [("CDS", v(s2, CLUSTER), "2", ["a"], [])]
    s.pop_events()
    assert s.on_request(request(CLUSTER, nonce="2", error="cluster a: bad timeout")) == []
    assert s.pop_events() == [
        Nack(
            CLUSTER,
            rejected_version=v(s2, CLUSTER),
            kept_version=v(S1, CLUSTER),
            nonce="2",
            message="cluster a: bad timeout",
        )
    ]
    status = s.status(CLUSTER)
    assert (status.acked_version, status.nacked_version) == (v(S1, CLUSTER), v(s2, CLUSTER))


def test_rule_24_a_spontaneous_subscription_has_no_nonce_and_is_neither_ack_nor_nack():
    s = stream()
    s.on_request(request(ENDPOINT, ["a"], node=True))
    assert summary(s.on_request(request(ENDPOINT, ["b"]))) == [
        ("EDS", v(S1, ENDPOINT), "2", ["b"], [])
    ]
    assert s.pop_events() == []
    assert s.status(ENDPOINT).acked_version == ""


def test_rule_24_each_response_is_acked_or_nacked_by_its_own_nonce():
    s = stream()
    s.on_request(request(ENDPOINT, ["a"], node=True))
    s.on_request(request(ENDPOINT, ["b"]))
    assert s.on_request(request(ENDPOINT, nonce="1")) == []
    assert s.on_request(request(ENDPOINT, nonce="2", error="b is bad")) == []
    version = v(S1, ENDPOINT)
    assert s.pop_events() == [
        Ack(ENDPOINT, version, "1"),
        Nack(
            ENDPOINT, rejected_version=version, kept_version=version, nonce="2", message="b is bad"
        ),
    ]


def test_rule_24_nacked_resources_are_not_resent_until_they_change():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    assert s.on_request(request(CLUSTER, nonce="1", error="rejected")) == []
    assert s.on_snapshot(base_mesh()) == []
    s3 = base_mesh(timeouts={"b": 7})
    assert summary(s.on_snapshot(s3)) == [("CDS", v(s3, CLUSTER), "2", ["b"], [])]


def test_rule_25_subscription_changes_apply_even_with_a_stale_nonce():
    s = stream()
    s.on_request(request(ENDPOINT, ["a", "b"], node=True))
    answer = s.on_request(request(ENDPOINT, ["c"], ["b"], nonce="7"))
    assert summary(answer) == [("EDS", v(S1, ENDPOINT), "2", [], ["c"])]
    assert s.pop_events() == [StaleRequest(ENDPOINT, nonce="7", expected_nonce="1")]
    assert s.status(ENDPOINT).names == {"a", "c"}
    s2 = base_mesh(clusters=MOVED_BOTH)
    assert summary(s.on_snapshot(s2)) == [("EDS", v(s2, ENDPOINT), "3", ["a"], [])]


def test_rule_25_an_already_settled_nonce_is_stale_but_its_subscription_counts():
    s = stream()
    s.on_request(request(ENDPOINT, ["a"], node=True))
    s.on_request(request(ENDPOINT, nonce="1"))
    answer = s.on_request(request(ENDPOINT, ["b"], nonce="1"))
    assert summary(answer) == [("EDS", v(S1, ENDPOINT), "2", ["b"], [])]
    assert s.pop_events() == [
        Ack(ENDPOINT, v(S1, ENDPOINT), "1"),
        StaleRequest(ENDPOINT, nonce="1", expected_nonce="1"),
    ]


def test_rule_26_subscribe_lists_add_to_the_subscription_without_resending_others():
    s = stream()
    s.on_request(request(ENDPOINT, ["a"], node=True))
    assert summary(s.on_request(request(ENDPOINT, ["b"], nonce="1"))) == [
        ("EDS", v(S1, ENDPOINT), "2", ["b"], [])
    ]
    assert s.status(ENDPOINT).names == {"a", "b"}


def test_rule_26_empty_lists_change_nothing():
    s = stream()
    s.on_request(request(ENDPOINT, ["a"], node=True))
    assert s.on_request(request(ENDPOINT)) == []
    assert s.status(ENDPOINT).names == {"a"}
    s2 = base_mesh(clusters=MOVED_BOTH)
    assert summary(s.on_snapshot(s2)) == [("EDS", v(s2, ENDPOINT), "2", ["a"], [])]


def test_rule_26_empty_lists_keep_a_legacy_wildcard():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    assert s.on_request(request(CLUSTER, nonce="1")) == []
    s2 = base_mesh(clusters=WITH_C)
    assert summary(s.on_snapshot(s2)) == [("CDS", v(s2, CLUSTER), "2", ["c"], [])]


def test_rule_27_a_name_subscribed_again_is_sent_again_although_current():
    s = stream()
    s.on_request(request(ENDPOINT, ["a", "b"], node=True))
    assert summary(s.on_request(request(ENDPOINT, ["a"], nonce="1"))) == [
        ("EDS", v(S1, ENDPOINT), "2", ["a"], [])
    ]


def test_rule_27_a_missing_name_subscribed_again_is_reported_missing_again():
    s = stream()
    assert summary(s.on_request(request(ENDPOINT, ["zz"], node=True))) == [
        ("EDS", v(S1, ENDPOINT), "1", [], ["zz"])
    ]
    assert summary(s.on_request(request(ENDPOINT, ["zz"], nonce="1"))) == [
        ("EDS", v(S1, ENDPOINT), "2", [], ["zz"])
    ]


def test_rule_28_unsubscribing_names_never_subscribed_is_ignored():
    s = stream()
    s.on_request(request(ENDPOINT, ["a"], node=True))
    assert s.on_request(request(ENDPOINT, unsubscribe=["b", "zz"])) == []
    assert s.status(ENDPOINT).names == {"a"}
    assert s.resource_versions(ENDPOINT) == {"a": h(S1, ENDPOINT, "a")}


def test_rule_28_unsubscribing_a_name_only_covered_by_the_wildcard_is_ignored():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    assert s.on_request(request(CLUSTER, unsubscribe=["a"])) == []
    s2 = base_mesh(timeouts={"a": 3})
    assert summary(s.on_snapshot(s2)) == [("CDS", v(s2, CLUSTER), "2", ["a"], [])]


def test_rule_29_a_pure_unsubscribe_is_not_answered_and_the_name_is_no_longer_sent():
    s = stream()
    s.on_request(request(ENDPOINT, ["a", "b"], node=True))
    assert s.on_request(request(ENDPOINT, unsubscribe=["b"], nonce="1")) == []
    assert s.resource_versions(ENDPOINT) == {"a": h(S1, ENDPOINT, "a")}
    s2 = base_mesh(clusters=MOVED_BOTH)
    assert summary(s.on_snapshot(s2)) == [("EDS", v(s2, ENDPOINT), "2", ["a"], [])]
    assert summary(s.on_snapshot(mesh({"a": ("10.0.0.9:80",)}))) == []


def test_rule_29_unsubscribing_then_resubscribing_sends_the_resource_again():
    s = stream()
    s.on_request(request(ENDPOINT, ["a", "b"], node=True))
    s.on_request(request(ENDPOINT, unsubscribe=["b"]))
    assert summary(s.on_request(request(ENDPOINT, ["b"]))) == [
        ("EDS", v(S1, ENDPOINT), "2", ["b"], [])
    ]


def test_rule_29_on_wildcard_unsubscribing_an_explicit_name_resends_what_the_wildcard_covers():
    s = stream()
    assert summary(s.on_request(request(LISTENER, ["*", "http"], node=True))) == [
        ("LDS", v(S1, LISTENER), "1", ["http"], [])
    ]
    assert summary(s.on_request(request(LISTENER, unsubscribe=["http"], nonce="1"))) == [
        ("LDS", v(S1, LISTENER), "2", ["http"], [])
    ]
    status = s.status(LISTENER)
    assert (status.wildcard, status.names) == (True, frozenset())


def test_rule_29_on_wildcard_unsubscribing_a_missing_explicit_name_removes_it():
    s = stream()
    assert summary(s.on_request(request(LISTENER, ["*", "ghost"], node=True))) == [
        ("LDS", v(S1, LISTENER), "1", ["http"], ["ghost"])
    ]
    assert summary(s.on_request(request(LISTENER, unsubscribe=["ghost"], nonce="1"))) == [
        ("LDS", v(S1, LISTENER), "2", [], ["ghost"])
    ]


def test_rule_30_deleted_resources_are_listed_in_removed_resources():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    s.on_request(request(ENDPOINT, ["a", "b"]))
    only_a = mesh({"a": ("10.0.0.1:80",)})
    assert summary(s.on_snapshot(only_a)) == [
        ("CDS", v(only_a, CLUSTER), "3", [], ["b"]),
        ("EDS", v(only_a, ENDPOINT), "4", [], ["b"]),
    ]
    assert s.resource_versions(CLUSTER) == {"a": h(S1, CLUSTER, "a")}
    assert summary(s.on_snapshot(Snapshot.empty())) == [
        ("CDS", EMPTY_VERSION, "5", [], ["a"]),
        ("EDS", EMPTY_VERSION, "6", [], ["a"]),
    ]


def test_rule_30_a_deleted_resource_that_returns_unchanged_is_sent_again():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    s.on_request(request(ENDPOINT, ["a", "b"]))
    s.on_snapshot(mesh({"a": ("10.0.0.1:80",)}))
    assert summary(s.on_snapshot(S1)) == [
        ("CDS", v(S1, CLUSTER), "5", ["b"], []),
        ("EDS", v(S1, ENDPOINT), "6", ["b"], []),
    ]


def test_rule_31_a_subscribed_name_that_does_not_exist_is_removed_once_and_sent_when_it_appears():
    s = stream()
    assert summary(s.on_request(request(ENDPOINT, ["a", "c"], node=True))) == [
        ("EDS", v(S1, ENDPOINT), "1", ["a"], ["c"])
    ]
    s2 = base_mesh(clusters=MOVED_A)
    assert summary(s.on_snapshot(s2)) == [("EDS", v(s2, ENDPOINT), "2", ["a"], [])]
    s3 = base_mesh(clusters={**MOVED_A, "c": ("10.0.0.3:80",)})
    assert summary(s.on_snapshot(s3)) == [("EDS", v(s3, ENDPOINT), "3", ["c"], [])]


def test_rule_31_a_missing_name_is_reported_although_nothing_else_is_sent():
    s = stream()
    assert summary(s.on_request(request(ROUTE, ["missing"], node=True))) == [
        ("RDS", v(S1, ROUTE), "1", [], ["missing"])
    ]


def test_rule_32_reconnect_with_current_versions_resends_nothing():
    s = stream()
    assert s.on_request(request(CLUSTER, node=True, initial=S1.name_hashes(CLUSTER))) == []
    eds = request(ENDPOINT, ["a", "b"], initial=S1.name_hashes(ENDPOINT))
    assert s.on_request(eds) == []
    assert s.resource_versions(CLUSTER) == S1.name_hashes(CLUSTER)
    s2 = base_mesh(clusters=MOVED_A)
    assert summary(s.on_snapshot(s2)) == [("EDS", v(s2, ENDPOINT), "1", ["a"], [])]


def test_rule_32_reconnect_resends_only_what_changed_and_removes_what_is_gone():
    s = stream()
    initial = {"a": "0" * 64, "b": h(S1, CLUSTER, "b"), "gone": "1" * 64}
    assert summary(s.on_request(request(CLUSTER, node=True, initial=initial))) == [
        ("CDS", v(S1, CLUSTER), "1", ["a"], ["gone"])
    ]


def test_rule_32_initial_versions_count_only_on_the_first_request_of_a_type():
    s = stream()
    s.on_request(request(ENDPOINT, ["a"], node=True))
    later = request(ENDPOINT, ["b"], initial={"b": h(S1, ENDPOINT, "b")})
    assert summary(s.on_request(later)) == [("EDS", v(S1, ENDPOINT), "2", ["b"], [])]


def test_rule_32_initial_versions_of_names_not_subscribed_are_ignored():
    s = stream()
    hashes = S1.name_hashes(ENDPOINT)
    assert s.on_request(request(ENDPOINT, ["a"], node=True, initial=hashes)) == []
    assert s.resource_versions(ENDPOINT) == {"a": hashes["a"]}
    assert summary(s.on_request(request(ENDPOINT, ["b"]))) == [
        ("EDS", v(S1, ENDPOINT), "1", ["b"], [])
    ]


def test_rule_33_star_is_the_wildcard_and_covers_resources_added_later():
    s = stream()
    assert summary(s.on_request(request(CLUSTER, ["*"], node=True))) == [
        ("CDS", v(S1, CLUSTER), "1", ["a", "b"], [])
    ]
    assert (s.status(CLUSTER).wildcard, s.status(CLUSTER).names) == (True, frozenset())
    s2 = base_mesh(clusters=WITH_C)
    assert summary(s.on_snapshot(s2)) == [("CDS", v(s2, CLUSTER), "2", ["c"], [])]


def test_rule_33_an_empty_first_request_is_the_legacy_wildcard_for_lds_and_cds_only():
    s = stream()
    lds = s.on_request(request(LISTENER, node=True))
    eds = s.on_request(request(ENDPOINT))
    assert summary(lds + eds) == [("LDS", v(S1, LISTENER), "1", ["http"], [])]
    assert (s.status(LISTENER).wildcard, s.status(ENDPOINT).wildcard) == (True, False)


def test_rule_33_a_new_wildcard_subscriber_is_answered_even_when_nothing_exists():
    s = stream(Snapshot.empty())
    assert summary(s.on_request(request(CLUSTER, node=True))) == [
        ("CDS", EMPTY_VERSION, "1", [], [])
    ]


def test_rule_33_subscribing_a_name_on_the_legacy_wildcard_keeps_the_wildcard():
    s = stream()
    s.on_request(request(LISTENER, node=True))
    assert summary(s.on_request(request(LISTENER, ["admin"], nonce="1"))) == [
        ("LDS", v(S1, LISTENER), "2", [], ["admin"])
    ]
    status = s.status(LISTENER)
    assert (status.wildcard, status.names) == (True, frozenset({"admin"}))


def test_rule_33_unsubscribing_star_leaves_the_wildcard_and_keeps_explicit_names():
    s = stream()
    s.on_request(request(CLUSTER, ["*", "a"], node=True))
    assert s.on_request(request(CLUSTER, unsubscribe=["*"], nonce="1")) == []
    assert s.resource_versions(CLUSTER) == {"a": h(S1, CLUSTER, "a")}
    s2 = base_mesh(clusters=WITH_C, timeouts={"a": 9, "b": 9})
    assert summary(s.on_snapshot(s2)) == [("CDS", v(s2, CLUSTER), "2", ["a"], [])]


def test_rule_34_each_type_has_its_own_subscription_and_nonces_on_one_ads_stream():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    s.on_request(request(ENDPOINT, ["a"]))
    assert s.on_request(request(ENDPOINT, nonce="1")) == []
    assert s.on_request(request(CLUSTER, nonce="1")) == []
    assert s.pop_events() == [
        StaleRequest(ENDPOINT, nonce="1", expected_nonce="2"),
        Ack(CLUSTER, v(S1, CLUSTER), "1"),
    ]
    cds, eds = s.status(CLUSTER), s.status(ENDPOINT)
    assert (cds.wildcard, cds.names, cds.acked_version) == (True, frozenset(), v(S1, CLUSTER))
    assert (eds.wildcard, eds.names, eds.acked_version) == (False, frozenset({"a"}), "")


def test_rule_34_type_url_is_required_on_ads():
    with pytest.raises(ProtocolError) as caught:
        stream().on_request(request("", node=True))
    assert caught.value.culprit == "client"


def test_rule_34_single_type_stream_fills_in_its_type_url_and_refuses_others():
    s = DeltaStream(lambda node: S1, type_url=LISTENER)
    assert summary(s.on_request(request("", node=True))) == [
        ("LDS", v(S1, LISTENER), "1", ["http"], [])
    ]
    with pytest.raises(ProtocolError) as caught:
        s.on_request(request(CLUSTER))
    assert caught.value.culprit == "client"


# -- ordering and warming ----------------------------------------------------------------


def test_rule_35_upserts_go_cds_eds_lds_rds_then_removals_parents_first():
    s = fully_subscribed()
    s2 = mesh(
        {"a": ("10.0.0.9:80",), "c": ("10.0.0.3:80",)},
        {"admin": "r2"},
        {"r2": ("a", "c")},
    )
    assert summary(s.on_snapshot(s2)) == [
        ("CDS", v(s2, CLUSTER), "5", ["c"], []),
        ("EDS", v(s2, ENDPOINT), "6", ["a"], []),
        ("LDS", v(s2, LISTENER), "7", ["admin"], ["http"]),
        ("RDS", v(s2, ROUTE), "8", [], ["r1"]),
        ("CDS", v(s2, CLUSTER), "9", [], ["b"]),
        ("EDS", v(s2, ENDPOINT), "10", [], ["b"]),
    ]


def test_rule_35_additions_and_removals_of_one_type_alone_are_one_response():
    s = stream()
    s.on_request(request(CLUSTER, node=True))
    s2 = mesh({"a": ("10.0.0.1:80",), "c": ("10.0.0.3:80",)})
    assert summary(s.on_snapshot(s2)) == [("CDS", v(s2, CLUSTER), "2", ["c"], ["b"])]


def test_rule_36_a_changed_cluster_is_followed_by_its_unchanged_load_assignment():
    s = fully_subscribed()
    s2 = base_mesh(timeouts={"a": 5})
    assert v(s2, ENDPOINT) == v(S1, ENDPOINT)
    assert summary(s.on_snapshot(s2)) == [
        ("CDS", v(s2, CLUSTER), "5", ["a"], []),
        ("EDS", v(S1, ENDPOINT), "6", ["a"], []),
    ]


# -- bytes on the wire -------------------------------------------------------------------

SERVICES = [f"svc-{i:03d}" for i in range(200)]


def large_mesh(moved: str = "", retimed: str = "") -> Snapshot:
    """200 EDS clusters with two endpoints each, one listener and one route to all."""
    clusters = {
        name: (f"10.1.{i // 100}.{i % 100 + 1}:8080", f"10.2.{i // 100}.{i % 100 + 1}:8080")
        for i, name in enumerate(SERVICES)
    }
    if moved:
        clusters[moved] = (clusters[moved][0], "10.9.9.9:8080")
    return mesh(
        clusters, {"http": "r1"}, {"r1": tuple(SERVICES)}, timeouts={retimed: 7} if retimed else {}
    )


def wire_bytes(responses: list[Any]) -> int:
    return sum(len(response.SerializeToString()) for response in responses)


def converged_delta_pair(snapshot: Snapshot) -> Pair:
    client = DeltaClient(NODE, follow=True)
    pair = Pair(snapshot, client)
    pair.send(client.subscribe(CLUSTER), client.subscribe(LISTENER))
    pair.assert_converged(snapshot)
    pair.responses.clear()
    return pair


def converged_sotw_stream(snapshot: Snapshot) -> SotwStream:
    client = SotwClient(NODE, follow=True)
    server = SotwStream(lambda node: snapshot)
    pending = deque([client.request(CLUSTER, []), client.request(LISTENER, [])])
    while pending:
        for response in server.on_request(pending.popleft()):
            pending.extend(client.on_response(response))
    assert len(client.resources(ENDPOINT)) == 200
    return server


def test_one_endpoint_change_among_200_clusters_sends_exactly_one_load_assignment():
    before, after = large_mesh(), large_mesh(moved="svc-042")
    pair = converged_delta_pair(before)
    pair.push(after)
    assert summary(pair.responses) == [("EDS", v(after, ENDPOINT), "5", ["svc-042"], [])]
    (response,) = pair.responses
    assert response.resources[0].resource == after.resources(ENDPOINT)["svc-042"].body
    pair.assert_converged(after)
    sotw = converged_sotw_stream(before).on_snapshot(after)
    assert [(short_name(r.type_url), len(r.resources)) for r in sotw] == [("EDS", 1)]
    # SotW EDS is already partial, so the two carry the same load assignment; delta adds
    # only the Resource wrapper (name and 64-digit version).
    assert wire_bytes(sotw) < wire_bytes(pair.responses) < wire_bytes(sotw) + 100


def test_one_cluster_change_among_200_costs_under_a_fiftieth_of_the_sotw_bytes():
    before, after = large_mesh(), large_mesh(retimed="svc-042")
    pair = converged_delta_pair(before)
    pair.push(after)
    assert summary(pair.responses) == [
        ("CDS", v(after, CLUSTER), "5", ["svc-042"], []),
        ("EDS", v(after, ENDPOINT), "6", ["svc-042"], []),
    ]
    pair.assert_converged(after)
    sotw = converged_sotw_stream(before).on_snapshot(after)
    assert [(short_name(r.type_url), len(r.resources)) for r in sotw] == [
        ("CDS", 200),
        ("EDS", 200),
    ]
    assert wire_bytes(pair.responses) * 50 < wire_bytes(sotw)


# -- paired with the client core ---------------------------------------------------------


class Pair:
    """A delta server core and a delta client core joined by an in-memory, ordered "wire".

    The responses of one server event all reach the client before any of the
    client's answers reach the server, as on a real stream.
    """

    def __init__(self, snapshot: Snapshot, client: DeltaClient) -> None:
        self.snapshot = snapshot
        self.server = DeltaStream(lambda node: self.snapshot)
        self.client = client
        self.responses: list[Any] = []
        self.requests: list[Any] = []

    def send(self, *requests: Any) -> None:
        pending = deque(requests)
        while pending:
            sent = pending.popleft()
            self.requests.append(sent)
            pending.extend(self._deliver(self.server.on_request(sent)))

    def push(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.send(*self._deliver(self.server.on_snapshot(snapshot)))

    def _deliver(self, responses: list[Any]) -> list[Any]:
        self.responses.extend(responses)
        return [req for response in responses for req in self.client.on_response(response)]

    def assert_converged(self, snapshot: Snapshot) -> None:
        for type_url in ALL_TYPES:
            held = {
                n: m.SerializeToString(deterministic=True)
                for n, m in self.client.resources(type_url).items()
            }
            assert held == {n: r.body.value for n, r in snapshot.resources(type_url).items()}
            assert dict(self.client.versions(type_url)) == snapshot.name_hashes(type_url)


def envoy_like(validate: Any = None) -> DeltaClient:
    return DeltaClient(NODE, follow=True, validate=validate)


def started(snapshot: Snapshot = S1, client: DeltaClient | None = None) -> Pair:
    """An Envoy-like client on CDS and LDS legacy wildcard, following EDS and RDS."""
    client = client or envoy_like()
    pair = Pair(snapshot, client)
    pair.send(client.subscribe(CLUSTER), client.subscribe(LISTENER))
    return pair


def test_rule_23_paired_client_acks_every_response_and_keeps_resource_versions():
    pair = started()
    pair.assert_converged(S1)
    assert [short_name(r.type_url) for r in pair.responses] == ["CDS", "LDS", "EDS", "RDS"]
    assert [
        (short_name(r.type_url), r.response_nonce) for r in pair.requests if r.response_nonce
    ] == [
        ("CDS", "1"),
        ("LDS", "2"),
        ("EDS", "3"),
        ("RDS", "4"),
    ]
    for type_url in ALL_TYPES:
        status = pair.server.status(type_url)
        assert status.acked_version == status.version == pair.client.system_version(type_url)
        assert status.acked_version == v(S1, type_url)


def test_rule_24_paired_client_nacks_with_error_detail_and_keeps_what_it_had():
    def refuse_slow_clusters(type_url: str, resources: Any) -> None:
        for cluster in resources.values() if type_url == CLUSTER else ():
            if cluster.connect_timeout.seconds > 4:
                raise ValueError(f"cluster {cluster.name}: timeout too long")

    pair = started(client=envoy_like(refuse_slow_clusters))
    pair.server.pop_events()
    pair.push(base_mesh(timeouts={"a": 5}))
    assert summary(pair.responses[-2:]) == [
        ("CDS", v(base_mesh(timeouts={"a": 5}), CLUSTER), "5", ["a"], []),
        ("EDS", v(S1, ENDPOINT), "6", ["a"], []),
    ]
    events = pair.server.pop_events()
    assert [type(e) for e in events] == [Nack, Ack]
    assert events[0].message == "cluster a: timeout too long"
    assert pair.client.last_error(CLUSTER) == "cluster a: timeout too long"
    assert pair.client.versions(CLUSTER)["a"] == h(S1, CLUSTER, "a")
    pair.push(base_mesh(timeouts={"a": 5}))
    assert len(pair.responses) == 6


def test_rule_25_paired_subscription_with_a_stale_nonce_is_served():
    client = DeltaClient(NODE)
    pair = Pair(S1, client)
    pair.send(client.subscribe(ENDPOINT, "a"))
    late = client.subscribe(ENDPOINT, "b")
    late.response_nonce = "99"
    pair.send(late)
    assert summary(pair.responses) == [
        ("EDS", v(S1, ENDPOINT), "1", ["a"], []),
        ("EDS", v(S1, ENDPOINT), "2", ["b"], []),
    ]
    assert sorted(client.resources(ENDPOINT)) == ["a", "b"]
    assert pair.server.pop_events() == [
        Ack(ENDPOINT, v(S1, ENDPOINT), "1"),
        StaleRequest(ENDPOINT, nonce="99", expected_nonce="1"),
        Ack(ENDPOINT, v(S1, ENDPOINT), "2"),
    ]


def test_rule_26_paired_client_sends_only_the_added_name_and_keeps_the_rest():
    client = DeltaClient(NODE)
    pair = Pair(S1, client)
    pair.send(client.subscribe(ENDPOINT, "a"))
    added = client.subscribe(ENDPOINT, "b")
    assert (list(added.resource_names_subscribe), list(added.resource_names_unsubscribe)) == (
        ["b"],
        [],
    )
    pair.send(added)
    assert summary(pair.responses[1:]) == [("EDS", v(S1, ENDPOINT), "2", ["b"], [])]
    assert sorted(client.resources(ENDPOINT)) == ["a", "b"]


def test_rule_27_paired_client_that_subscribes_again_gets_the_resource_again():
    client = DeltaClient(NODE)
    pair = Pair(S1, client)
    pair.send(client.subscribe(ENDPOINT, "a", "b"))
    pair.send(client.subscribe(ENDPOINT, "a"))
    assert summary(pair.responses) == [
        ("EDS", v(S1, ENDPOINT), "1", ["a", "b"], []),
        ("EDS", v(S1, ENDPOINT), "2", ["a"], []),
    ]
    assert dict(client.versions(ENDPOINT)) == S1.name_hashes(ENDPOINT)


def test_rule_28_paired_phantom_unsubscribe_is_sent_and_ignored():
    client = DeltaClient(NODE)
    pair = Pair(S1, client)
    pair.send(client.subscribe(ENDPOINT, "a"))
    phantom = client.unsubscribe(ENDPOINT, "zz")
    assert list(phantom.resource_names_unsubscribe) == ["zz"]
    pair.send(phantom)
    assert len(pair.responses) == 1
    assert client.subscription(ENDPOINT) == ["a"] == sorted(pair.server.status(ENDPOINT).names)


def test_rule_29_paired_pure_unsubscribe_gets_no_response_and_the_client_forgets():
    client = DeltaClient(NODE)
    pair = Pair(S1, client)
    pair.send(client.subscribe(ENDPOINT, "a", "b"))
    pair.send(client.unsubscribe(ENDPOINT, "b"))
    assert len(pair.responses) == 1
    assert sorted(client.resources(ENDPOINT)) == ["a"]
    pair.push(base_mesh(clusters=MOVED_BOTH))
    assert summary(pair.responses[1:]) == [
        ("EDS", v(base_mesh(clusters=MOVED_BOTH), ENDPOINT), "2", ["a"], [])
    ]


def test_rule_29_paired_wildcard_client_keeps_an_unsubscribed_name_the_wildcard_covers():
    client = DeltaClient(NODE)
    pair = Pair(S1, client)
    pair.send(client.subscribe(LISTENER, "*", "http", "ghost"))
    assert client.absent(LISTENER) == {"ghost"}
    pair.send(client.unsubscribe(LISTENER, "http", "ghost"))
    assert summary(pair.responses[1:]) == [("LDS", v(S1, LISTENER), "2", ["http"], ["ghost"])]
    assert sorted(client.resources(LISTENER)) == ["http"]
    assert client.absent(LISTENER) == set()


def test_rule_30_paired_client_drops_deleted_resources():
    pair = started()
    only_a = mesh({"a": ("10.0.0.1:80",)}, {"http": "r1"}, {"r1": ("a",)})
    pair.push(only_a)
    pair.assert_converged(only_a)
    assert pair.client.subscription(ENDPOINT) == ["a"]
    removals = [(short_name(r.type_url), list(r.removed_resources)) for r in pair.responses[4:]]
    assert removals == [("RDS", []), ("CDS", ["b"]), ("EDS", ["b"])]


def test_rule_31_paired_client_knows_at_once_that_a_name_does_not_exist():
    now = [100.0]
    client = DeltaClient(NODE, clock=lambda: now[0])
    pair = Pair(S1, client)
    pair.send(client.subscribe(ENDPOINT, "a", "c"))
    assert client.absent(ENDPOINT) == {"c"}
    s2 = base_mesh(clusters=WITH_C)
    pair.push(s2)
    assert client.absent(ENDPOINT) == set()
    assert sorted(client.resources(ENDPOINT)) == ["a", "c"]


def test_rule_31_paired_client_also_times_out_a_name_never_answered():
    now = [100.0]
    client = DeltaClient(NODE, clock=lambda: now[0])
    client.subscribe(ENDPOINT, "a")
    now[0] = 114.9
    assert client.absent(ENDPOINT) == set()
    now[0] = 115.0
    assert client.absent(ENDPOINT) == {"a"}


def test_rule_32_paired_reconnect_to_a_server_with_the_same_content_resends_nothing():
    pair = started()
    again = Pair(base_mesh(), pair.client)
    again.send(*pair.client.reconnect())
    assert again.responses == []
    again.assert_converged(S1)
    s2 = base_mesh(clusters=MOVED_A)
    again.push(s2)
    assert summary(again.responses) == [("EDS", v(s2, ENDPOINT), "1", ["a"], [])]
    again.assert_converged(s2)


def test_rule_32_paired_reconnect_after_changes_gets_only_the_differences():
    pair = started()
    s2 = mesh(
        {"a": ("10.0.0.9:80",), "b": ("10.0.0.2:80",), "c": ("10.0.0.3:80",)},
        {"http": "r1"},
        {"r1": ("a", "b", "c")},
        timeouts={"b": 3},
    )
    again = Pair(s2, pair.client)
    again.send(*pair.client.reconnect())
    again.assert_converged(s2)
    assert summary(again.responses) == [
        ("CDS", v(s2, CLUSTER), "1", ["b", "c"], []),
        ("EDS", v(s2, ENDPOINT), "2", ["a", "b"], []),
        ("RDS", v(s2, ROUTE), "3", ["r1"], []),
        ("EDS", v(s2, ENDPOINT), "4", ["c"], []),
    ]


def test_rule_33_paired_legacy_wildcard_client_then_leaves_the_wildcard():
    client = DeltaClient(NODE)
    pair = Pair(S1, client)
    first = client.subscribe(CLUSTER)
    assert list(first.resource_names_subscribe) == []
    pair.send(first, client.subscribe(CLUSTER, "a"))
    assert client.subscription(CLUSTER) == ["*", "a"]
    pair.send(client.unsubscribe(CLUSTER, "*"))
    assert sorted(client.resources(CLUSTER)) == ["a"]
    assert pair.server.status(CLUSTER).wildcard is False
    pair.push(base_mesh(clusters=WITH_C, timeouts={"b": 4}))
    assert [short_name(r.type_url) for r in pair.responses] == ["CDS", "CDS"]


def test_rule_34_paired_types_are_acked_independently_on_one_stream():
    pair = started()
    pair.push(mesh({"a": ("10.0.0.9:80",), "b": ("10.0.0.2:80",)}, {"http": "r1"}, {"r1": ("b",)}))
    acks = [(short_name(r.type_url), r.response_nonce) for r in pair.requests if r.response_nonce]
    assert acks[4:] == [("EDS", "5"), ("RDS", "6")]
    for type_url in ALL_TYPES:
        status = pair.server.status(type_url)
        assert status.acked_version == status.version


def test_rule_37_paired_routes_never_arrive_before_the_clusters_they_use():
    checked: list[str] = []
    client: DeltaClient

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
    pair = started(client=client)
    s2 = mesh(WITH_C, {"http": "r1"}, {"r1": ("c",)})
    pair.push(s2)
    s3 = mesh({"d": ("10.0.0.4:80",)}, {"http": "r1"}, {"r1": ("d",)})
    pair.push(s3)
    assert all(client.last_error(t) == "" for t in ALL_TYPES)
    assert checked == ["a", "b", "c", "d"]
    pair.assert_converged(s3)


def test_rule_38_paired_one_stream_orders_every_type_and_converges():
    pair = started()
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
        "EDS",
        "RDS",
    ]
    for type_url in ALL_TYPES:
        status = pair.server.status(type_url)
        assert (status.acked_version, status.nacked_version) == (status.version, "")


def test_a_delta_stream_has_no_ack_weight_whatever_it_follows():
    stream = DeltaStream(lambda node: base_mesh())
    request = discovery_pb2.DeltaDiscoveryRequest(
        type_url=ENDPOINT, resource_names_subscribe=["a", "b"]
    )
    request.node.CopyFrom(NODE)
    stream.on_wire(request.SerializeToString())
    assert stream.ack_weight == 0
