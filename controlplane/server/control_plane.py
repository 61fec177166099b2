"""The running control plane: a watched config directory served over xDS.

:class:`ControlPlane` wires the layers together and owns their lifetimes:

* a :class:`~controlplane.config.store.ConfigStore` holds the last good model
  of the directory, and a :class:`~controlplane.config.watcher.DirectoryWatcher`
  calls :meth:`ConfigStore.reload` once per burst of file events (and once
  more when a withdrawal the store held back is due);
* the store accepts a model only if it translates, for every proxy class seen
  so far (and a plain sidecar while none has connected, and a plain gateway
  while nothing else has), into consistent snapshots whose resources of each
  type fit in one message (:meth:`ControlPlane._verify`); the snapshots made
  for that check are the ones published;
* a :class:`~controlplane.xds.cache.SnapshotCache` translates the model once
  per proxy class (``ProxyClass.key``) and publishes new snapshots to streams;
* the grpc.aio xDS server streams them.

As one of several workers (``worker``, see :mod:`~controlplane.server.workers`)
it joins the ports its supervisor holds, listens on private sockets for its
peers, answers admin calls for every worker
(:mod:`~controlplane.server.peers`), and writes the state directory only if
it is worker 0.

Proxy classes are bookkept here and in the cache: :meth:`ControlPlane._classify`
remembers each class the cache asks about, and the cache's ``forget`` callback
(:meth:`ControlPlane._forget`) drops a class's entry and the translator's
memory of it (its encoded routes and listeners) when the cache drops or
refuses the class (no stream for ``proxy_class_grace`` seconds, or more than
``max_proxy_classes``).

Reloads and translation run on the watcher's thread; the cache hands each
publication to the event loop, where streams pick up the latest snapshot.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import structlog
from envoy.config.core.v3 import base_pb2

from controlplane import collector
from controlplane.config.limits import DEFAULT_LIMITS, ConfigLimits
from controlplane.config.parallel_read import ReadHelper, helper_pays
from controlplane.config.state import StateDir
from controlplane.config.store import ConfigStore, ReloadResult
from controlplane.config.watcher import DirectoryWatcher
from controlplane.model import Mesh
from controlplane.server import memory
from controlplane.server.admin import AdminServices, ConfigView
from controlplane.server.ads import AggregatedDiscoveryService
from controlplane.server.grpc_server import XdsServer, XdsServerOptions, start_xds_server
from controlplane.server.peers import AggregatingAdmin, Peers, WorkerSlot
from controlplane.server.stats import RELOAD_BUCKETS, Histogram
from controlplane.translate import ProxyClass, ProxyRole
from controlplane.translate.resources import forget_lookups
from controlplane.translate.translator import FORK_MIN_SERVICES, Translator
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.load_reports import LoadReports
from controlplane.xds.snapshot import Resource, Snapshot

if TYPE_CHECKING:
    from controlplane.server.http_admin import HttpAdmin

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
    proxy_class_grace: float = 60.0
    """Seconds a proxy class with no connected stream is kept before it is dropped."""
    max_proxy_classes: int = 1000
    """Proxy classes kept at once; a stream needing one more is refused."""
    state_dir: Path | None = None
    """Where the accepted version of each file is recorded across restarts (None: nowhere)."""
    withdraw_grace: float = 30.0
    max_withdraw_share: float = 0.5
    limits: ConfigLimits = DEFAULT_LIMITS
    admin_address: str | None = None
    """HOST:PORT of the HTTP admin endpoint (/metrics, /readyz...); None: not served."""
    worker: WorkerSlot | None = None
    """This process's place among ``pilotfish serve --workers`` (None: serving alone)."""
    read_helper: ReadHelper | None = field(default=None, compare=False, repr=False)
    """A read helper already reading the directory, for the first reload to take over."""


# Verified while no proxy of their kind has connected, so that the first to connect
# gets a snapshot. A sidecar sees every service and route, so once one is verified,
# a gateway without labels (it selects only Gateways without a selector) adds
# little but the cost of another class on every change.
_DEFAULT_SIDECAR = ProxyClass()
_DEFAULT_GATEWAY = ProxyClass(role=ProxyRole.GATEWAY)


