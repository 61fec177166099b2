"""A forked child computes part of a map; the result never depends on it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from controlplane import forked_map as forked_map_module
from controlplane.forked_map import forked_map
from tests.fresh_interpreter import in_fresh_interpreter

PARENT = os.getpid()


class ChildFirst:
    """Wraps ``fn`` so that the parent starts only once the child has begun.

    The child, which starts from the back, leaves a mark at its first item; the
    parent waits for it (at most 10 s) at its first item and then gives the child
    a moment to send its first answer, so the order of events does not depend on
    how quickly a fork of a large process gets going.
    """

    def __init__(self, fn: Callable[[int], Any], mark: Path) -> None:
        self.fn, self.mark, self.waited = fn, mark, False

    def __call__(self, item: int) -> Any:
        if os.getpid() != PARENT:
            self.mark.touch()
        elif not self.waited:
            self.waited = True
            deadline = time.monotonic() + 10
            while not self.mark.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(0.2)
        return self.fn(item)


def _where(item: int) -> tuple[int, int]:
    """The item squared and the process that computed it; the parent is slow."""
    if os.getpid() == PARENT:
        time.sleep(0.005)
    return item * item, os.getpid()


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The pids of the children forked meanwhile."""
    pids: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            pids.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    yield pids


def _reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_a_child_computes_the_chunks_from_the_back_and_the_results_keep_their_order(
    forks: list[int], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if not in_fresh_interpreter(request):
        return
    results = forked_map(ChildFirst(_where, tmp_path / "mark"), list(range(100)), chunk=2)

    assert [square for square, _ in results] == [i * i for i in range(100)]
    pids = [pid for _, pid in results]
    assert pids[0] == PARENT
    assert pids[-1] != PARENT
    assert len(forks) == 1 and pids[-1] == forks[0]
    # The parent's part is a prefix, the child's the rest.
    assert pids == sorted(pids, key=lambda pid: pid != PARENT)
    assert _reaped(forks[0])


def _dies_in_child(item: int) -> int:
    if os.getpid() != PARENT:
        os._exit(3)
    return item + 1


def test_a_child_that_dies_costs_nothing_but_its_work(forks: list[int]) -> None:
    assert forked_map(_dies_in_child, list(range(50)), chunk=4) == list(range(1, 51))
    assert len(forks) == 1 and _reaped(forks[0])


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("not picklable")


def _unpicklable_in_child(item: int) -> Any:
    return _Unpicklable() if os.getpid() != PARENT else item


def test_a_child_whose_results_do_not_pickle_leaves_the_work_to_the_parent() -> None:
    assert forked_map(_unpicklable_in_child, list(range(40)), chunk=4) == list(range(40))


def test_garbage_from_the_child_is_ignored_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
    forks: list[int],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    if not in_fresh_interpreter(request):
        return

    class Garbage:
        HIGHEST_PROTOCOL = 5

        @staticmethod
        def dumps(value: object, protocol: int) -> bytes:
            return b"not a pickle"

        loads = staticmethod(__import__("pickle").loads)

    monkeypatch.setattr(forked_map_module, "pickle", Garbage)
    with capture_logs() as logs:
        results = forked_map(ChildFirst(_where, tmp_path / "mark"), list(range(40)), chunk=2)

    assert results == [(i * i, PARENT) for i in range(40)]
    assert [entry["event"] for entry in logs] == ["forked_map_garbage"]
    assert _reaped(forks[0])


def test_an_answer_of_the_wrong_length_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if not in_fresh_interpreter(request):
        return
    real_dumps = forked_map_module.pickle.dumps

    class Shortened:
        HIGHEST_PROTOCOL = 5
        loads = staticmethod(forked_map_module.pickle.loads)

        @staticmethod
        def dumps(value: list[int], protocol: int) -> bytes:
            return real_dumps(value[:-1], protocol)

    monkeypatch.setattr(forked_map_module, "pickle", Shortened)
    with capture_logs() as logs:
        results = forked_map(ChildFirst(_where, tmp_path / "mark"), list(range(30)), chunk=3)
    assert results == [(i * i, PARENT) for i in range(30)]
    assert [entry["event"] for entry in logs] == ["forked_map_garbage"]


def _fails_in_parent(item: int) -> int:
    if os.getpid() == PARENT and item == 3:
        raise ValueError("bad service")
    return item


def test_an_error_in_the_parent_propagates_and_the_child_is_reaped(forks: list[int]) -> None:
    with pytest.raises(ValueError, match="bad service"):
        forked_map(_fails_in_parent, list(range(40)), chunk=4)
    assert len(forks) == 1 and _reaped(forks[0])


def test_one_chunk_or_less_is_computed_here_without_a_fork(forks: list[int]) -> None:
    assert forked_map(_where, [1, 2, 3], chunk=3) == [(1, PARENT), (4, PARENT), (9, PARENT)]
    assert forked_map(_where, [], chunk=3) == []
    assert forks == []


def test_a_fork_that_fails_is_computed_here_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", fork)
    with capture_logs() as logs:
        assert forked_map(lambda item: item * 2, list(range(10)), chunk=2) == [
            item * 2 for item in range(10)
        ]
    assert logs == [
        {
            "event": "forked_map_failed",
            "log_level": "warning",
            "error": "[Errno 11] Resource temporarily unavailable",
            "consequence": "computed by one process",
        }
    ]
