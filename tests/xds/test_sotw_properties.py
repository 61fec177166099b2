"""Any sequence of snapshots converges an Envoy-like client paired with the server core."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot, SotwClient
from tests.xds.resources import NODE, mesh, names
from tests.xds.test_sotw_conformance import Pair

CLUSTER_NAMES = ["a", "b", "c", "d"]
ROUTE_NAMES = ["r1", "r2", "r3"]


@st.composite
def meshes(draw: Any) -> Snapshot:
    clusters = {
        name: tuple(f"10.0.0.{i}:80" for i in draw(st.sets(st.integers(1, 3), max_size=2)))
        for name in draw(st.sets(st.sampled_from(CLUSTER_NAMES)))
    }
    used_routes = draw(st.sets(st.sampled_from(ROUTE_NAMES)))
    listeners = {f"l-{route}": route for route in sorted(used_routes)}
    routes = {
        route: tuple(sorted(draw(st.sets(st.sampled_from(sorted(clusters) or ["a"]), max_size=2))))
        for route in used_routes
    }
    timeouts = {name: draw(st.integers(1, 2)) for name in clusters}
    return mesh(clusters, listeners, routes, timeouts=timeouts)


@settings(max_examples=60, deadline=None)
@given(first=meshes(), changes=st.lists(meshes(), min_size=1, max_size=4))
def test_client_converges_to_every_snapshot_without_nacks(first, changes):
    client = SotwClient(NODE, follow=True)
    pair = Pair(first, client)
    pair.send(client.request(CLUSTER, []), client.request(LISTENER, []))
    pair.assert_converged(first)
    for snapshot in changes:
        pair.push(snapshot)
        pair.assert_converged(snapshot)
        for type_url in (CLUSTER, ENDPOINT, LISTENER, ROUTE):
            assert client.last_error(type_url) == ""
            status = pair.server.status(type_url)
            assert status is None or status.nacked_version == ""
    for response in pair.responses:
        assert len(names(response)) == len(set(names(response)))
