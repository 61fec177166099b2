"""Keeping the server's heap small and cheap to collect, at quiet moments.

Two things grow the heap of a busy xDS server, and :class:`Housekeeper` deals
with both shortly after a burst of work (the end of a push wave, a large
response, a reload), at most once per ``interval``, on the event loop thread:

* **Long-lived objects the cyclic collector keeps rescanning.** The mesh model
  is millions of small immutable objects, and every stream holds state for as
  long as it lives. Python's collector scans all of them on each full
  collection, and full collections come often while thousands of streams
  allocate during a push. So the housekeeper runs one full collection (which
  also frees any garbage caught in reference cycles) and then freezes what
  is left (``gc.freeze``): later collections skip it. Freezing after the
  collection, not before, is what keeps cyclic garbage from being frozen
  forever; the objects that stay alive (model, snapshots, streams) are built
  without reference cycles, so reference counting frees them when they go,
  frozen or not.
* **Freed buffers malloc keeps.** A push to 10,000 streams is followed by as
  many ACKs, and a state-of-the-world EDS ACK from an Envoy that follows 3,000
  clusters is about 150 KB; initial syncs move megabytes per stream. glibc's
  malloc keeps what is freed in its heaps once its dynamic mmap threshold has
  grown past such sizes. :func:`tune` (once, at start) fixes
  ``M_MMAP_THRESHOLD`` at 1 MiB, which stops it from growing: the
  multi-megabyte responses of an initial sync get their own mappings, given
  back as soon as they are freed, while ACK-sized buffers come from the heap,
  where the next ACK reuses the memory the last one freed. Below glibc's own
  128 KiB default every 150 KB ACK was a fresh mapping whose pages the kernel
  zeroed on first touch: thousands of them per push, the largest kernel cost of a
  wave. The housekeeper calls ``malloc_trim(0)``, which returns the free pages
  of the heaps. Both are reached through ctypes (nothing on PyPI wraps them)
  and are no-ops on a C library without them (musl, macOS).

Caches that pay only during bursts go first: each function given to
:meth:`Housekeeper.also_release` runs before the collection (the xDS server
drops its encoded response bodies, see :mod:`controlplane.xds.encoding`).

The automatic collector is paused during push waves and reloads
(:mod:`controlplane.collector`); this module's full collection runs after them.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1024 * 1024


def _glibc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - probing for glibc
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _glibc()


def tune() -> bool:
    """Give large allocations their own mappings from now on; ``False`` if not glibc."""
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def trim() -> bool:
    """Return free heap memory to the system now; ``True`` if some was released."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


class Housekeeper:
    """Coalesces "a burst just ended" into one :meth:`run`, ``delay`` seconds later,
    at most once per ``interval`` seconds (except right after a push wave, see
    :meth:`after_burst`)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        delay: float = 1.0,
        interval: float = 10.0,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self._loop = loop
        self._busy = [busy]
        self._releases: list[Callable[[], object]] = []
        self._delay = delay
        self._interval = interval
        self._pending: asyncio.TimerHandle | None = None
        self._last = float("-inf")
        self.runs = 0

    def hold_while(self, busy: Callable[[], bool]) -> None:
        """Also put runs off while ``busy()`` is true."""
        self._busy.append(busy)

    def also_release(self, release: Callable[[], object]) -> None:
        """Call ``release()`` at each run, before the collection: it drops what is
        worth keeping only during bursts."""
        self._releases.append(release)

    def soon(self) -> None:
        """Ask for a run; call only on the loop's thread (see :meth:`soon_threadsafe`)."""
        if self._pending is not None or self._loop.is_closed():
            return
        wait = max(self._delay, self._last + self._interval - self._loop.time())
        self._pending = self._loop.call_later(wait, self._run)

    def after_burst(self) -> None:
        """Ask for a run ``delay`` seconds from now, whatever the interval: a burst
        (a push wave) just ended, and the moment right after one is the least likely
        to hold up the next (which waits for a run under way, see :meth:`_run`)."""
        if self._loop.is_closed():
            return
        self.cancel()
        self._pending = self._loop.call_later(self._delay, self._run)

    def soon_threadsafe(self) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.soon)

    def cancel(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None

    def _run(self) -> None:
        self._pending = None
        if any(busy() for busy in self._busy):
            # Never in the middle of a push or a reload: a full collection holds
            # the loop and the GIL, and the reload's thread waits for the GIL.
            self._pending = self._loop.call_later(self._delay, self._run)
            return
        self._last = self._loop.time()
        self.runs += 1
        started = time.perf_counter()
        for release in self._releases:
            release()
        collected = self.run()
        log.info(
            "heap_housekeeping",
            collected=collected,
            seconds=round(time.perf_counter() - started, 3),
        )

    @staticmethod
    def run() -> int:
        """Collect, freeze what survives, and hand free heap pages back; returns how
        many unreachable objects the collection found."""
        collected = gc.collect()
        gc.freeze()
        started = time.perf_counter()
        trim()
        log.debug("heap_trimmed", seconds=round(time.perf_counter() - started, 3))
        return collected
