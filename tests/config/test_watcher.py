"""DirectoryWatcher on a real directory, with inotify and with polling.

Positive checks wait for a callback with a generous timeout. Checks that
nothing (more) happens wait for a quiet period well beyond the debounce and
the poll interval: long enough to catch a wrong callback on an idle machine,
and a slow machine can only make them pass, not fail.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from controlplane.config import watcher as watcher_module
from controlplane.config.files import FileStamp, scan
from controlplane.config.watcher import DirectoryWatcher
from controlplane.errors import PilotfishError

TIMEOUT = 10.0
QUIET = 0.4
POLL = 0.05


class Calls:
    """The callback: counts calls and records what a scan saw at each one."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.scans: list[dict[str, FileStamp]] = []
        self.times: list[float] = []
        self._cond = threading.Condition()

    def __call__(self) -> None:
        seen = scan(self.root)
        with self._cond:
            self.scans.append(seen)
            self.times.append(time.monotonic())
            self._cond.notify_all()

    @property
    def count(self) -> int:
        with self._cond:
            return len(self.times)

    def wait_for(self, count: int, timeout: float = TIMEOUT) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.times) >= count, timeout)

    def wait_until(self, predicate: Callable[[dict[str, FileStamp]], bool]) -> bool:
        """Wait for a call whose scan satisfies ``predicate``."""
        with self._cond:
            return self._cond.wait_for(lambda: any(predicate(s) for s in self.scans), TIMEOUT)

    def settle(self, quiet: float = QUIET) -> int:
        """Wait until no call has come for ``quiet`` seconds; return the count."""
        while True:
            count = self.count
            time.sleep(quiet)
            if self.count == count:
                return count


def stamp_of(path: Path) -> FileStamp:
    st = os.stat(path)
    return FileStamp(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino, device=st.st_dev)


