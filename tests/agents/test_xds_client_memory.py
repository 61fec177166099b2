"""The agent's xDS client paired with the server cores in memory, SotW and delta."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from agents.errors import ConfigRejected
from agents.node import NodeIdentity
from agents.xds_client import XdsClient
from controlplane.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, DeltaStream, Nack, SotwStream
from tests.agents.xds_support import RecordingSink, names
from tests.xds.resources import base_mesh, mesh

NODE = NodeIdentity("agent-1").to_node()
S1 = base_mesh()


@pytest.fixture(params=["sotw", "delta"])
def delta(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "delta")


def server_for(delta: bool, snapshot: Any) -> Any:
    return DeltaStream(lambda node: snapshot) if delta else SotwStream(lambda node: snapshot)


class Exchange:
    """Moves requests to the server core and responses to the client until both are quiet."""

    def __init__(self, client: XdsClient, server: Any) -> None:
        self.client = client
        self.server = server
        self.sent: list[Any] = []

    async def run(self, requests: Sequence[Any], responses: Sequence[Any] = ()) -> None:
        pending_responses = list(responses)
        pending = list(requests)
        while pending or pending_responses:
            if pending_responses:
                pending += await self.client.handle(pending_responses.pop(0))
                continue
            request = pending.pop(0)
            self.sent.append(request)
            pending_responses += self.server.on_request(request)


async def synced(delta: bool, sink: RecordingSink, snapshot: Any = S1) -> Exchange:
    client = XdsClient("in-memory", NODE, sink, delta=delta)
    exchange = Exchange(client, server_for(delta, snapshot))
    await exchange.run(client.initial_requests())
    return exchange


async def test_listeners_are_subscribed_only_once_clusters_and_endpoints_arrived(
    delta: bool,
) -> None:
    sink = RecordingSink()
    exchange = await synced(delta, sink)
    first_of_type = list(dict.fromkeys(request.type_url for request in exchange.sent))
    assert first_of_type == [CLUSTER, ENDPOINT, LISTENER, ROUTE]
    endpoints_acked = next(
        i for i, r in enumerate(exchange.sent) if r.type_url == ENDPOINT and r.response_nonce
    )
    listeners_asked = next(i for i, r in enumerate(exchange.sent) if r.type_url == LISTENER)
    assert listeners_asked == endpoints_acked + 1
    assert names(sink.committed[-1].resources) == {
        CLUSTER: ["a", "b"],
        ENDPOINT: ["a", "b"],
        LISTENER: ["http"],
        ROUTE: ["r1"],
    }


async def test_ready_only_once_every_type_was_answered(delta: bool) -> None:
    readiness: list[tuple[int, bool]] = []

    class Watching(RecordingSink):
        async def commit(self, prepared: Any | None, held: Any) -> None:
            await super().commit(prepared, held)
            readiness.append((sum(1 for url in held.types if held.types[url].resources), ready()))

    sink = Watching()
    client = XdsClient("in-memory", NODE, sink, delta=delta)

    def ready() -> bool:
        return client.ready.is_set()

    await Exchange(client, server_for(delta, S1)).run(client.initial_requests())
    assert readiness == [(1, False), (2, False), (3, False), (4, False)]
    assert client.ready.is_set()


async def test_a_removed_cluster_takes_its_endpoints_with_it_in_the_same_apply(
    delta: bool,
) -> None:
    sink = RecordingSink()
    exchange = await synced(delta, sink)
    before = len(sink.committed)
    smaller = mesh({"a": ("10.0.0.1:80",)}, {"http": "r1"}, {"r1": ("a",)})
    await exchange.run([], exchange.server.on_snapshot(smaller))
    after = sink.committed[before:]
    assert after, "the change was applied"
    assert all(sorted(t.resources[ENDPOINT]) == sorted(t.resources[CLUSTER]) for t in after)
    assert names(sink.committed[-1].resources) == {
        CLUSTER: ["a"],
        ENDPOINT: ["a"],
        LISTENER: ["http"],
        ROUTE: ["r1"],
    }


async def test_rule_05_server_core_sees_the_nack_with_the_rejection_text(delta: bool) -> None:
    def refuse_routes(resources: Any) -> ConfigRejected | None:
        if resources[ROUTE]:
            return ConfigRejected("RouteConfiguration r1", "virtual_hosts[0].routes[0]", "bad")
        return None

    sink = RecordingSink(reject=refuse_routes)
    exchange = await synced(delta, sink)
    nacks = [e for e in exchange.server.pop_events() if isinstance(e, Nack)]
    assert [(n.type_url, n.message) for n in nacks] == [
        (ROUTE, "RouteConfiguration r1: virtual_hosts[0].routes[0]: bad")
    ]
    assert sink.committed[-1].resources[ROUTE] == {}
    assert dict(exchange.client.core.resources(ROUTE)) == {}
    assert exchange.client.stats.nacks == 1
    assert not exchange.client.ready.is_set()


async def test_a_resend_of_what_is_held_is_acked_and_recorded_not_applied_again(
    delta: bool,
) -> None:
    sink = RecordingSink()
    exchange = await synced(delta, sink)
    client = exchange.client
    prepared, helds = len(sink.prepared), len(sink.helds)
    clusters = dict(client.core.resources(CLUSTER))
    resend: Any
    if delta:
        resend = discovery_pb2.DeltaDiscoveryResponse(
            type_url=CLUSTER, nonce="again", system_version_info="other"
        )
        for name, message in clusters.items():
            item = resend.resources.add(name=name, version=client.core.versions(CLUSTER)[name])
            item.resource.Pack(message)
    else:
        resend = discovery_pb2.DiscoveryResponse(
            type_url=CLUSTER, nonce="again", version_info="other"
        )
        for message in clusters.values():
            resend.resources.add().Pack(message)
    (ack,) = await client.handle(resend)
    assert (ack.response_nonce, ack.HasField("error_detail")) == ("again", False)
    assert len(sink.prepared) == prepared
    assert len(sink.helds) == helds + 1  # the new version is recorded (in the cache)
    assert sink.helds[-1].types[CLUSTER].version == "other"
