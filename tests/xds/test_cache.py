import threading

import pytest
from envoy.config.core.v3 import base_pb2
from structlog.testing import capture_logs

from controlplane.errors import InconsistentSnapshotError
from controlplane.xds import CLUSTER, Snapshot, SnapshotCache
from tests.xds.resources import base_mesh, eds_cluster

MOVED = {"a": ("10.0.0.9:80",), "b": ("10.0.0.2:80",)}


def node(node_id: str, cluster: str) -> base_pb2.Node:
    return base_pb2.Node(id=node_id, cluster=cluster)


class Builder:
    def __init__(self, make=base_mesh):
        self.make = make
        self.calls: list[str] = []

    def __call__(self, key: str) -> Snapshot:
        self.calls.append(key)
        return self.make()


def by_cluster(n: base_pb2.Node) -> str:
    return n.cluster


def test_snapshot_is_built_once_per_class_and_shared_by_its_nodes():
    build = Builder()
    cache = SnapshotCache(by_cluster, build)
    key1, first = cache.snapshot_for(node("p1", "app"))
    key2, second = cache.snapshot_for(node("p2", "app"))
    key3, other = cache.snapshot_for(node("p3", "db"))
    assert (key1, key2, key3) == ("app", "app", "db")
    assert first is second
    assert other is not first
    assert build.calls == ["app", "db"]
    assert cache.keys() == ["app", "db"]


def test_update_rebuilds_every_seen_class_and_notifies_listeners():
    cache = SnapshotCache(by_cluster, Builder())
    cache.snapshot_for(node("p1", "app"))
    cache.snapshot_for(node("p2", "db"))
    seen: list[tuple[str, Snapshot]] = []
    cache.add_listener(lambda key, snapshot: seen.append((key, snapshot)))
    rebuild = Builder(lambda: base_mesh(clusters=MOVED))
    published = cache.update(rebuild)
    assert sorted(rebuild.calls) == ["app", "db"]
    assert sorted(published) == ["app", "db"]
    assert sorted(key for key, _ in seen) == ["app", "db"]
    assert all(snapshot == base_mesh(clusters=MOVED) for _, snapshot in seen)
    assert cache.get("app") is published["app"]


def test_update_with_equal_content_publishes_nothing_and_keeps_the_object():
    cache = SnapshotCache(by_cluster, Builder())
    _, before = cache.snapshot_for(node("p1", "app"))
    seen: list[str] = []
    cache.add_listener(lambda key, snapshot: seen.append(key))
    assert cache.update(Builder()) == {}
    assert seen == []
    assert cache.get("app") is before


def test_inconsistent_snapshot_is_logged_as_a_bug_and_not_published():
    cache = SnapshotCache(by_cluster, Builder())
    _, before = cache.snapshot_for(node("p1", "app"))
    broken = Builder(lambda: Snapshot.from_resources({CLUSTER: [eds_cluster("x")]}))
    seen: list[str] = []
    cache.add_listener(lambda key, snapshot: seen.append(key))
    with capture_logs() as logs:
        assert cache.update(broken) == {}
    assert seen == []
    assert cache.get("app") is before
    rejected = [e for e in logs if e["event"] == "snapshot_rejected"]
    assert len(rejected) == 1
    assert rejected[0]["key"] == "app"
    assert rejected[0]["bug"] is True
    assert rejected[0]["log_level"] == "error"
    assert rejected[0]["error"] == "Cluster 'x' needs missing ClusterLoadAssignment 'x'"


def test_build_that_raises_is_rejected_like_an_inconsistent_one():
    cache = SnapshotCache(by_cluster, Builder())
    _, before = cache.snapshot_for(node("p1", "app"))

    def explode(key: str) -> Snapshot:
        raise KeyError(key)

    with capture_logs():
        assert cache.update(explode) == {}
    assert cache.get("app") is before


def test_failed_first_build_raises_and_is_retried_by_the_next_caller():
    calls: list[str] = []

    def flaky(key: str) -> Snapshot:
        calls.append(key)
        if len(calls) == 1:
            return Snapshot.from_resources({CLUSTER: [eds_cluster("x")]})
        return base_mesh()

    cache = SnapshotCache(by_cluster, flaky)
    with capture_logs(), pytest.raises(InconsistentSnapshotError):
        cache.snapshot_for(node("p1", "app"))
    assert cache.get("app") is None
    assert cache.snapshot_for(node("p1", "app"))[1] == base_mesh()
    assert calls == ["app", "app"]


def test_classes_first_seen_after_an_update_use_the_new_builder():
    cache = SnapshotCache(by_cluster, Builder())
    cache.update(Builder(lambda: base_mesh(clusters=MOVED)))
    assert cache.snapshot_for(node("p1", "app"))[1] == base_mesh(clusters=MOVED)


def test_removed_listener_is_not_called():
    cache = SnapshotCache(by_cluster, Builder())
    cache.snapshot_for(node("p1", "app"))
    seen: list[str] = []
    remove = cache.add_listener(lambda key, snapshot: seen.append(key))
    remove()
    cache.update(Builder(lambda: base_mesh(clusters=MOVED)))
    assert seen == []


def test_updates_from_threads_are_published_in_order():
    cache = SnapshotCache(by_cluster, Builder())
    cache.snapshot_for(node("p1", "app"))
    seen: list[Snapshot] = []
    cache.add_listener(lambda key, snapshot: seen.append(snapshot))
    variants = [
        (lambda i=i: base_mesh(clusters={"a": (f"10.0.1.{i}:80",), "b": ("10.0.0.2:80",)}))
        for i in range(20)
    ]
    threads = [threading.Thread(target=cache.update, args=(Builder(v),)) for v in variants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen[-1] is cache.get("app")