@pytest.fixture(params=[False, True], ids=["inotify", "polling"])
def polling(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def calls(tmp_path: Path) -> Calls:
    return Calls(tmp_path)


def _watchers(
    root: Path, calls: Calls, polling: bool, **defaults: float
) -> Iterator[Callable[..., DirectoryWatcher]]:
    """Yields a starter of watchers on ``root``; stops them all afterwards."""
    started: list[DirectoryWatcher] = []

    def make(**options: float) -> DirectoryWatcher:
        watcher = DirectoryWatcher(
            root, calls, polling=polling, poll_interval=POLL, **{**defaults, **options}
        )
        watcher.start()
        started.append(watcher)
        return watcher

    yield make
    for watcher in started:
        watcher.stop()


@pytest.fixture
def watch(tmp_path: Path, calls: Calls, polling: bool) -> Iterator[Callable[..., DirectoryWatcher]]:
    # Tests of settling set it; elsewhere every burst waits out the debounce.
    yield from _watchers(tmp_path, calls, polling, debounce=0.05, settle=60.0)


def test_editing_a_file_in_place_calls_back_once(
    tmp_path: Path, calls: Calls, watch: Callable[..., DirectoryWatcher]
) -> None:
    target = tmp_path / "a.yaml"
    target.write_text("x: 1\n")
    watch()

    with target.open("a") as f:
        f.write("y: 2\n")

    assert calls.wait_for(1)
    assert calls.settle() == 1
    assert calls.scans[-1] == {"a.yaml": stamp_of(target)}


def test_atomic_rename_over_a_file_calls_back_once(
    tmp_path: Path, calls: Calls, watch: Callable[..., DirectoryWatcher]
) -> None:
    target = tmp_path / "x.yaml"
    target.write_text("x: 1\n")
    watch()

    (tmp_path / ".x.yaml.tmp").write_text("x: 2\n")
    os.replace(tmp_path / ".x.yaml.tmp", target)

    assert calls.wait_for(1)
    assert calls.settle() == 1
    assert calls.scans[-1] == {"x.yaml": stamp_of(target)}


def test_deleting_a_file_calls_back_once(
    tmp_path: Path, calls: Calls, watch: Callable[..., DirectoryWatcher]
) -> None:
    (tmp_path / "a.yaml").write_text("x: 1\n")
    watch()

    (tmp_path / "a.yaml").unlink()

    assert calls.wait_for(1)
    assert calls.settle() == 1
    assert calls.scans[-1] == {}


def test_a_new_subdirectory_with_a_file_calls_back(
    tmp_path: Path, calls: Calls, watch: Callable[..., DirectoryWatcher]
) -> None:
    watch()

    (tmp_path / "gateways" / "eu").mkdir(parents=True)
    (tmp_path / "gateways" / "eu" / "gw.yaml").write_text("x: 1\n")

    assert calls.wait_until(lambda seen: "gateways/eu/gw.yaml" in seen)


def test_a_directory_moved_in_with_files_calls_back(
    tmp_path: Path, calls: Calls, polling: bool
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "gw.yaml").write_text("x: 1\n")
    calls.root = root
    watcher = DirectoryWatcher(root, calls, debounce=0.05, polling=polling, poll_interval=POLL)

    with watcher:
        os.rename(staged, root / "staged")

        assert calls.wait_until(lambda seen: "staged/gw.yaml" in seen)


def test_a_symlink_to_a_directory_of_config_calls_back(
    tmp_path: Path, calls: Calls, polling: bool
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "mesh.yaml").write_text("x: 1\n")
    calls.root = root
    watcher = DirectoryWatcher(root, calls, debounce=0.05, polling=polling, poll_interval=POLL)

    with watcher:
        (root / "shared").symlink_to(shared)
        assert calls.wait_until(lambda seen: seen.keys() == {"shared/mesh.yaml"})

        (root / "shared").unlink()
        assert calls.wait_until(lambda seen: seen == {})


def test_other_files_being_written_do_not_call_back(
    tmp_path: Path, calls: Calls, watch: Callable[..., DirectoryWatcher]
) -> None:
    (tmp_path / "a.yaml").write_text("x: 1\n")
    watch()

    (tmp_path / "README.md").write_text("hello\n")
    (tmp_path / "values.json").write_text("{}\n")
    with (tmp_path / "README.md").open("a") as f:
        f.write("more\n")

    assert calls.settle() == 0


def test_editor_swap_and_temp_files_alone_do_not_call_back(
    tmp_path: Path, calls: Calls, watch: Callable[..., DirectoryWatcher]
) -> None:
    (tmp_path / "x.yaml").write_text("x: 1\n")
    watch()

    for name in [".x.yaml.swp", ".x.yaml.swx", "x.yaml~", "4913", "#x.yaml#", "x.yaml.tmp"]:
        (tmp_path / name).write_text("swap")
        (tmp_path / name).unlink()

    assert calls.settle() == 0


def test_dotfiles_and_hidden_directories_do_not_call_back(
    tmp_path: Path, calls: Calls, watch: Callable[..., DirectoryWatcher]
) -> None:
    watch()

    (tmp_path / ".hidden.yaml").write_text("x: 1\n")
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "objects" / "a.yaml").write_text("x: 1\n")
    os.rename(tmp_path / ".hidden.yaml", tmp_path / ".other.yaml")

    assert calls.settle() == 0


def test_reading_the_files_does_not_call_back(
    tmp_path: Path, calls: Calls, watch: Callable[..., DirectoryWatcher]
) -> None:
    (tmp_path / "a.yaml").write_text("x: 1\n")
    watch()

    for _ in range(3):
        (tmp_path / "a.yaml").read_text()

    assert calls.settle() == 0


