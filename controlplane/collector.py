"""Pausing Python's cyclic garbage collector during bounded bursts of allocation.

Two bursts sit on the path from a file edit to the proxies: the reload (the
watcher's thread re-reads files and translates them into a new snapshot) and
the push wave (the event loop writes to every stream). Both allocate many
objects that either stay alive (a new model; one write in flight per stream)
or die by reference counting (the model and the stream state are built
without reference cycles). Automatic collections during them only rescan live
objects: at 10,000 streams one such collection can take tens of milliseconds,
on the critical path of the edit. Collecting afterwards finds the same
garbage.

Pauses overlap across threads (a reload can run while a wave is under way),
so they are counted: the collector is off while any pause is held and comes
back on when the last one ends, if it was on when the first one began. A
pause never outlives its burst: the reload is one call, and a wave ends by
its own deadline at the latest.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0
_resume = False


def hold() -> None:
    """Start a pause (the collector is off until every pause has ended)."""
    global _holders, _resume
    with _lock:
        if _holders == 0:
            _resume = gc.isenabled()
            gc.disable()
        _holders += 1


def release() -> None:
    """End a pause started with :func:`hold`."""
    global _holders
    with _lock:
        if _holders == 0:
            raise RuntimeError("collector.release() without a hold()")
        _holders -= 1
        if _holders == 0 and _resume:
            gc.enable()


@contextmanager
def paused() -> Iterator[None]:
    """The collector is paused for the body of the ``with`` block."""
    hold()
    try:
        yield
    finally:
        release()
