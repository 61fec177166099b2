"""Collector pauses are counted: on again only when the last ends, and only if it was on."""

from __future__ import annotations

import gc
import threading

import pytest

from controlplane import collector


def test_overlapping_pauses_turn_the_collector_back_on_only_after_the_last() -> None:
    assert gc.isenabled()
    collector.hold()
    collector.hold()
    assert not gc.isenabled()
    collector.release()
    assert not gc.isenabled()
    collector.release()
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with collector.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_pauses_from_two_threads_overlap() -> None:
    held = threading.Event()
    done = threading.Event()

    def reload() -> None:
        with collector.paused():
            held.set()
            done.wait(5)

    thread = threading.Thread(target=reload)
    thread.start()
    assert held.wait(5)
    with collector.paused():
        pass
    assert not gc.isenabled()  # the other thread's pause is still held
    done.set()
    thread.join(5)
    assert gc.isenabled()


def test_a_release_without_a_hold_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        collector.release()
    assert gc.isenabled()