def test_a_kubernetes_configmap_swap_calls_back_and_scan_sees_the_new_file(
    tmp_path: Path, calls: Calls, watch: Callable[..., DirectoryWatcher]
) -> None:
    old = tmp_path / "..2026_01_01_00_00_00.1"
    old.mkdir()
    (old / "a.yaml").write_text("version: 1\n")
    (tmp_path / "..data").symlink_to(old.name)
    (tmp_path / "a.yaml").symlink_to("..data/a.yaml")
    watch()

    new = tmp_path / "..2026_01_01_00_05_00.2"
    new.mkdir()
    (new / "a.yaml").write_text("version: 2 # longer\n")
    (tmp_path / "..data_tmp").symlink_to(new.name)
    os.rename(tmp_path / "..data_tmp", tmp_path / "..data")
    shutil.rmtree(old)

    assert calls.wait_for(1)
    assert calls.settle() == 1
    assert scan(tmp_path) == {"a.yaml": stamp_of(new / "a.yaml")}
    assert calls.scans[-1] == {"a.yaml": stamp_of(new / "a.yaml")}


def test_twenty_writes_10ms_apart_call_back_exactly_once(
    tmp_path: Path, calls: Calls, watch: Callable[..., DirectoryWatcher]
) -> None:
    watch(debounce=0.5, max_delay=10.0)

    for i in range(20):
        (tmp_path / "a.yaml").write_text(f"x: {i}\n")
        time.sleep(0.01)

    assert calls.wait_for(1)
    assert calls.settle() == 1
    assert calls.scans[-1] == {"a.yaml": stamp_of(tmp_path / "a.yaml")}


def test_a_steady_stream_of_writes_calls_back_about_once_per_max_delay(
    tmp_path: Path, calls: Calls, watch: Callable[..., DirectoryWatcher]
) -> None:
    watch(debounce=0.2, max_delay=1.0)

    started = time.monotonic()
    i = 0
    while time.monotonic() - started < 2.5:
        (tmp_path / "a.yaml").write_text(f"x: {i}\n")
        i += 1
        time.sleep(0.05)

    assert calls.wait_for(1)
    assert calls.settle() in (2, 3)
    assert calls.scans[-1] == {"a.yaml": stamp_of(tmp_path / "a.yaml")}


def test_the_callback_waits_for_the_debounce_set_on_the_watcher(
    tmp_path: Path, calls: Calls, watch: Callable[..., DirectoryWatcher]
) -> None:
    watcher = watch()
    watcher.debounce = 0.6

    written = time.monotonic()
    (tmp_path / "a.yaml").write_text("x: 1\n")

    assert calls.wait_for(1)
    assert watcher.debounce == 0.6
    assert calls.times[0] - written >= 0.6


def test_max_delay_caps_a_debounce_longer_than_it(
    tmp_path: Path, calls: Calls, watch: Callable[..., DirectoryWatcher]
) -> None:
    watch(debounce=30.0, max_delay=0.3)

    written = time.monotonic()
    (tmp_path / "a.yaml").write_text("x: 1\n")

    assert calls.wait_for(1)
    assert calls.times[0] - written >= 0.3


@pytest.fixture
def inotify_watch(tmp_path: Path, calls: Calls) -> Iterator[Callable[..., DirectoryWatcher]]:
    yield from _watchers(tmp_path, calls, False, max_delay=30.0)


def test_a_file_written_and_closed_calls_back_after_the_settle_not_the_debounce(
    tmp_path: Path, calls: Calls, inotify_watch: Callable[..., DirectoryWatcher]
) -> None:
    inotify_watch(debounce=10.0, settle=0.02)

    written = time.monotonic()
    (tmp_path / "a.yaml").write_text("x: 1\n")

    assert calls.wait_for(1, timeout=5.0)
    assert calls.times[0] - written < 5.0
    assert calls.scans[0] == {"a.yaml": stamp_of(tmp_path / "a.yaml")}


def test_a_file_renamed_into_place_settles_too(
    tmp_path: Path, calls: Calls, inotify_watch: Callable[..., DirectoryWatcher]
) -> None:
    inotify_watch(debounce=10.0, settle=0.02)

    (tmp_path / ".a.yaml.tmp").write_text("x: 2\n")
    written = time.monotonic()
    os.replace(tmp_path / ".a.yaml.tmp", tmp_path / "a.yaml")

    assert calls.wait_for(1, timeout=5.0)
    assert calls.times[0] - written < 5.0


