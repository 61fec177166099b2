"""Snapshots per proxy class, rebuilt when the model changes.

Proxies that would receive identical configuration share a *class key*
(computed by ``classify`` from the xDS ``Node``). The cache builds one
:class:`Snapshot` per key the first time a proxy of that class connects, and
every stream of the class shares that object, so each resource is serialized
once per version however many streams carry it.

:meth:`SnapshotCache.update` installs a new builder (a new model), rebuilds the
snapshot of every key seen so far, and publishes each rebuilt snapshot that is
consistent and differs from the current one. A snapshot that fails
:meth:`Snapshot.check_consistency`, or whose build raises, is a translation
bug: it is logged and not published, and proxies keep the previous one.

Classes come and go with their proxies. A driver that serves streams takes a
class with :meth:`SnapshotCache.acquire` and gives it back with
:meth:`SnapshotCache.release` when the stream ends. A class that no stream
holds is *idle*; after ``grace`` seconds idle it is dropped (its snapshot, and
whatever ``forget(key)`` lets the builder's owner drop), so made-up node
metadata cannot leave classes behind to be rebuilt on every edit forever. A
proxy that reconnects within the grace finds its class as it left it. Idle
classes are dropped when :meth:`~SnapshotCache.prune` is called (the server
schedules that), at the start of every :meth:`~SnapshotCache.update`, and when
room is needed. At most ``max_classes`` classes exist at once: a new class
beyond that takes the place of the longest idle one, and when every class is
held, :meth:`~SnapshotCache.acquire` refuses it with
:class:`ProxyClassLimitError` rather than slow every edit down for everyone.
:meth:`~SnapshotCache.snapshot_for` builds without holding: a class it creates
is idle from the start.

Threading: the cache is thread-safe. One re-entrant lock serializes builds,
swaps and notifications, so listeners observe publications in order. Listeners
run on the thread that called :meth:`update`, under that lock, and must return
quickly without blocking (hand the work to an event loop, for instance).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog
from envoy.config.core.v3 import base_pb2

from controlplane.errors import InconsistentSnapshotError, PilotfishError
from controlplane.xds.snapshot import Snapshot

Listener = Callable[[str, Snapshot], None]

log = structlog.get_logger(__name__)

PRUNE_RETRY = 0.1
"""Seconds after which :meth:`SnapshotCache.prune` is worth trying again when the cache was busy."""


class ProxyClassLimitError(PilotfishError):
    """A new proxy class was refused: ``max_classes`` classes exist and streams hold them all."""

    def __init__(self, key: str, limit: int) -> None:
        super().__init__(f"{limit} proxy classes are in use; class {key[:200]!r} refused")
        self.key = key
        self.limit = limit


class SnapshotCache:
    def __init__(
        self,
        classify: Callable[[base_pb2.Node], str],
        build: Callable[[str], Snapshot],
        *,
        max_classes: int | None = None,
        grace: float = 60.0,
        forget: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_classes is not None and max_classes < 1:
            raise ValueError("max_classes must be at least 1")
        if grace < 0:
            raise ValueError("grace must not be negative")
        self._classify = classify
        self._build = build
        self._max_classes = max_classes
        self._grace = grace
        self._forget = forget
        self._clock = clock
        self._snapshots: dict[str, Snapshot] = {}
        self.config_version = ""
        """The config version (of the store) the current builder serves; for the logs."""
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()
        # Holds and idle times have a lock of their own, never held for long: a
        # stream that ends must not wait for an update to finish building.
        self._holds_lock = threading.Lock()
        self._holds: dict[str, int] = {}
        # Key -> when it became idle; insertion order is that order (the clock is monotonic).
        self._idle: dict[str, float] = {}

    @property
    def grace(self) -> float:
        """Seconds a class with no stream is kept for a proxy that reconnects."""
        return self._grace

    @property
    def max_classes(self) -> int | None:
        return self._max_classes

    def key_for(self, node: base_pb2.Node) -> str:
        return self._classify(node)

    def snapshot_for(self, node: base_pb2.Node) -> tuple[str, Snapshot]:
        """The class key of ``node`` and its snapshot, built on first use.

        Raises :class:`InconsistentSnapshotError` when a first build fails; nothing
        is cached then, so the next caller tries again. Raises
        :class:`ProxyClassLimitError` when the class is new and there is no room.
        """
        return self._snapshot(node, hold=False)

    def acquire(self, node: base_pb2.Node) -> tuple[str, Snapshot]:
        """:meth:`snapshot_for`, holding the class until :meth:`release` (once per call)."""
        return self._snapshot(node, hold=True)

    def release(self, key: str) -> bool:
        """Give back one hold of ``key``; returns whether the class is idle now.

        Never waits for an update: a class that is held cannot be dropped, so
        this touches only the holds.
        """
        with self._holds_lock:
            holds = self._holds.get(key)
            if holds is None:
                return False
            if holds > 1:
                self._holds[key] = holds - 1
                return False
            del self._holds[key]
            self._idle[key] = self._clock()
            return True

    def prune(self, *, blocking: bool = True) -> float | None:
        """Drop the classes idle for longer than the grace.

        Returns the seconds until the next idle class is due (``None`` when no
        class is idle). With ``blocking=False`` it returns :data:`PRUNE_RETRY` at
        once if another thread holds the cache (an update under way).
        """
        if not self._lock.acquire(blocking=blocking):
            return PRUNE_RETRY
        try:
            return self._prune()
        finally:
            self._lock.release()

    def _prune(self) -> float | None:
        # Under self._lock: no acquire can come between taking a key off the idle
        # list and dropping its snapshot.
        expired = []
        remaining: float | None = None
        with self._holds_lock:
            now = self._clock()
            for key, since in self._idle.items():
                if since + self._grace > now:
                    remaining = since + self._grace - now
                    break
                expired.append(key)
            for key in expired:
                del self._idle[key]
        for key in expired:
            self._drop(key)
        if expired:
            log.info("proxy_classes_dropped", count=len(expired), classes=len(self._snapshots))
        return remaining

    def _drop(self, key: str) -> None:
        del self._snapshots[key]
        if self._forget is not None:
            self._forget(key)

    def _make_room(self, key: str) -> None:
        limit = self._max_classes
        if limit is None or len(self._snapshots) < limit:
            return
        self._prune()
        if len(self._snapshots) < limit:
            return
        with self._holds_lock:
            # Every class is within its grace: the longest idle one makes way.
            oldest = next(iter(self._idle), None)
            if oldest is not None:
                del self._idle[oldest]
        if oldest is not None:
            self._drop(oldest)
            log.info("proxy_classes_dropped", count=1, classes=len(self._snapshots))
            return
        if self._forget is not None:
            self._forget(key)
        raise ProxyClassLimitError(key, limit)

    def _snapshot(self, node: base_pb2.Node, *, hold: bool) -> tuple[str, Snapshot]:
        with self._lock:
            # Under the lock, so that no prune can come between classifying and building.
            key = self._classify(node)
            snapshot = self._snapshots.get(key)
            if snapshot is None:
                self._make_room(key)
                try:
                    snapshot = self._checked_build(self._build, key)
                except InconsistentSnapshotError:
                    if self._forget is not None:
                        self._forget(key)
                    raise
                self._snapshots[key] = snapshot
                if not hold:
                    with self._holds_lock:
                        self._idle[key] = self._clock()
                log.info("snapshot_published", key=key, versions=_short(snapshot))
            if hold:
                with self._holds_lock:
                    self._holds[key] = self._holds.get(key, 0) + 1
                    self._idle.pop(key, None)
            return key, snapshot

    def get(self, key: str) -> Snapshot | None:
        """The published snapshot of ``key``, if any proxy of that class has connected."""
        with self._lock:
            return self._snapshots.get(key)

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._snapshots)

    def update(
        self, build: Callable[[str], Snapshot], config_version: str | None = None
    ) -> dict[str, Snapshot]:
        """Swap in ``build``, drop expired idle classes, rebuild the others, publish what changed.

        Returns the snapshots that were published, by key.
        """
        published: dict[str, Snapshot] = {}
        with self._lock:
            self._build = build
            if config_version is not None:
                self.config_version = config_version
            self._prune()
            for key, current in list(self._snapshots.items()):
                try:
                    snapshot = self._checked_build(build, key)
                except InconsistentSnapshotError:
                    continue
                if snapshot == current:
                    continue
                self._snapshots[key] = snapshot
                published[key] = snapshot
                log.info("snapshot_published", key=key, versions=_short(snapshot))
            for key, snapshot in published.items():
                for listener in list(self._listeners):
                    listener(key, snapshot)
        return published

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(key, snapshot)`` on every publication; returns a remover."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    @staticmethod
    def _checked_build(build: Callable[[str], Snapshot], key: str) -> Snapshot:
        try:
            snapshot = build(key)
            snapshot.check_consistency()
        except Exception as exc:
            log.error("snapshot_rejected", key=key, error=str(exc), bug=True, exc_info=True)
            if isinstance(exc, InconsistentSnapshotError):
                raise
            raise InconsistentSnapshotError(f"building snapshot for {key!r} failed: {exc}") from exc
        return snapshot


def _short(snapshot: Snapshot) -> dict[str, str]:
    return {url.rsplit(".", 1)[-1]: version for url, version in snapshot.versions.items()}
