"""ResourceCaches that share a ResourcePool serialize a message once for every proxy class."""

from __future__ import annotations

import pytest

from controlplane.errors import InconsistentSnapshotError
from controlplane.translate import CLUSTER_TYPE, ENDPOINT_TYPE, ProxyClass, ProxyRole
from controlplane.translate.translator import Translator
from controlplane.xds import CLUSTER, Snapshot
from controlplane.xds.snapshot import ResourceCache, ResourcePool
from tests.translate.support import kitchen_sink_mesh, reweighted
from tests.xds.resources import static_cluster

SIDECAR = ProxyClass()
GATEWAY = ProxyClass(role=ProxyRole.GATEWAY, labels=(("istio", "ingressgateway"),))


def _wire(snapshot: Snapshot) -> dict[str, dict[str, tuple[str, bytes]]]:
    return {
        url: {name: (r.hash, r.value) for name, r in snapshot.resources(url).items()}
        for url in snapshot.type_urls
    }


def test_two_classes_share_one_serialization_of_their_shared_messages() -> None:
    translator, pool = Translator(), ResourcePool()
    sidecar_cache, gateway_cache = ResourceCache(pool), ResourceCache(pool)
    mesh = kitchen_sink_mesh()
    sidecar_messages = translator.translate(mesh, SIDECAR)
    gateway_messages = translator.translate(mesh, GATEWAY)
    sidecar = sidecar_cache.snapshot(sidecar_messages)
    gateway = gateway_cache.snapshot(gateway_messages)

    assert _wire(sidecar) == _wire(Snapshot.from_resources(sidecar_messages))
    assert _wire(gateway) == _wire(Snapshot.from_resources(gateway_messages))
    assert sidecar.versions == Snapshot.from_resources(sidecar_messages).versions
    assert gateway.versions == Snapshot.from_resources(gateway_messages).versions
    for url in (CLUSTER_TYPE, ENDPOINT_TYPE):
        assert sidecar.resources(url).keys() == gateway.resources(url).keys()
        assert all(
            resource is gateway.resources(url)[name]
            for name, resource in sidecar.resources(url).items()
        )
    distinct = {id(m) for messages in (sidecar_messages, gateway_messages) for m in _all(messages)}
    assert len(pool) == len(distinct)


def _all(resources: dict[str, list[object]]) -> list[object]:
    return [m for messages in resources.values() for m in messages]


def test_an_edited_service_is_serialized_again_for_every_class_and_the_rest_is_reused() -> None:
    translator, pool = Translator(), ResourcePool()
    caches = {SIDECAR: ResourceCache(pool), GATEWAY: ResourceCache(pool)}
    mesh = kitchen_sink_mesh()
    before = {
        proxy: cache.snapshot(translator.translate(mesh, proxy)) for proxy, cache in caches.items()
    }
    target = "web.shop.svc.cluster.local"
    edited = reweighted(mesh, target)
    after = {}
    for proxy, cache in caches.items():
        messages = translator.translate(edited, proxy)
        after[proxy] = cache.snapshot(messages)
        assert _wire(after[proxy]) == _wire(Snapshot.from_resources(messages))

    for proxy in caches:
        changed = {
            name
            for name, resource in after[proxy].resources(ENDPOINT_TYPE).items()
            if resource is not before[proxy].resources(ENDPOINT_TYPE)[name]
        }
        assert changed and all(target in name for name in changed)
        assert after[proxy].version(ENDPOINT_TYPE) != before[proxy].version(ENDPOINT_TYPE)
        assert after[proxy].version(CLUSTER_TYPE) == before[proxy].version(CLUSTER_TYPE)
    assert all(
        resource is after[GATEWAY].resources(ENDPOINT_TYPE)[name]
        for name, resource in after[SIDECAR].resources(ENDPOINT_TYPE).items()
    )


def test_a_new_message_at_the_id_of_a_dropped_one_is_serialized_anew() -> None:
    pool = ResourcePool()
    cache, other = ResourceCache(pool), ResourceCache(pool)
    old = static_cluster("old")
    cache.snapshot({CLUSTER: [old]})
    other.snapshot({CLUSTER: [old]})
    old_id = id(old)
    cache.snapshot({CLUSTER: []})
    assert len(pool) == 1  # the other class still sends it
    other.snapshot({CLUSTER: []})
    assert len(pool) == 0
    del old
    # CPython hands a freed object's memory to the next object of its size: look for
    # a new message at the old address (kept alive, so each try gets a fresh one).
    tries = [static_cluster("new")]
    while id(tries[-1]) != old_id and len(tries) < 10_000:
        tries.append(static_cluster("new"))
    new = tries[-1]
    snapshot = cache.snapshot({CLUSTER: [new]})
    assert list(snapshot.resources(CLUSTER)) == ["new"]
    assert snapshot.resources(CLUSTER)["new"].value == new.SerializeToString(deterministic=True)


def test_a_pool_holds_only_what_some_open_cache_still_sends() -> None:
    pool = ResourcePool()
    shared, own_a, own_b = static_cluster("shared"), static_cluster("a"), static_cluster("b")
    first, second = ResourceCache(pool), ResourceCache(pool)
    first.snapshot({CLUSTER: [shared, own_a]})
    second.snapshot({CLUSTER: [shared, own_b]})
    assert len(pool) == 3
    first.close()
    assert len(pool) == 2
    again = second.snapshot({CLUSTER: [shared]})
    assert len(pool) == 1
    second.close()
    assert len(pool) == 0
    assert list(again.resources(CLUSTER)) == ["shared"]


def test_a_snapshot_that_fails_leaves_the_pool_as_it_was() -> None:
    pool = ResourcePool()
    cache = ResourceCache(pool)
    kept = static_cluster("a")
    cache.snapshot({CLUSTER: [kept]})
    with pytest.raises(InconsistentSnapshotError):
        cache.snapshot({CLUSTER: [static_cluster("b"), static_cluster("b")]})
    assert len(pool) == 1
    assert list(cache.snapshot({CLUSTER: [kept]}).resources(CLUSTER)) == ["a"]