def test_a_file_still_open_for_writing_waits_out_the_debounce(
    tmp_path: Path, calls: Calls, inotify_watch: Callable[..., DirectoryWatcher]
) -> None:
    inotify_watch(debounce=0.8, settle=0.02)

    with (tmp_path / "a.yaml").open("w") as f:
        f.write("x: 1\n")
        f.flush()
        written = time.monotonic()
        assert calls.wait_for(1)
        assert calls.times[0] - written >= 0.8


def test_the_burst_settles_when_its_last_open_file_is_closed(
    tmp_path: Path, calls: Calls, inotify_watch: Callable[..., DirectoryWatcher]
) -> None:
    inotify_watch(debounce=10.0, settle=0.02)

    with (tmp_path / "a.yaml").open("w") as f:
        f.write("x: 1\n")
        f.flush()
        (tmp_path / "b.yaml").write_text("y: 1\n")
        time.sleep(QUIET)
        assert calls.count == 0
        closing = time.monotonic()
    assert calls.wait_for(1, timeout=5.0)
    assert calls.times[0] - closing < 5.0
    assert calls.settle() == 1
    assert calls.scans[0] == {
        "a.yaml": stamp_of(tmp_path / "a.yaml"),
        "b.yaml": stamp_of(tmp_path / "b.yaml"),
    }


def test_a_new_directory_waits_out_the_debounce(
    tmp_path: Path, calls: Calls, inotify_watch: Callable[..., DirectoryWatcher]
) -> None:
    inotify_watch(debounce=0.8, settle=0.02)

    started = time.monotonic()
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "a.yaml").write_text("x: 1\n")

    assert calls.wait_for(1)
    assert calls.times[0] - started >= 0.8


def test_the_watcher_is_busy_from_the_first_event_until_the_callback_returns(
    tmp_path: Path,
) -> None:
    seen: list[bool] = []
    release = threading.Event()

    def on_change() -> None:
        seen.append(watcher.busy)
        release.wait(TIMEOUT)

    watcher = DirectoryWatcher(tmp_path, on_change, debounce=0.5, settle=0.5)
    with watcher:
        assert not watcher.busy
        (tmp_path / "a.yaml").write_text("x: 1\n")
        deadline = time.monotonic() + TIMEOUT
        while not watcher.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watcher.busy and seen == []
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [True] and watcher.busy
        release.set()
        while watcher.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not watcher.busy
    assert not watcher.busy


def test_the_poller_cannot_see_files_closed_and_waits_out_the_debounce(
    tmp_path: Path, calls: Calls
) -> None:
    with DirectoryWatcher(
        tmp_path, calls, debounce=0.8, settle=0.02, polling=True, poll_interval=POLL
    ):
        written = time.monotonic()
        (tmp_path / "a.yaml").write_text("x: 1\n")
        assert calls.wait_for(1)
    assert calls.times[0] - written >= 0.8


def test_negative_timings_are_rejected(tmp_path: Path, calls: Calls) -> None:
    with pytest.raises(ValueError):
        DirectoryWatcher(tmp_path, calls, debounce=-1)
    with pytest.raises(ValueError):
        DirectoryWatcher(tmp_path, calls, max_delay=-1)
    with pytest.raises(ValueError):
        DirectoryWatcher(tmp_path, calls, settle=-1)
    with pytest.raises(ValueError):
        DirectoryWatcher(tmp_path, calls, poll_interval=0)
    watcher = DirectoryWatcher(tmp_path, calls)
    with pytest.raises(ValueError):
        watcher.debounce = -0.1
    with pytest.raises(ValueError):
        watcher.settle = -0.1
    assert (watcher.debounce, watcher.settle) == (0.1, 0.02)