class ControlPlane:
    def __init__(self, options: ControlPlaneOptions) -> None:
        self.options = options
        self.store = ConfigStore(
            options.config_dir,
            options.limits,
            state=(
                StateDir(
                    options.state_dir,
                    options.config_dir,
                    read_only=options.worker is not None and options.worker.index != 0,
                )
                if options.state_dir
                else None
            ),
            verify=self._verify,
            withdraw_grace=options.withdraw_grace,
            max_withdraw_share=options.max_withdraw_share,
            # Workers already share the cores; alone, a cold start reads on two if it may.
            read_helper=options.read_helper or (options.worker is None and helper_pays()),
        )
        self._classes: dict[str, ProxyClass] = {}
        self._classes_lock = threading.Lock()
        # Keeps each message only as its serialized resource, shared by every class
        # that sends it: serialized once, and once more only when its input changes.
        # The cold start translates on two cores under the read helper's rule.
        self._translator = Translator(
            encode=Resource.from_message,
            fork_from=FORK_MIN_SERVICES if options.worker is None and helper_pays() else None,
        )
        self.cache = SnapshotCache(
            self._classify,
            self._builder(Mesh()),
            max_classes=options.max_proxy_classes,
            grace=options.proxy_class_grace,
            forget=self._forget,
        )
        # The translator is used by the cache's builds and by the store's verification,
        # on different threads.
        self._translate_lock = threading.Lock()
        self._verified: tuple[Mesh, dict[str, Snapshot]] | None = None
        self._sizes: dict[tuple[str, str], int] = {}
        self._recheck: threading.Timer | None = None
        self._recheck_lock = threading.Lock()
        self._watcher: DirectoryWatcher | None = None
        self._packing: asyncio.Future[int] | None = None
        self._server: XdsServer | None = None
        self.reloads = 0
        self.admin: AdminServices | None = None
        self._config_view = ConfigView()
        self.reload_seconds = Histogram(RELOAD_BUCKETS)
        self.http_admin: HttpAdmin | None = None
        self.peers = Peers(options.worker) if options.worker is not None else None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.port

    @property
    def address(self) -> str:
        assert self._server is not None, "start() first"
        return self._server.address

    @property
    def admin_port(self) -> int:
        """The HTTP admin port (0 when not served)."""
        return self.http_admin.port if self.http_admin is not None else 0

    # -- what the HTTP admin endpoint reads (controlplane.server.http_admin.Source) --

    @property
    def ads(self) -> AggregatedDiscoveryService | None:
        return self._server.ads if self._server is not None else None

    @property
    def mesh(self) -> Mesh:
        return self.store.mesh

    @property
    def config_view(self) -> ConfigView:
        return self._config_view

    @property
    def traffic(self) -> LoadReports | None:
        return self._server.load_reports if self._server is not None else None

    @property
    def load_reports(self) -> LoadReports:
        """Live traffic per cluster, as the proxies report it."""
        assert self._server is not None, "start() first"
        return self._server.load_reports

    def _classify(self, node: base_pb2.Node) -> str:
        proxy = ProxyClass.from_node(node)
        # Every stream keeps its class's key: interned, they all hold one string.
        key = sys.intern(proxy.key)
        with self._classes_lock:
            self._classes.setdefault(key, proxy)
        return key

    def _forget(self, key: str) -> None:
        # Called by the cache under its lock, like the builder. The two locks are taken
        # one after the other, never nested: verification nests them the other way.
        with self._classes_lock:
            self._classes.pop(key, None)
        with self._translate_lock:
            self._translator.forget(key)

    def _builder(self, mesh: Mesh) -> Callable[[str], Snapshot]:
        def build(key: str) -> Snapshot:
            with self._classes_lock:
                proxy = self._classes[key]
            with self._translate_lock:
                verified = self._verified
                if verified is not None and verified[0] is mesh and key in verified[1]:
                    return verified[1][key]
                return self._translate(mesh, proxy)

        return build

    def _translate(
        self, mesh: Mesh, proxy: ProxyClass, share: tuple[Snapshot, ...] = ()
    ) -> Snapshot:
        return Snapshot(self._translator.translate(mesh, proxy), share)

    def _verify(self, mesh: Mesh) -> str | None:
        """Why ``mesh`` cannot be served, or None; the store calls this before accepting it.

        A class that fails on the served model as well (a proxy that connected with
        metadata the translator cannot handle) is no reason to hold a change back:
        otherwise one such proxy would freeze every edit.
        """
        with self._classes_lock:
            classes = dict(self._classes)
        if not classes:
            classes[_DEFAULT_GATEWAY.key] = _DEFAULT_GATEWAY
        if not any(proxy.role is ProxyRole.SIDECAR for proxy in classes.values()):
            classes[_DEFAULT_SIDECAR.key] = _DEFAULT_SIDECAR
        built: dict[str, Snapshot] = {}
        sizes: dict[tuple[str, str], int] = {}
        with self._translate_lock:
            served, before = self._verified if self._verified is not None else (None, {})
            last: tuple[Snapshot, ...] = ()
            for key in sorted(classes):
                # The class's snapshot of the served model (an edit of routes leaves its
                # clusters as they were) and the class checked last (classes of one view
                # send the same clusters) lend the types that did not change.
                previous = before.get(key)
                share = last if previous is None else (previous, *last)
                snapshot, problem = self._check(mesh, key, classes[key], sizes, share)
                if problem is not None:
                    if served is not None and self._check(served, key, classes[key], {})[1]:
                        log.warning("proxy_class_untranslatable", key=key, problem=problem)
                        continue
                    return problem
                assert snapshot is not None
                built[key] = snapshot
                last = (snapshot,)
            self._verified = (mesh, built)
            self._sizes = sizes
            with self._classes_lock:
                for default in (_DEFAULT_SIDECAR, _DEFAULT_GATEWAY):
                    if default.key not in classes and default.key not in self._classes:
                        # No longer checked: its routes and listeners would only go stale.
                        self._translator.forget(default.key)
        return None

    def _check(
        self,
        mesh: Mesh,
        key: str,
        proxy: ProxyClass,
        sizes: dict[tuple[str, str], int],
        share: tuple[Snapshot, ...] = (),
    ) -> tuple[Snapshot | None, str | None]:
        """The snapshot of ``key`` for ``mesh``, or what keeps it from being served."""
        try:
            snapshot = self._translate(mesh, proxy, share)
            snapshot.check_consistency()
        except Exception as exc:
            return None, f"{type(exc).__name__} for proxy class {key}: {exc}"
        limit = self.options.server.max_message_bytes
        for url in snapshot.type_urls:
            version = snapshot.version(url)
            # Classes that share a type's resources share its version: sized once.
            size = sizes.get((url, version))
            if size is None:
                size = self._sizes.get((url, version))
            if size is None:
                # About the encoded size of a response carrying every resource.
                size = sum(len(r.value) + len(url) + 12 for r in snapshot.resources(url).values())
            sizes[(url, version)] = size
            if size > limit:
                kind = url.rsplit(".", 1)[-1]
                return None, (
                    f"the {kind} resources for proxy class {key} come to {size} bytes, "
                    f"more than the {limit}-byte message limit (--max-message-bytes)"
                )
        return snapshot, None

    def reload(self) -> ReloadResult:
        """Re-read the directory and publish the new model if it changed."""
        started = time.monotonic()
        with collector.paused():
            result = self.store.reload()
            self.reloads += 1
            if result.changed:
                self.cache.update(self._builder(result.mesh), result.version)
        self.reload_seconds.observe(time.monotonic() - started)
        self._reloaded(result)
        if result.changed and self._server is not None:
            # The new model is long-lived: have it frozen once things are quiet.
            self._server.ads.housekeeper.soon_threadsafe()
        self._schedule_recheck(result.recheck_at)
        return result

    def _reloaded(self, result: ReloadResult) -> None:
        view = self._config_view = ConfigView(
            loaded=True,
            files=self.store.files_in_effect,
            diagnostics=result.diagnostics,
            rejected=result.rejected,
            reloaded_at=time.time(),
            reloads=self._config_view.reloads + 1,
            version=result.version,
        )
        if self._server is not None:
            self._server.ads.events.publish_threadsafe(
                "reload",
                version=view.version,
                message=f"{len(result.errors)} error(s), {len(result.rejected)} file(s) held back",
            )

    def _not_loaded(self, result: ReloadResult) -> dict[str, list[str]]:
        """Files held back with no last good version to serve: ``{file: [resources]}``."""
        served = self.store.files_in_effect
        return {
            path: sorted({d.resource for d in result.errors if d.file == path and d.resource})
            for path in result.rejected
            if path not in served
        }

    def _add_admin(self, server: grpc.aio.Server, ads: AggregatedDiscoveryService) -> None:
        if self.peers is not None:
            self.admin = AggregatingAdmin(ads, lambda: self._config_view, peers=self.peers)
        else:
            self.admin = AdminServices(ads, lambda: self._config_view)
        self.admin.register(server)

    def _schedule_recheck(self, at: float | None) -> None:
        """Have the watcher reload at ``at`` (monotonic), when a held withdrawal is due."""
        with self._recheck_lock:
            if self._recheck is not None:
                self._recheck.cancel()
                self._recheck = None
            watcher = self._watcher
            if at is None or watcher is None:
                return
            timer = threading.Timer(max(0.0, at - time.monotonic()), watcher.request_reload)
            timer.daemon = True
            timer.start()
            self._recheck = timer

    def _first_reload(self) -> ReloadResult:
        # The model is millions of long-lived immutable objects: keep the cyclic
        # collector from rescanning them (see controlplane.server.memory). Frozen
        # before the collector is back on: its first full collection would scan
        # them all once more (seconds at 10,000 services).
        with collector.paused():
            result = self.store.reload()
            gc.freeze()
        # Later reloads run beside gRPC, whose fork handlers would run in a forked child.
        self._translator.fork_from = None
        return result

    def _on_change(self) -> None:
        self.reload()

    async def start(self) -> None:
        memory.tune()
        loop = asyncio.get_running_loop()
        if self.options.admin_address is not None:
            # Imported here: a server without the admin never loads h11 nor prometheus-client.
            from controlplane.server.http_admin import HttpAdmin

            # Before the first load, so that /healthz answers and /readyz says 503 meanwhile.
            http_admin = HttpAdmin(self)
            worker = self.options.worker
            if worker is None or self.peers is None:
                await http_admin.start(self.options.admin_address)
            else:
                http_admin.merge_metrics = self.peers.merged_metrics
                http_admin.parts.peers = self.peers.dashboard_parts
                await http_admin.start(
                    self.options.admin_address,
                    reuse_port=True,
                    unix_path=str(worker.http_path(worker.index)),
                )
            self.http_admin = http_admin
            log.info("http_admin_started", address=http_admin.address)
        try:
            await self._start(loop)
        except BaseException:
            await self._stop_http_admin()
            raise

    async def _stop_http_admin(self) -> None:
        if self.http_admin is not None:
            http_admin, self.http_admin = self.http_admin, None
            await http_admin.stop()

    async def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        started = time.monotonic()
        result = await loop.run_in_executor(None, self._first_reload)
        self.cache.update(self._builder(result.mesh), result.version)
        self.reload_seconds.observe(time.monotonic() - started)
        self._reloaded(result)
        log.info(
            "config_loaded",
            config_version=result.version,
            directory=str(self.options.config_dir),
            services=len(result.mesh.services),
            errors=len(result.errors),
            not_loaded=self._not_loaded(result),
        )
        self._server = await start_xds_server(
            self.cache,
            self.options.xds_address,
            options=self.options.server,
            services=[self._add_admin],
            private_address=(
                f"unix:{self.options.worker.grpc_path(self.options.worker.index)}"
                if self.options.worker is not None
                else None
            ),
        )
        assert self.admin is not None
        await self.admin.loaded()
        self._watcher = DirectoryWatcher(
            self.options.config_dir,
            self._on_change,
            debounce=self.options.debounce,
            settle=self.options.settle,
            max_delay=self.options.max_delay,
            polling=self.options.polling,
        )
        self._watcher.start()
        self._schedule_recheck(result.recheck_at)
        # A collection would hold the GIL the reload needs: not while one is due.
        watcher = self._watcher
        self._server.ads.housekeeper.hold_while(lambda: watcher.busy)
        # Read again only for diagnostics and the state directory: compressed once quiet.
        self._server.ads.housekeeper.also_release(self._pack_texts)
        self._server.ads.housekeeper.also_release(forget_lookups)

    def _pack_texts(self) -> None:
        """Compress the held file texts on a thread: at 10,000 files that takes 0.25 s,
        which the event loop would otherwise stand still for (zlib lets go of the GIL)."""
        if self._packing is None or self._packing.done():
            self._packing = asyncio.get_running_loop().run_in_executor(None, self.store.pack_texts)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop watching, stop accepting streams, let in-flight sends finish within ``grace``."""
        loop = asyncio.get_running_loop()
        if self._watcher is not None:
            watcher, self._watcher = self._watcher, None
            await loop.run_in_executor(None, watcher.stop)
        self._schedule_recheck(None)
        if self.admin is not None:
            await self.admin.health.enter_graceful_shutdown()
        await loop.run_in_executor(None, self.store.close)
        if self._server is not None:
            server, self._server = self._server, None
            await server.stop(grace)
        await self._stop_http_admin()
        if self.peers is not None:
            await self.peers.close()
