"""Housekeeping: glibc's knobs are reachable, runs coalesce, and cyclic garbage is never frozen."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest

from controlplane.server import memory

pytestmark = pytest.mark.skipif(memory._LIBC is None, reason="not glibc")


def test_tune_fixes_the_mmap_threshold_on_glibc():
    assert memory.tune() is True


def test_trim_can_be_called_at_any_time():
    big = [bytes(200_000) for _ in range(50)]
    del big
    assert memory.trim() in (True, False)


async def test_a_burst_of_requests_for_housekeeping_becomes_one_run_after_the_delay(monkeypatch):
    calls: list[float] = []
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(
        memory.Housekeeper, "run", staticmethod(lambda: calls.append(loop.time()) or 0)
    )
    housekeeper = memory.Housekeeper(loop, delay=0.05, interval=0.3)
    started = loop.time()
    for _ in range(100):
        housekeeper.soon()
    await asyncio.sleep(0.15)
    assert len(calls) == 1
    assert calls[0] - started >= 0.05
    housekeeper.soon()  # within the interval: waits for it
    await asyncio.sleep(0.1)
    assert len(calls) == 1
    await asyncio.sleep(0.3)
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.3
    assert housekeeper.runs == 2


async def test_cancelled_housekeeping_does_not_run(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(memory.Housekeeper, "run", staticmethod(lambda: calls.append(1) or 0))
    housekeeper = memory.Housekeeper(asyncio.get_running_loop(), delay=0.02)
    housekeeper.soon()
    housekeeper.cancel()
    await asyncio.sleep(0.08)
    assert calls == []


def test_housekeeping_collects_cyclic_garbage_before_freezing_what_is_left():
    class Node:
        pass

    gc.collect()
    gc.unfreeze()
    try:
        cycle = Node()
        cycle.self = cycle
        gone = weakref.ref(cycle)
        kept = Node()
        kept.items = [1, 2, 3]
        del cycle
        memory.Housekeeper.run()
        assert gone() is None
        assert gc.get_freeze_count() > 0
        assert kept.items == [1, 2, 3]
    finally:
        gc.unfreeze()


async def test_housekeeping_waits_while_the_server_is_busy(monkeypatch):
    calls: list[int] = []
    busy = [True]
    monkeypatch.setattr(memory.Housekeeper, "run", staticmethod(lambda: calls.append(1) or 0))
    housekeeper = memory.Housekeeper(
        asyncio.get_running_loop(), delay=0.02, interval=0.0, busy=lambda: busy[0]
    )
    housekeeper.soon()
    await asyncio.sleep(0.1)
    assert calls == []
    busy[0] = False
    await asyncio.sleep(0.06)
    assert calls == [1]


async def test_housekeeping_waits_for_every_hold(monkeypatch):
    calls: list[int] = []
    reloading = [True]
    monkeypatch.setattr(memory.Housekeeper, "run", staticmethod(lambda: calls.append(1) or 0))
    housekeeper = memory.Housekeeper(asyncio.get_running_loop(), delay=0.02, interval=0.0)
    housekeeper.hold_while(lambda: reloading[0])
    housekeeper.soon()
    await asyncio.sleep(0.1)
    assert calls == []
    reloading[0] = False
    await asyncio.sleep(0.06)
    assert calls == [1]


async def test_the_end_of_a_burst_runs_housekeeping_after_the_delay_whatever_the_interval(
    monkeypatch,
):
    calls: list[float] = []
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(
        memory.Housekeeper, "run", staticmethod(lambda: calls.append(loop.time()) or 0)
    )
    housekeeper = memory.Housekeeper(loop, delay=0.05, interval=60.0)
    housekeeper.soon()
    await asyncio.sleep(0.1)
    assert len(calls) == 1
    housekeeper.soon()  # within the interval: put off by a minute
    await asyncio.sleep(0.1)
    assert len(calls) == 1
    asked = loop.time()
    housekeeper.after_burst()
    await asyncio.sleep(0.1)
    assert len(calls) == 2
    assert 0.04 <= calls[1] - asked < 0.1
    housekeeper.cancel()


async def test_housekeeping_calls_what_it_was_given_to_release_before_collecting(monkeypatch):
    order: list[str] = []
    monkeypatch.setattr(
        memory.Housekeeper, "run", staticmethod(lambda: order.append("collect") or 0)
    )
    housekeeper = memory.Housekeeper(asyncio.get_running_loop(), delay=0.01, interval=0.01)
    housekeeper.also_release(lambda: order.append("bodies"))
    housekeeper.soon()
    await asyncio.sleep(0.05)
    housekeeper.soon()
    await asyncio.sleep(0.05)
    assert order == ["bodies", "collect", "bodies", "collect"]
