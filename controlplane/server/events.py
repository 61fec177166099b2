"""Operational events (reloads, pushes, ACKs, NACKs, connects, disconnects) for watchers.

The push path pays for events only while someone watches: producers check
:attr:`EventHub.active` (one attribute read) before building an event. Each
watcher has a bounded queue; when it is full the oldest event is dropped and
counted, and the count rides on the next event the watcher receives, so a
slow watcher loses history, never slows a push. Loop-confined, except
:meth:`EventHub.publish_threadsafe` (reloads run on the watcher's thread).
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, replace

WATCHER_QUEUE = 1_000
"""Events buffered per watcher before the oldest are dropped."""


@dataclass(frozen=True, slots=True)
class OpEvent:
    kind: str
    """``reload``, ``push``, ``ack``, ``nack``, ``connect`` or ``disconnect``."""
    at: float
    """Unix time."""
    node_id: str = ""
    stream_id: int = 0
    type_url: str = ""
    version: str = ""
    message: str = ""
    dropped: int = 0
    """Events lost by this watcher just before this one."""


class Watcher:
    """One subscriber's bounded queue."""

    def __init__(self, limit: int = WATCHER_QUEUE) -> None:
        self._queue: collections.deque[OpEvent] = collections.deque(maxlen=limit)
        self._dropped = 0
        self._ready = asyncio.Event()
        self.closed = False

    def put(self, event: OpEvent) -> None:
        queue = self._queue
        if len(queue) == queue.maxlen:
            self._dropped += 1
        queue.append(event)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def get(self) -> OpEvent | None:
        """The next event, or None once the hub is closed."""
        while not self._queue:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        event = self._queue.popleft()
        if self._dropped:
            event, self._dropped = replace(event, dropped=self._dropped), 0
        return event


class EventHub:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._watchers: set[Watcher] = set()
        self._closed = False
        self.active = False
        """Someone watches: producers build events only then."""

    def subscribe(self, limit: int = WATCHER_QUEUE) -> Watcher:
        watcher = Watcher(limit)
        if self._closed:
            watcher.close()
        self._watchers.add(watcher)
        self.active = True
        return watcher

    def unsubscribe(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        self.active = bool(self._watchers)

    def close(self) -> None:
        """End every watch (the server is stopping)."""
        self._closed = True
        for watcher in self._watchers:
            watcher.close()

    def publish(self, kind: str, **fields: str | int) -> None:
        event = OpEvent(kind, time.time(), **fields)  # type: ignore[arg-type]
        for watcher in self._watchers:
            watcher.put(event)

    def publish_threadsafe(self, kind: str, **fields: str | int) -> None:
        if self.active and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(lambda: self.publish(kind, **fields))
