"""Notice changes under the config directory and ask for a rebuild, debounced.

A :class:`DirectoryWatcher` runs a watchdog observer on the config directory,
recursively: inotify on Linux, or a poller (``polling=True``) for filesystems
that have no change notification (NFS, some FUSE and container mounts). The
observer's events are only a hint: the callback is expected to scan the
directory itself (:func:`~controlplane.config.files.scan`), so the watcher
drops events that cannot change what a scan returns and passes no event
details on.

An event counts when it names, relative to the root (or, for a move, when
either of its two paths does):

* a config file (:func:`~controlplane.config.files.is_config_path`);
* the creation, deletion or move of a directory that is not hidden. A new
  directory may bring config files whose own events were never seen;
* ``..data``, the symlink that the kubelet swaps atomically to publish a new
  version of a ConfigMap volume. ``..data`` is hidden, and nothing else in the
  volume changes: the ``name.yaml -> ..data/name.yaml`` links stay as they are;
* any other non-hidden file that is not an editor temporary, when it is now a
  directory (a symlink to one) or when it went away (it may have been one).

Other hidden entries, editor temporaries, and changes that only touch a
directory's own metadata do not count. Opening and reading files do not count
either, so the callback can read the directory without waking itself up.

Debouncing: the first event that counts opens a burst. The callback runs when
``debounce`` seconds have passed without another such event, or ``max_delay``
seconds after the burst opened, whichever comes first. It runs once per
burst, always on the watcher's own worker thread, so never concurrently with
itself. Events that arrive while the callback runs open the next burst, which
is timed from the moment the callback returns. Any exception raised by the
callback (a ``BaseException`` too, except ``SystemExit`` and
``KeyboardInterrupt``) is logged as ``config_reload_failed`` with its error and
the watcher carries on; so it does when logging that fails in turn (a full
disk), and when its own loop fails (``config_watch_failed``, then it resumes).

Settling: waiting out the whole debounce only matters while a file may still
be half written. inotify says when a writer is done with a file (it is closed
after writing, renamed into place, or deleted), so when every file the burst
saw created or modified has been finished that way, and the burst touched no
directory, the quiet time needed is only ``settle`` (at most ``debounce``):
long enough that a tool writing several files one after another still lands
in one burst, short enough that one saved file reaches the proxies without
waiting out the debounce. A file still open for writing, a directory event,
or the poller (which only sees modifications) keep the full debounce.

The root itself: every ``poll_interval`` seconds, and at once when the
observer reports the root deleted, the worker checks that the root path still
leads to the directory being watched and that the observer is alive. When the
root has been deleted, moved away or replaced (including a symlink root that
now points elsewhere), the watcher drops its observer and calls the callback
once, since a scan now gives something else, usually ``{}``. While the root is
missing it keeps looking for it every ``poll_interval`` seconds. When a
directory is there again it watches that one and calls the callback once more.
A symlink root is resolved when it is watched, because inotify would
otherwise watch the link rather than the directory.

Limits. The inotify observer does not follow symlinks: for a symlink to a
directory outside the tree, or a config file that is a symlink to a file
outside it, only changes to the link itself are seen, not edits behind it.
The poller stats through links, so it sees those too. It skips hidden entries
altogether and lists each directory once, so a symlink loop cannot trap it.
If the kernel's inotify queue overflows, the lost events are gone; the next
change that counts makes up for them.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
from types import TracebackType
from typing import Any, Self

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserverVFS

from controlplane.config.files import is_config_path, is_editor_temp, is_hidden
from controlplane.errors import PilotfishError

logger = structlog.get_logger(__name__)

CONFIGMAP_DATA_LINK = "..data"

# Leaving out opened and closed-without-write events keeps the inotify mask free
# of IN_OPEN and IN_CLOSE_NOWRITE: the reload reads every file it is told about.
_EVENT_FILTER = [
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileClosedEvent,
    FileAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]
_DIRECTORY_CHANGES = frozenset({"created", "deleted", "moved"})


class DirectoryWatcher:
    """Calls ``on_change()`` after files under ``root`` change; see the module docstring."""

    def __init__(
        self,
        root: Path,
        on_change: Callable[[], None],
        *,
        debounce: float = 0.1,
        settle: float = 0.02,
        max_delay: float = 1.0,
        polling: bool = False,
        poll_interval: float = 0.5,
    ) -> None:
        if debounce < 0 or settle < 0 or max_delay < 0:
            raise ValueError("debounce, settle and max_delay must not be negative")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.root = root
        self.polling = polling
        self.poll_interval = poll_interval
        self._on_change = on_change
        self._debounce = debounce
        self._settle = settle
        self._max_delay = max_delay
        self._lifecycle = threading.Lock()
        # Held around every call of on_change, so that a watcher restarted from
        # inside its callback cannot call it again before that call returns.
        self._callback_lock = threading.Lock()
        self._session: _Session | None = None

    @property
    def debounce(self) -> float:
        """Seconds of quiet after the last event before the callback runs."""
        return self._debounce

    @debounce.setter
    def debounce(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("debounce must not be negative")
        self._debounce = seconds
        self._wake()

    @property
    def busy(self) -> bool:
        """Changes were seen and the callback has not yet run for them, or it is running."""
        session = self._session
        return session is not None and session.busy

    @property
    def settle(self) -> float:
        """Seconds of quiet that do when every file written in the burst is finished."""
        return self._settle

    @settle.setter
    def settle(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("settle must not be negative")
        self._settle = seconds
        self._wake()

    @property
    def max_delay(self) -> float:
        """Longest time, in seconds, from the first event of a burst to the callback."""
        return self._max_delay

    @max_delay.setter
    def max_delay(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("max_delay must not be negative")
        self._max_delay = seconds
        self._wake()

    def start(self) -> None:
        """Start watching. Does nothing if already started.

        Raises :class:`PilotfishError` if ``root`` is not a directory that can be watched.
        """
        with self._lifecycle:
            if self._session is not None:
                return
            session = _Session(self)
            try:
                session.attach()
            except OSError as exc:
                raise PilotfishError(f"cannot watch config directory {self.root}: {exc}") from exc
            try:
                session.start()
            except BaseException:
                session.detach()
                raise
            self._session = session

    def stop(self) -> None:
        """Stop watching and wait for the threads to finish. Safe to call more than once.

        Called from inside the callback, it returns at once; the watcher's threads
        finish when the callback returns.
        """
        with self._lifecycle:
            session, self._session = self._session, None
        if session is not None:
            session.stop()

    def request_reload(self) -> None:
        """Run the callback soon, as if a config file had changed. Does nothing when stopped."""
        session = self._session
        if session is not None:
            session.note_change()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _wake(self) -> None:
        session = self._session
        if session is not None:
            session.wake()

    def _call_on_change(self) -> None:
        with self._callback_lock:
            try:
                self._on_change()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                _log_failure("config_reload_failed", exc, root=str(self.root))


class _Session:
    """One run of a watcher, from start() to stop(): an observer and the worker thread.

    The worker owns the observer once it runs: it replaces it when the root is
    lost and found again, and shuts it down on its way out.
    """

    def __init__(self, watcher: DirectoryWatcher) -> None:
        self._watcher = watcher
        self._root = watcher.root
        self._cond = threading.Condition()
        self._stopping = False
        self._check_requested = False
        self._burst_opened: float | None = None
        self._last_event: float | None = None
        # Of the burst: files created or modified and not yet finished, and
        # whether anything in it (a directory, the root) rules settling out.
        self._writing: set[str] = set()
        self._may_settle = True
        self._calling = False
        self._observer: Any = None
        self._watched: str | None = None
        self._identity: tuple[int, int] | None = None
        self._unwatchable_logged = False
        self._thread = threading.Thread(
            target=self._run, name=f"pilotfish-watch:{self._root}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def busy(self) -> bool:
        return self._burst_opened is not None or self._calling

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def note_change(
        self,
        *,
        writing: str | None = None,
        finished: tuple[str, ...] = (),
        may_settle: bool = False,
    ) -> None:
        now = time.monotonic()
        with self._cond:
            if self._burst_opened is None:
                self._burst_opened = now
            self._last_event = now
            self._writing.difference_update(finished)
            if writing is not None:
                self._writing.add(writing)
            self._may_settle = self._may_settle and may_settle
            self._cond.notify_all()

    def _quiet(self) -> float:
        debounce = self._watcher.debounce
        if self._may_settle and not self._writing:
            return min(debounce, self._watcher.settle)
        return debounce

    def request_root_check(self) -> None:
        with self._cond:
            self._check_requested = True
            self._cond.notify_all()

    def attach(self) -> None:
        watched = os.path.realpath(self._root)
        root_stat = os.stat(watched)
        if not stat.S_ISDIR(root_stat.st_mode):
            raise NotADirectoryError(f"not a directory: {watched}")
        observer = self._new_observer(watched)
        observer.schedule(
            _EventHandler(self, watched), watched, recursive=True, event_filter=_EVENT_FILTER
        )
        observer.start()
        self._observer = observer
        self._watched = watched
        self._identity = (root_stat.st_dev, root_stat.st_ino)

    def _new_observer(self, watched: str) -> Any:
        if self._watcher.polling:
            return PollingObserverVFS(
                os.stat, _visible_lister(watched), polling_interval=self._watcher.poll_interval
            )
        return Observer()

    def detach(self) -> None:
        observer, self._observer = self._observer, None
        self._watched = self._identity = None
        if observer is not None and observer.is_alive():
            observer.stop()
            observer.join()

    def _run(self) -> None:
        try:
            while True:
                try:
                    self._loop()
                    return
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:
                    # A bug or a failing log call: the watcher must outlive it.
                    _log_failure("config_watch_failed", exc, root=str(self._root))
                    with self._cond:
                        self._calling = False
                        self._cond.wait(self._watcher.poll_interval)
        finally:
            self.detach()

    def _loop(self) -> None:
        interval = self._watcher.poll_interval
        next_check = time.monotonic() + interval
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = time.monotonic()
                check = self._check_requested or now >= next_check
                if check:
                    self._check_requested = False
                elif self._burst_opened is None or self._last_event is None:
                    self._cond.wait(next_check - now)
                    continue
                else:
                    due = min(
                        self._last_event + self._quiet(),
                        self._burst_opened + self._watcher.max_delay,
                    )
                    if now < due:
                        self._cond.wait(min(due, next_check) - now)
                        continue
                    self._calling = True
                    self._burst_opened = self._last_event = None
                    self._writing.clear()
                    self._may_settle = True
            if check:
                self._check_root()
                next_check = time.monotonic() + interval
                continue
            try:
                self._watcher._call_on_change()
            finally:
                self._calling = False
            returned = time.monotonic()
            with self._cond:
                if self._burst_opened is not None and self._last_event is not None:
                    self._burst_opened = max(self._burst_opened, returned)
                    self._last_event = max(self._last_event, returned)

    def _check_root(self) -> None:
        if self._observer is not None:
            if self._still_watching():
                return
            self.detach()
            logger.warning("config_dir_lost", root=str(self._root))
            self.note_change()
        try:
            self.attach()
        except FileNotFoundError:
            return
        except OSError as exc:
            # Out of inotify instances or watches, say: worth telling, but only once.
            if not self._unwatchable_logged:
                logger.warning("config_dir_unwatchable", root=str(self._root), error=str(exc))
                self._unwatchable_logged = True
            return
        self._unwatchable_logged = False
        logger.info("config_dir_watch_resumed", root=str(self._root))
        self.note_change()

    def _still_watching(self) -> bool:
        try:
            watched = os.path.realpath(self._root)
            root_stat = os.stat(watched)
        except OSError:
            return False
        emitters = list(self._observer.emitters)
        return (
            watched == self._watched
            and (root_stat.st_dev, root_stat.st_ino) == self._identity
            and self._observer.is_alive()
            and bool(emitters)
            and all(emitter.is_alive() for emitter in emitters)
        )


class _EventHandler(FileSystemEventHandler):  # type: ignore[misc]
    def __init__(self, session: _Session, watched: str) -> None:
        super().__init__()
        self._session = session
        self._watched = watched
        self._prefix = watched.rstrip(os.sep) + os.sep

    def on_any_event(self, event: Any) -> None:
        src = os.fsdecode(event.src_path)
        if event.event_type == "deleted" and src == self._watched:
            self._session.request_root_check()
            return
        kind = event.event_type
        removed = kind in ("deleted", "moved")
        dest = os.fsdecode(event.dest_path) if kind == "moved" else None
        if not (
            self._counts(event, src, removed=removed)
            or (dest is not None and self._counts(event, dest, removed=False))
        ):
            return
        if event.is_directory:
            self._session.note_change()
        elif kind in ("created", "modified"):
            self._session.note_change(writing=src, may_settle=True)
        elif dest is not None:
            self._session.note_change(finished=(src, dest), may_settle=True)
        elif kind in ("closed", "deleted"):
            self._session.note_change(finished=(src,), may_settle=True)
        else:
            self._session.note_change(may_settle=True)

    def _counts(self, event: Any, path: str, *, removed: bool) -> bool:
        if not path.startswith(self._prefix):
            return False
        rel = PurePath(path[len(self._prefix) :])
        if rel.name == CONFIGMAP_DATA_LINK and not is_hidden(rel.parent):
            return True
        if is_hidden(rel):
            return False
        if event.is_directory:
            return event.event_type in _DIRECTORY_CHANGES
        if is_config_path(rel):
            return True
        if is_editor_temp(rel.name):
            return False
        return removed or os.path.isdir(path)


def _log_failure(event: str, exc: BaseException, **fields: str) -> None:
    """Log ``exc``; a failure to log (a full disk, say) is swallowed, never raised."""
    try:
        logger.exception(event, error=f"{type(exc).__name__}: {exc}", **fields)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        pass


def _visible_lister(watched: str) -> Callable[[str], Iterator[os.DirEntry[str]]]:
    """``listdir`` for the poller: skips hidden entries and lists each directory once.

    The poller stats with ``os.stat`` and so descends through symlinks; without
    the visited set it would go round a symlink loop until the kernel refused to
    resolve the path.
    """
    visited: set[tuple[int, int]] = set()

    def listdir(path: str) -> Iterator[os.DirEntry[str]]:
        if path == watched:
            # Every snapshot starts by listing the root.
            visited.clear()
        directory = os.stat(path)
        key = (directory.st_dev, directory.st_ino)
        if key in visited:
            return iter(())
        visited.add(key)
        with os.scandir(path) as listing:
            return iter([entry for entry in listing if not entry.name.startswith(".")])

    return listdir
