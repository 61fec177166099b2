"""Freed memory goes back to the system: glibc's knobs are reachable and trims coalesce."""

from __future__ import annotations

import asyncio

import pytest

from controlplane.server import memory

pytestmark = pytest.mark.skipif(memory._LIBC is None, reason="not glibc")


def test_tune_fixes_the_mmap_threshold_on_glibc():
    assert memory.tune() is True


def test_trim_can_be_called_at_any_time():
    big = [bytes(200_000) for _ in range(50)]
    del big
    assert memory.trim() in (True, False)


async def test_a_burst_of_requests_for_a_trim_becomes_one_trim_after_the_delay(monkeypatch):
    calls: list[float] = []
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(memory, "trim", lambda: calls.append(loop.time()) or True)
    trimmer = memory.Trimmer(loop, delay=0.05, interval=0.3)
    started = loop.time()
    for _ in range(100):
        trimmer.soon()
    await asyncio.sleep(0.15)
    assert len(calls) == 1
    assert calls[0] - started >= 0.05
    trimmer.soon()  # within the interval: waits for it
    await asyncio.sleep(0.1)
    assert len(calls) == 1
    await asyncio.sleep(0.3)
    assert len(calls) == 2
    assert calls[1] - calls[0] >= 0.3
    assert trimmer.trims == 2


async def test_a_cancelled_trimmer_does_not_trim(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(memory, "trim", lambda: calls.append(1) or True)
    trimmer = memory.Trimmer(asyncio.get_running_loop(), delay=0.02)
    trimmer.soon()
    trimmer.cancel()
    await asyncio.sleep(0.08)
    assert calls == []
