"""Name lists invented by clients cost bounded memory, however many there are."""

import gc
import tracemalloc

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.xds import ENDPOINT, encoding, selection, subscription
from controlplane.xds import repeated_names as repeated_names_module
from controlplane.xds.delta import DeltaStream
from controlplane.xds.interning import Interner, MiB
from controlplane.xds.sotw import SotwStream
from controlplane.xds.stream import TooManyNames
from tests.xds.resources import NODE, base_mesh


@pytest.fixture
def small_budgets(monkeypatch):
    for table in (
        repeated_names_module._WIRES,
        subscription._NAMES,
        subscription._INTERNED,
    ):
        monkeypatch.setattr(table, "budget", MiB)
        table.clear()
    monkeypatch.setattr(selection, "SELECTION_BUDGET", MiB)
    monkeypatch.setattr(encoding, "BODY_BUDGET", MiB)


def invented_names(i: int, count: int) -> list[str]:
    return [f"outbound|8080|v{i}|svc-{j:05d}.bench.svc.cluster.local" for j in range(count)]


def test_many_distinct_large_name_lists_on_fresh_streams_keep_memory_bounded(small_budgets):
    snapshot = base_mesh()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(30):
            sotw = SotwStream(lambda node: snapshot)
            wire = discovery_pb2.DiscoveryRequest(
                node=NODE, type_url=ENDPOINT, resource_names=invented_names(i, 4_000)
            ).SerializeToString()
            sotw.on_wire(wire)
            sotw.on_wire(wire)
            delta = DeltaStream(lambda node: snapshot)
            delta.on_request(
                discovery_pb2.DeltaDiscoveryRequest(
                    node=NODE,
                    type_url=ENDPOINT,
                    resource_names_subscribe=invented_names(i + 1_000, 4_000),
                )
            )
            del sotw, delta, wire
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 60 lists of 4,000 names are about 50 MB when kept; five 1 MiB budgets remain.
    assert held < 10 * MiB
    assert subscription._NAMES.size <= MiB
    assert repeated_names_module._WIRES.size <= MiB


def test_an_interner_shares_equal_values_and_drops_the_least_recently_used_beyond_its_budget():
    table: Interner[bytes] = Interner(10, len)
    a, b = b"aaaa", b"bbbb"
    assert table.intern(a) is a
    assert table.intern(bytes(bytearray(b"aaaa"))) is a
    assert table.intern(b) is b
    assert table.intern(b"aaaa") is a  # a is now the most recently used
    c = b"cccc"
    table.intern(c)
    assert (len(table), table.size) == (2, 8)
    assert table.intern(bytes(bytearray(b"bbbb"))) is not b  # b was dropped
    assert table.intern(bytes(bytearray(b"cccc"))) is c


def test_a_sotw_request_over_the_name_limit_is_refused():
    stream = SotwStream(lambda node: base_mesh())
    stream.max_names = 3
    request = discovery_pb2.DiscoveryRequest(
        node=NODE, type_url=ENDPOINT, resource_names=["a", "b", "c", "d"]
    )
    with pytest.raises(TooManyNames) as caught:
        stream.on_request(request)
    assert (caught.value.type_url, caught.value.count, caught.value.limit) == (ENDPOINT, 4, 3)


def test_a_delta_subscription_growing_over_the_name_limit_is_refused():
    stream = DeltaStream(lambda node: base_mesh())
    stream.max_names = 3
    stream.on_request(
        discovery_pb2.DeltaDiscoveryRequest(
            node=NODE, type_url=ENDPOINT, resource_names_subscribe=["a", "b"]
        )
    )
    with pytest.raises(TooManyNames) as caught:
        stream.on_request(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=ENDPOINT, resource_names_subscribe=["c", "d"]
            )
        )
    assert caught.value.count == 4
