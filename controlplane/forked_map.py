"""Mapping a function over many items on two cores: this process and a forked child.

A cold start translates every service of the mesh, seconds of CPU at 10,000
services, and one Python process uses one core. :func:`forked_map` returns
``[fn(item) for item in items]`` with a forked child computing part of it:

* the child is a ``fork`` of this process, so it has the function and
  everything it reads (the model, the translator) without copying or
  pickling any of it; only its results come back, pickled, through a pipe;
* the items are cut into chunks of ``chunk``; this process computes chunks
  from the front and the child from the back, each answer framed with its
  chunk's index. Between its own chunks this process takes in whatever the
  child has answered so far, without blocking, and it stops once every chunk
  is computed by one or the other. So this process never waits for the
  child: a child that is slow (its core busy), stuck or dead, or answers
  garbage, costs at most the chunk being computed twice where the two meet.
  The result never depends on the child;
* the child runs nothing but ``fn`` and ``pickle`` and leaves with
  ``os._exit``: no logging (a lock another thread held at the fork stays
  held in the child), no atexit handlers, no buffers flushed twice. It is
  killed once this process has every result.

Results must pickle. Where ``os.fork`` is missing or fails, everything is
computed here. Fork only where no gRPC channel or server has run yet: gRPC's
own fork handlers run in the child and may stop it (then this process
computes everything, as for any failed child). Only the caller knows whether
a second core is there to use (``controlplane.config.parallel_read.helper_pays``)
and whether the work is large enough to pay for a fork.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pickle
import signal
import struct
from collections.abc import Callable, Sequence
from typing import TypeVar

import structlog

log = structlog.get_logger(__name__)

A = TypeVar("A")
R = TypeVar("R")

PIPE_BYTES = 1 << 20
"""Capacity asked for the answer pipe (Linux; elsewhere the default)."""
_HEADER = struct.Struct("!II")  # chunk index, pickle length
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", None)


def forked_map(fn: Callable[[A], R], items: Sequence[A], chunk: int) -> list[R]:
    """``[fn(item) for item in items]``, part of it computed by a forked child."""
    starts = range(0, len(items), chunk)
    if len(starts) < 2 or not hasattr(os, "fork"):
        return [fn(item) for item in items]
    try:
        read_end, write_end = os.pipe()
    except OSError:
        return [fn(item) for item in items]
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(read_end)
        os.close(write_end)
        log.warning("forked_map_failed", error=str(exc), consequence="computed by one process")
        return [fn(item) for item in items]
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        os.close(read_end)
        _child(fn, items, chunk, starts, write_end)
    os.close(write_end)
    try:
        return _parent(fn, items, chunk, starts, read_end)
    finally:
        os.close(read_end)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(pid, 0)


def _child(
    fn: Callable[[A], R], items: Sequence[A], chunk: int, starts: range, write_end: int
) -> None:  # pragma: no cover - runs in the forked child
    status = 0
    try:
        if _F_SETPIPE_SZ is not None:
            with contextlib.suppress(OSError):
                fcntl.fcntl(write_end, _F_SETPIPE_SZ, PIPE_BYTES)
        for index in reversed(range(len(starts))):
            start = starts[index]
            data = pickle.dumps(
                [fn(item) for item in items[start : start + chunk]], pickle.HIGHEST_PROTOCOL
            )
            frame = _HEADER.pack(index, len(data)) + data
            view = memoryview(frame)
            while view:
                view = view[os.write(write_end, view) :]
    except BaseException:
        status = 1
    os._exit(status)


def _parent(
    fn: Callable[[A], R], items: Sequence[A], chunk: int, starts: range, read_end: int
) -> list[R]:
    os.set_blocking(read_end, False)
    done: dict[int, list[R]] = {}
    pending = bytearray()
    child_alive = True
    sizes = [len(items[start : start + chunk]) for start in starts]
    front = 0
    back = len(starts)  # chunks from here on are answered by the child
    while front < back:
        if front not in done:
            start = starts[front]
            done[front] = [fn(item) for item in items[start : start + chunk]]
        front += 1
        if child_alive:
            child_alive = _take_answers(read_end, pending, done, sizes)
            while back > front and back - 1 in done:
                back -= 1
    results: list[R] = []
    for index in range(len(starts)):
        results.extend(done[index])
    return results


def _take_answers(
    read_end: int, pending: bytearray, done: dict[int, list[R]], sizes: list[int]
) -> bool:
    """Take in the child's complete answers; False once it is gone or said something wrong."""
    while True:
        try:
            data = os.read(read_end, PIPE_BYTES)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        pending += data
        while len(pending) >= _HEADER.size:
            index, size = _HEADER.unpack_from(pending)
            if len(pending) < _HEADER.size + size:
                break
            body = bytes(pending[_HEADER.size : _HEADER.size + size])
            del pending[: _HEADER.size + size]
            try:
                answer = pickle.loads(body)
            except Exception:
                answer = None
            if index >= len(sizes) or not isinstance(answer, list) or len(answer) != sizes[index]:
                log.warning("forked_map_garbage", consequence="computed by one process")
                return False
            done.setdefault(index, answer)
