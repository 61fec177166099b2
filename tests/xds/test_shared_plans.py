"""Streams that share a snapshot share the work of a push, and answer exactly as if alone.

``SotwStream.on_snapshot`` and ``DeltaStream.on_snapshot`` keep the plan they
work out on the snapshot (``Snapshot.selections``) so that every other stream
of the class in the same state reuses it, and responses share encoded bodies.
Here a group of streams runs on shared snapshot objects while each reference
stream gets private copies of the same snapshots (equal content, nothing
shared); every stream is driven by its own Envoy-like client core through the
same random sequence of snapshots and subscription changes, and each group
stream's bytes must equal its reference's.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, DeltaClient, Snapshot, SotwClient
from tests.xds import test_delta_conformance, test_sotw_conformance
from tests.xds.resources import NODE, mesh

CLUSTER_NAMES = ["a", "b", "c", "d"]
ROUTE_NAMES = ["r1", "r2"]
STREAMS = 3


@st.composite
def specs(draw: Any) -> dict[str, Any]:
    clusters = {
        name: tuple(f"10.0.0.{i}:80" for i in sorted(draw(st.sets(st.integers(1, 3), max_size=2))))
        for name in sorted(draw(st.sets(st.sampled_from(CLUSTER_NAMES))))
    }
    used = sorted(draw(st.sets(st.sampled_from(ROUTE_NAMES))))
    return {
        "clusters": clusters,
        "listeners": {f"l-{route}": route for route in used},
        "routes": {
            route: tuple(
                sorted(draw(st.sets(st.sampled_from(sorted(clusters) or ["a"]), max_size=2)))
            )
            for route in used
        },
    }


def build(spec: dict[str, Any]) -> Snapshot:
    return mesh(spec["clusters"], spec["listeners"], spec["routes"])


steps = st.lists(
    st.one_of(
        st.tuples(st.just("push"), specs()),
        st.tuples(
            st.sampled_from(["subscribe", "unsubscribe"]),
            st.integers(0, STREAMS - 1),
            st.sampled_from(CLUSTER_NAMES),
        ),
    ),
    min_size=1,
    max_size=8,
)


def run(pair_class: Any, client_class: Any, first: dict[str, Any], actions: list[Any]) -> None:
    shared_first = build(first)
    group = [pair_class(shared_first, client_class(NODE, follow=True)) for _ in range(STREAMS)]
    alone = [pair_class(build(first), client_class(NODE, follow=True)) for _ in range(STREAMS)]
    for pair in (*group, *alone):
        pair.send(pair.client.subscribe(CLUSTER, "*"), pair.client.subscribe(LISTENER, "*"))
    for action in actions:
        if action[0] == "push":
            shared = build(action[1])
            for pair in group:
                pair.push(shared)
            for pair in alone:
                pair.push(build(action[1]))
            continue
        kind, index, name = action
        for pair in (group[index], alone[index]):
            change = pair.client.subscribe if kind == "subscribe" else pair.client.unsubscribe
            pair.send(change(ENDPOINT, name))
    for together, single in zip(group, alone, strict=True):
        assert [r.SerializeToString() for r in together.responses] == [
            r.SerializeToString() for r in single.responses
        ]


@settings(max_examples=120, deadline=None)
@given(first=specs(), actions=steps)
def test_sotw_streams_sharing_snapshots_answer_as_if_alone(first: Any, actions: Any) -> None:
    run(test_sotw_conformance.Pair, SotwClient, first, actions)


@settings(max_examples=120, deadline=None)
@given(first=specs(), actions=steps)
def test_delta_streams_sharing_snapshots_answer_as_if_alone(first: Any, actions: Any) -> None:
    run(test_delta_conformance.Pair, DeltaClient, first, actions)


@pytest.mark.parametrize(
    ("pair_class", "client_class"),
    [(test_sotw_conformance.Pair, SotwClient), (test_delta_conformance.Pair, DeltaClient)],
)
def test_a_snapshot_keeps_no_predecessor_alive(pair_class: Any, client_class: Any) -> None:
    specs_ = [
        {"clusters": {"a": (f"10.0.0.{i}:80",)}, "listeners": {}, "routes": {}} for i in (1, 2, 3)
    ]
    first = build(specs_[0])
    pairs = [pair_class(first, client_class(NODE, follow=True)) for _ in range(2)]
    for pair in pairs:
        pair.send(pair.client.subscribe(CLUSTER, "*"), pair.client.subscribe(LISTENER, "*"))
    gone = weakref.ref(first)
    del first
    gc.disable()
    try:
        for spec in specs_[1:]:
            snapshot = build(spec)
            for pair in pairs:
                pair.push(snapshot)
        del snapshot
        assert gone() is None
    finally:
        gc.enable()