def test_a_failing_callback_is_logged_and_the_watcher_keeps_running(
    tmp_path: Path, polling: bool
) -> None:
    calls = Calls(tmp_path)
    failed_once = threading.Event()

    def on_change() -> None:
        if not failed_once.is_set():
            failed_once.set()
            raise RuntimeError("bad yaml")
        calls()

    with (
        structlog.testing.capture_logs() as logs,
        DirectoryWatcher(tmp_path, on_change, debounce=0.05, polling=polling, poll_interval=POLL),
    ):
        (tmp_path / "a.yaml").write_text("x: 1\n")
        assert failed_once.wait(TIMEOUT)
        (tmp_path / "b.yaml").write_text("x: 2\n")

        assert calls.wait_until(lambda seen: sorted(seen) == ["a.yaml", "b.yaml"])

    failed = [entry for entry in logs if entry["event"] == "config_reload_failed"]
    assert len(failed) == 1
    assert failed[0]["log_level"] == "error"
    assert failed[0]["root"] == str(tmp_path)
    assert failed[0]["exc_info"] is True


class FullDiskLogger:
    """Stands in for the watcher's logger when the log destination is full."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def _fail(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))
        raise OSError(errno.ENOSPC, "No space left on device")

    debug = info = warning = error = exception = _fail


class Interrupted(BaseException):
    """A BaseException that is not a request to exit."""


def test_the_watcher_survives_failing_callbacks_whose_failure_cannot_be_logged(
    tmp_path: Path, polling: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = FullDiskLogger()
    monkeypatch.setattr(watcher_module, "logger", broken)
    calls = Calls(tmp_path)
    failures = [RuntimeError("bad yaml"), Interrupted("cancelled")]
    failed = threading.Semaphore(0)

    def on_change() -> None:
        if failures:
            failed.release()
            raise failures.pop(0)
        calls()

    with DirectoryWatcher(tmp_path, on_change, debounce=0.05, polling=polling, poll_interval=POLL):
        (tmp_path / "a.yaml").write_text("x: 1\n")
        assert failed.acquire(timeout=TIMEOUT)
        (tmp_path / "b.yaml").write_text("x: 2\n")
        assert failed.acquire(timeout=TIMEOUT)
        (tmp_path / "c.yaml").write_text("x: 3\n")

        assert calls.wait_until(lambda seen: sorted(seen) == ["a.yaml", "b.yaml", "c.yaml"])

    reported = [(event, fields["error"]) for event, fields in broken.events]
    assert reported == [
        ("config_reload_failed", "RuntimeError: bad yaml"),
        ("config_reload_failed", "Interrupted: cancelled"),
    ]


def test_events_during_a_callback_call_back_again_after_it_returns(
    tmp_path: Path, polling: bool
) -> None:
    entered = threading.Event()
    release = threading.Event()
    active = 0
    overlapped = False
    calls = Calls(tmp_path)

    def on_change() -> None:
        nonlocal active, overlapped
        active += 1
        overlapped = overlapped or active > 1
        entered.set()
        release.wait(TIMEOUT)
        calls()
        active -= 1

    with DirectoryWatcher(tmp_path, on_change, debounce=0.05, polling=polling, poll_interval=POLL):
        (tmp_path / "a.yaml").write_text("x: 1\n")
        assert entered.wait(TIMEOUT)
        (tmp_path / "b.yaml").write_text("x: 2\n")
        time.sleep(QUIET)
        release.set()

        assert calls.wait_for(2)
        assert calls.settle() == 2
    assert overlapped is False
    assert calls.scans[-1].keys() == {"a.yaml", "b.yaml"}


def test_stop_is_idempotent_and_stops_callbacks(
    tmp_path: Path, calls: Calls, polling: bool
) -> None:
    watcher = DirectoryWatcher(tmp_path, calls, debounce=0.05, polling=polling, poll_interval=POLL)
    watcher.stop()
    watcher.start()
    watcher.start()
    watcher.stop()
    watcher.stop()

    (tmp_path / "a.yaml").write_text("x: 1\n")

    assert calls.settle() == 0
    assert [t.name for t in threading.enumerate() if t.name.startswith("pilotfish-watch")] == []


def test_a_stopped_watcher_can_be_started_again(
    tmp_path: Path, calls: Calls, polling: bool
) -> None:
    watcher = DirectoryWatcher(tmp_path, calls, debounce=0.05, polling=polling, poll_interval=POLL)
    watcher.start()
    watcher.stop()

    with watcher:
        (tmp_path / "a.yaml").write_text("x: 1\n")
        assert calls.wait_for(1)


def test_stop_from_inside_the_callback_does_not_deadlock(tmp_path: Path, polling: bool) -> None:
    returned = threading.Event()
    watcher: DirectoryWatcher

    def on_change() -> None:
        watcher.stop()
        returned.set()

    watcher = DirectoryWatcher(
        tmp_path, on_change, debounce=0.05, polling=polling, poll_interval=POLL
    )
    watcher.start()
    (tmp_path / "a.yaml").write_text("x: 1\n")

    assert returned.wait(TIMEOUT)
    watcher.stop()


def test_start_raises_pilotfish_error_for_a_missing_directory(
    tmp_path: Path, calls: Calls, polling: bool
) -> None:
    watcher = DirectoryWatcher(tmp_path / "missing", calls, polling=polling)

    with pytest.raises(PilotfishError, match="cannot watch config directory"):
        watcher.start()
    watcher.stop()


def test_start_raises_pilotfish_error_for_a_file(
    tmp_path: Path, calls: Calls, polling: bool
) -> None:
    (tmp_path / "a.yaml").write_text("x: 1\n")
    watcher = DirectoryWatcher(tmp_path / "a.yaml", calls, polling=polling)

    with pytest.raises(PilotfishError, match="cannot watch config directory"):
        watcher.start()


def test_a_deleted_and_recreated_root_is_watched_again(tmp_path: Path, polling: bool) -> None:
    root = tmp_path / "conf"
    root.mkdir()
    (root / "a.yaml").write_text("x: 1\n")
    calls = Calls(root)

    with DirectoryWatcher(root, calls, debounce=0.05, polling=polling, poll_interval=POLL):
        shutil.rmtree(root)
        assert calls.wait_until(lambda seen: seen == {})

        root.mkdir()
        (root / "b.yaml").write_text("x: 2\n")
        assert calls.wait_until(lambda seen: seen.keys() == {"b.yaml"})

        (root / "c.yaml").write_text("x: 3\n")
        assert calls.wait_until(lambda seen: seen.keys() == {"b.yaml", "c.yaml"})


def test_a_root_moved_away_counts_as_gone(tmp_path: Path, polling: bool) -> None:
    root = tmp_path / "conf"
    root.mkdir()
    (root / "a.yaml").write_text("x: 1\n")
    calls = Calls(root)

    with DirectoryWatcher(root, calls, debounce=0.05, polling=polling, poll_interval=POLL):
        os.rename(root, tmp_path / "conf.old")
        assert calls.wait_until(lambda seen: seen == {})

        root.mkdir()
        (root / "b.yaml").write_text("x: 2\n")
        assert calls.wait_until(lambda seen: seen.keys() == {"b.yaml"})


def test_a_symlinked_root_repointed_elsewhere_is_followed(tmp_path: Path, polling: bool) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "a.yaml").write_text("x: 1\n")
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "b.yaml").write_text("x: 2\n")
    root = tmp_path / "current"
    root.symlink_to("v1")
    calls = Calls(root)

    with DirectoryWatcher(root, calls, debounce=0.05, polling=polling, poll_interval=POLL):
        (root / "a2.yaml").write_text("x: 1\n")
        assert calls.wait_until(lambda seen: seen.keys() == {"a.yaml", "a2.yaml"})

        (tmp_path / "next").symlink_to("v2")
        os.replace(tmp_path / "next", root)
        assert calls.wait_until(lambda seen: seen.keys() == {"b.yaml"})

        (tmp_path / "v2" / "c.yaml").write_text("x: 3\n")
        assert calls.wait_until(lambda seen: seen.keys() == {"b.yaml", "c.yaml"})
