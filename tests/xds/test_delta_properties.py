"""Delta streams that look only at what changed answer exactly like full scans.

:meth:`DeltaStream.on_snapshot` examines only the names that differ between
the previous snapshot and the new one (shared between streams, see
:func:`controlplane.xds.selection.changes_between`). That is an optimization:
for any sequence of snapshots and subscription changes it must produce the
very responses a stream that rescans every resource produces.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, DeltaClient, DeltaStream, Snapshot
from tests.xds.resources import NODE
from tests.xds.test_delta_conformance import Pair
from tests.xds.test_sotw_properties import CLUSTER_NAMES, meshes


class FullScanDeltaStream(DeltaStream):
    """The reference: every snapshot change rescans every resource of every type."""

    def on_snapshot(self, snapshot: Snapshot) -> list[Any]:
        previous, self._snapshot = self._snapshot, snapshot
        if self._node is None or snapshot is previous:
            return []
        return self._respond(snapshot, set(self._types))


actions = st.lists(
    st.one_of(
        st.tuples(st.just("push"), meshes()),
        st.tuples(st.just("subscribe"), st.sampled_from([*CLUSTER_NAMES, "ghost"])),
        st.tuples(st.just("unsubscribe"), st.sampled_from([*CLUSTER_NAMES, "ghost"])),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(first=meshes(), steps=actions)
def test_looking_only_at_changes_answers_like_a_full_scan(first: Snapshot, steps: list) -> None:  # type: ignore[type-arg]
    pairs = [Pair(first, DeltaClient(NODE, follow=True)) for _ in range(2)]
    pairs[1].server = FullScanDeltaStream(lambda node: pairs[1].snapshot)
    for pair in pairs:
        pair.send(pair.client.subscribe(CLUSTER, "*"), pair.client.subscribe(LISTENER, "*"))
    for kind, value in steps:
        for pair in pairs:
            if kind == "push":
                pair.push(value)
            elif kind == "subscribe":
                pair.send(pair.client.subscribe(ENDPOINT, f"{value}"))
            else:
                pair.send(pair.client.unsubscribe(ENDPOINT, f"{value}"))
    optimized, reference = (
        [r.SerializeToString(deterministic=True) for r in p.responses] for p in pairs
    )
    assert optimized == reference
