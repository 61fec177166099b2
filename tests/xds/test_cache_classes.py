"""SnapshotCache class lifetimes on a fake clock: holds, the grace, the limit, forgetting."""

from __future__ import annotations

import threading

import pytest
from envoy.config.core.v3 import base_pb2

from controlplane.errors import InconsistentSnapshotError
from controlplane.xds import Snapshot, SnapshotCache
from controlplane.xds.cache import ProxyClassLimitError
from tests.xds.resources import base_mesh


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Owner:
    """The builder and the ``forget`` callback, recording both."""

    def __init__(self) -> None:
        self.built: list[str] = []
        self.forgotten: list[str] = []
        self.failing: set[str] = set()

    def build(self, key: str) -> Snapshot:
        self.built.append(key)
        if key in self.failing:
            raise RuntimeError("broken")
        return base_mesh()

    def forget(self, key: str) -> None:
        self.forgotten.append(key)


def node(cluster: str) -> base_pb2.Node:
    return base_pb2.Node(id="p", cluster=cluster)


def make(**options: object) -> tuple[SnapshotCache, Owner, Clock]:
    owner, clock = Owner(), Clock()
    cache = SnapshotCache(
        lambda n: n.cluster,
        owner.build,
        forget=owner.forget,
        clock=clock,
        **options,  # type: ignore[arg-type]
    )
    return cache, owner, clock


def test_a_released_class_is_dropped_and_forgotten_once_its_grace_is_over() -> None:
    cache, owner, clock = make(grace=10.0)
    cache.acquire(node("a"))
    cache.acquire(node("a"))
    cache.acquire(node("b"))
    assert cache.release("a") is False
    assert cache.release("a") is True
    clock.now += 4
    assert cache.release("b") is True
    clock.now += 5
    assert cache.prune() == 1.0
    assert (cache.keys(), owner.forgotten) == (["a", "b"], [])
    clock.now += 1
    assert cache.prune() == 4.0
    assert (cache.keys(), owner.forgotten) == (["b"], ["a"])
    clock.now += 4
    assert cache.prune() is None
    assert (cache.keys(), owner.forgotten) == ([], ["a", "b"])


def test_acquiring_an_idle_class_again_keeps_it() -> None:
    cache, owner, clock = make(grace=10.0)
    _, first = cache.acquire(node("a"))
    cache.release("a")
    clock.now += 9
    _, again = cache.acquire(node("a"))
    clock.now += 100
    assert cache.prune() is None
    assert (cache.keys(), owner.built, again is first) == (["a"], ["a"], True)


def test_a_class_made_by_snapshot_for_is_idle_from_the_start() -> None:
    cache, owner, clock = make(grace=10.0)
    cache.snapshot_for(node("a"))
    clock.now += 10
    cache.update(owner.build)
    assert (cache.keys(), owner.built, owner.forgotten) == ([], ["a"], ["a"])


def test_an_update_rebuilds_only_the_classes_still_in_use() -> None:
    cache, owner, clock = make(grace=10.0)
    for name in ("live", "stale-1", "stale-2"):
        cache.acquire(node(name))
    cache.release("stale-1")
    cache.release("stale-2")
    clock.now += 10
    owner.built.clear()
    cache.update(owner.build)
    assert (owner.built, owner.forgotten) == (["live"], ["stale-1", "stale-2"])


def test_beyond_the_limit_the_longest_idle_class_makes_way() -> None:
    cache, owner, clock = make(grace=60.0, max_classes=3)
    for name in ("a", "b", "c"):
        cache.acquire(node(name))
    cache.release("b")
    clock.now += 1
    cache.release("a")
    cache.acquire(node("d"))
    assert (cache.keys(), owner.forgotten) == (["a", "c", "d"], ["b"])


def test_beyond_the_limit_with_every_class_held_a_new_class_is_refused_and_forgotten() -> None:
    cache, owner, _ = make(max_classes=2)
    cache.acquire(node("a"))
    cache.acquire(node("b"))
    with pytest.raises(ProxyClassLimitError) as refused:
        cache.acquire(node("c"))
    assert (refused.value.key, refused.value.limit) == ("c", 2)
    assert (cache.keys(), owner.built, owner.forgotten) == (["a", "b"], ["a", "b"], ["c"])
    assert cache.acquire(node("a"))[0] == "a"


def test_a_class_whose_first_build_fails_is_forgotten() -> None:
    cache, owner, _ = make()
    owner.failing.add("a")
    with pytest.raises(InconsistentSnapshotError):
        cache.acquire(node("a"))
    assert (cache.keys(), owner.forgotten) == ([], ["a"])
    assert cache.release("a") is False


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        make(max_classes=0)
    with pytest.raises(ValueError):
        make(grace=-1.0)


def test_releasing_a_class_does_not_wait_for_an_update_that_is_building() -> None:
    cache, owner, _ = make()
    cache.acquire(node("a"))
    building, go = threading.Event(), threading.Event()

    def slow_build(key: str) -> Snapshot:
        building.set()
        go.wait(10)
        return owner.build(key)

    update = threading.Thread(target=cache.update, args=(slow_build,))
    update.start()
    try:
        assert building.wait(10)
        released: list[bool] = []
        releaser = threading.Thread(target=lambda: released.append(cache.release("a")))
        releaser.start()
        releaser.join(10)
        assert released == [True]
    finally:
        go.set()
        update.join()
