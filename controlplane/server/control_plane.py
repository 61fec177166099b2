"""The running control plane: a watched config directory served over xDS.

:class:`ControlPlane` wires the layers together and owns their lifetimes:

* a :class:`~controlplane.config.store.ConfigStore` holds the last good model
  of the directory, and a :class:`~controlplane.config.watcher.DirectoryWatcher`
  calls :meth:`ConfigStore.reload` once per burst of file events;
* a :class:`~controlplane.xds.cache.SnapshotCache` translates the model once
  per proxy class (``ProxyClass.key``) and publishes new snapshots to streams;
* the grpc.aio xDS server streams them.

Reloads and translation run on the watcher's thread; the cache hands each
publication to the event loop, where streams pick up the latest snapshot.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from envoy.config.core.v3 import base_pb2

from controlplane import collector
from controlplane.config.limits import DEFAULT_LIMITS, ConfigLimits
from controlplane.config.store import ConfigStore, ReloadResult
from controlplane.config.watcher import DirectoryWatcher
from controlplane.model import Mesh
from controlplane.server import memory
from controlplane.server.grpc_server import XdsServer, XdsServerOptions, start_xds_server
from controlplane.translate import ProxyClass
from controlplane.translate.translator import Translator
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.snapshot import ResourceCache, Snapshot

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ControlPlaneOptions:
    config_dir: Path
    xds_address: str = "127.0.0.1:18000"
    debounce: float = 0.1
    settle: float = 0.02
    max_delay: float = 1.0
    polling: bool = False
    server: XdsServerOptions = field(default_factory=XdsServerOptions)
    limits: ConfigLimits = DEFAULT_LIMITS


class ControlPlane:
    def __init__(self, options: ControlPlaneOptions) -> None:
        self.options = options
        self.store = ConfigStore(options.config_dir, options.limits)
        self._classes: dict[str, ProxyClass] = {}
        self._classes_lock = threading.Lock()
        self._translator = Translator()
        self._resource_caches: dict[str, ResourceCache] = {}
        self.cache = SnapshotCache(self._classify, self._builder(Mesh()))
        self._watcher: DirectoryWatcher | None = None
        self._server: XdsServer | None = None
        self.reloads = 0

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.port

    @property
    def address(self) -> str:
        assert self._server is not None, "start() first"
        return self._server.address

    def _classify(self, node: base_pb2.Node) -> str:
        proxy = ProxyClass.from_node(node)
        with self._classes_lock:
            self._classes.setdefault(proxy.key, proxy)
        return proxy.key

    def _builder(self, mesh: Mesh) -> Callable[[str], Snapshot]:
        # Called under the snapshot cache's lock, one class at a time, so the
        # translator and the per-class resource caches need no lock of their own.
        def build(key: str) -> Snapshot:
            with self._classes_lock:
                proxy = self._classes[key]
            resources = self._resource_caches.setdefault(key, ResourceCache())
            return resources.snapshot(self._translator.translate(mesh, proxy))

        return build

    def reload(self) -> ReloadResult:
        """Re-read the directory and publish the new model if it changed."""
        with collector.paused():
            result = self.store.reload()
            self.reloads += 1
            if result.changed:
                self.cache.update(self._builder(result.mesh))
        if result.changed and self._server is not None:
            # The new model is long-lived: have it frozen once things are quiet.
            self._server.ads.housekeeper.soon_threadsafe()
        return result

    def _on_change(self) -> None:
        self.reload()

    async def start(self) -> None:
        memory.tune()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(None, self.store.reload)
        # The model is millions of long-lived immutable objects: keep the cyclic
        # collector from rescanning them (see controlplane.server.memory).
        gc.freeze()
        self.cache.update(self._builder(result.mesh))
        log.info(
            "config_loaded",
            directory=str(self.options.config_dir),
            services=len(result.mesh.services),
            errors=len(result.errors),
        )
        self._server = await start_xds_server(
            self.cache, self.options.xds_address, options=self.options.server
        )
        self._watcher = DirectoryWatcher(
            self.options.config_dir,
            self._on_change,
            debounce=self.options.debounce,
            settle=self.options.settle,
            max_delay=self.options.max_delay,
            polling=self.options.polling,
        )
        self._watcher.start()
        # A collection would hold the GIL the reload needs: not while one is due.
        watcher = self._watcher
        self._server.ads.housekeeper.hold_while(lambda: watcher.busy)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop watching, stop accepting streams, let in-flight sends finish within ``grace``."""
        if self._watcher is not None:
            watcher, self._watcher = self._watcher, None
            await asyncio.get_running_loop().run_in_executor(None, watcher.stop)
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)
