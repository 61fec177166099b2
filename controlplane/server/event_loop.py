"""Which asyncio event loop runs the server, and running a coroutine on it.

A push to 10,000 streams is some 50,000 event-loop callbacks on one thread
(a wake-up, a write and its completion, an ACK read and its completion per
stream), and at that scale the loop's own machinery (the ready queue,
handles, timers, I/O callbacks) is a large share of the push.
`uvloop <https://github.com/MagicStack/uvloop>`_ implements that machinery in
C on libuv and runs grpc.aio unchanged; docs/performance.md has the
measurements. ``auto`` takes uvloop when it can be imported (it does not
exist for Windows) and asyncio's own loop otherwise; ``asyncio`` and
``uvloop`` choose one explicitly.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from controlplane.errors import PilotfishError

T = TypeVar("T")

LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The factory of loop ``name`` (one of :data:`LOOPS`)."""
    if name not in LOOPS:
        raise PilotfishError(f"unknown event loop {name!r} (choose from {', '.join(LOOPS)})")
    if name == "asyncio":
        return asyncio.new_event_loop
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError as exc:
        if name == "uvloop":
            raise PilotfishError(f"event loop uvloop is not available: {exc}") from exc
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """``asyncio.run(main)``, on the event loop named ``loop``."""
    try:
        factory = loop_factory(loop)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
