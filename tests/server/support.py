"""Helpers shared by the gRPC server tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

MiB = 1024 * 1024


async def eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def read(call: Any, timeout: float = 3.0) -> Any:
    return await asyncio.wait_for(call.read(), timeout)
