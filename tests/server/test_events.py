"""The admin event hub: bounded per watcher, drop-oldest with a count, idle without watchers."""

from __future__ import annotations

import asyncio

from controlplane.server.events import EventHub


async def test_a_hub_without_watchers_is_inactive() -> None:
    hub = EventHub(asyncio.get_running_loop())
    assert not hub.active
    watcher = hub.subscribe()
    assert hub.active
    hub.unsubscribe(watcher)
    assert not hub.active


async def test_a_full_watcher_drops_the_oldest_events_and_reports_how_many() -> None:
    hub = EventHub(asyncio.get_running_loop())
    watcher = hub.subscribe(limit=3)
    for n in range(5):
        hub.publish("push", stream_id=n)
    first = await watcher.get()
    assert first is not None
    assert (first.stream_id, first.dropped) == (2, 2)
    rest = [await watcher.get() for _ in range(2)]
    assert [(e.stream_id, e.dropped) for e in rest if e is not None] == [(3, 0), (4, 0)]


async def test_closing_the_hub_ends_every_watch() -> None:
    hub = EventHub(asyncio.get_running_loop())
    watcher = hub.subscribe()
    waiting = asyncio.ensure_future(watcher.get())
    await asyncio.sleep(0)
    hub.close()
    assert await asyncio.wait_for(waiting, 1.0) is None
