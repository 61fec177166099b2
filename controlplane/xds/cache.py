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

Threading: the cache is thread-safe. One re-entrant lock serializes builds,
swaps and notifications, so listeners observe publications in order. Listeners
run on the thread that called :meth:`update`, under that lock, and must return
quickly without blocking (hand the work to an event loop, for instance).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog
from envoy.config.core.v3 import base_pb2

from controlplane.errors import InconsistentSnapshotError
from controlplane.xds.snapshot import Snapshot

Listener = Callable[[str, Snapshot], None]

log = structlog.get_logger(__name__)


class SnapshotCache:
    def __init__(
        self,
        classify: Callable[[base_pb2.Node], str],
        build: Callable[[str], Snapshot],
    ) -> None:
        self._classify = classify
        self._build = build
        self._snapshots: dict[str, Snapshot] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()

    def key_for(self, node: base_pb2.Node) -> str:
        return self._classify(node)

    def snapshot_for(self, node: base_pb2.Node) -> tuple[str, Snapshot]:
        """The class key of ``node`` and its snapshot, built on first use.

        Raises :class:`InconsistentSnapshotError` when a first build fails; nothing
        is cached then, so the next caller tries again.
        """
        key = self._classify(node)
        with self._lock:
            snapshot = self._snapshots.get(key)
            if snapshot is None:
                snapshot = self._checked_build(self._build, key)
                self._snapshots[key] = snapshot
                log.info("snapshot_published", key=key, versions=_short(snapshot))
            return key, snapshot

    def get(self, key: str) -> Snapshot | None:
        """The published snapshot of ``key``, if any proxy of that class has connected."""
        with self._lock:
            return self._snapshots.get(key)

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._snapshots)

    def update(self, build: Callable[[str], Snapshot]) -> dict[str, Snapshot]:
        """Swap in ``build``, rebuild every known key, publish what changed.

        Returns the snapshots that were published, by key.
        """
        published: dict[str, Snapshot] = {}
        with self._lock:
            self._build = build
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
