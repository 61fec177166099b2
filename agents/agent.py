"""The agent runtime: subscription -> forwarding table -> listeners -> cache.

:class:`Agent` is the :class:`~agents.xds_client.ConfigSink` of its
:class:`~agents.xds_client.XdsClient`. For every response that changes the
configuration, ``prepare`` builds one immutable forwarding table from every
resource held (``build_table``; :class:`~agents.errors.ConfigRejected` makes
the response a NACK and nothing changes), and ``commit`` hands it to the
listener manager, which swaps it in and opens or closes listeners, then
writes the configuration to the cache directory; the ACK follows.

The agent also reports its traffic per cluster to the control plane's Load
Reporting Service (:mod:`~agents.load_reporter`), at the interval the server
asks for, over a stream of its own.

Start-up, in order: the cached configuration (if any, and written for this
node's class) is put in force, so traffic flows before the control plane is
reached; then the stream opens. Without a cache, :meth:`Agent.start` waits
at most ``connect_timeout`` for a first configuration and fails with one
clear :class:`AgentStartError` otherwise; a listener that cannot bind at
start fails it the same way. Later failures are logged and retried, never
fatal: the last table keeps serving.

The table builder and the listener manager are parameters typed by the
small protocols below; by default they are ``agents.table.build_table`` and
``agents.listeners.ListenerManager``, imported when the agent is made. A
listener manager with a ``stats`` attribute (traffic counts shaped like
:class:`~agents.metrics.TrafficCounts`) has it exported by :attr:`Agent.metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from agents.admin import AdminServer
from agents.backoff import Backoff
from agents.cache import ConfigCache, HeldConfig
from agents.errors import ConfigRejected
from agents.load_reporter import LoadReportBuilder, run_load_reporter
from agents.metrics import AgentMetrics
from agents.node import NodeIdentity
from agents.xds_client import Resources, XdsClient
from controlplane.errors import PilotfishError

log = structlog.get_logger(__name__)


class TableBuilder(Protocol):
    def __call__(
        self,
        resources: Resources,
        previous: Any | None = None,
        *,
        versions: Mapping[str, str] | None = None,
    ) -> Any: ...


class ListenerApplier(Protocol):
    def apply(self, table: Any) -> Awaitable[None] | None: ...


class AgentStartError(PilotfishError):
    """The agent cannot start serving: no configuration in time, or a listener cannot bind."""


@dataclass(frozen=True, slots=True)
class AgentOptions:
    xds_server: str
    node: NodeIdentity
    cache_dir: Path | None = None
    delta: bool = False
    connect_timeout: float = 10.0
    admin_address: str | None = None
    backoff: Callable[[], Backoff] = field(default=Backoff, repr=False)


class Agent:
    def __init__(
        self,
        options: AgentOptions,
        *,
        build_table: TableBuilder | None = None,
        listeners: ListenerApplier | None = None,
    ) -> None:
        self.options = options
        self.metrics = AgentMetrics(table=lambda: self.table, xds=lambda: self.client)
        """This agent's metrics; the data plane reports requests to it."""
        self._build_table: TableBuilder = build_table or _default_build_table()
        self._listeners: ListenerApplier = listeners or _default_listeners()
        traffic = getattr(self._listeners, "stats", None)
        if traffic is not None:  # the data plane's counters, exported as they are
            self.metrics.watch(traffic)
        self._cache = (
            ConfigCache(options.cache_dir, options.node.fingerprint())
            if options.cache_dir is not None
            else None
        )
        self.table: Any | None = None
        self.client = XdsClient(
            options.xds_server,
            options.node.to_node(),
            self,
            delta=options.delta,
            backoff=options.backoff(),
        )
        self._task: asyncio.Task[None] | None = None
        self.load_reports = LoadReportBuilder(
            options.node.to_node(),
            self.metrics.cluster_outcomes,
            self.metrics.cluster_in_progress,
        )
        self._reporting: asyncio.Task[None] | None = None
        self._start_error: AgentStartError | None = None
        self._failed = asyncio.Event()
        self.admin = (
            AdminServer(
                options.admin_address,
                self.client.ready.is_set,
                lambda: self.held,
                table=lambda: self.table,
                metrics=self.metrics,
            )
            if options.admin_address is not None
            else None
        )

    @property
    def held(self) -> HeldConfig:
        return self.client.held

    def prepare(self, resources: Resources, versions: Mapping[str, str]) -> Any:
        started = time.perf_counter()
        try:
            return self._build_table(resources, self.table, versions=versions)
        except ConfigRejected as exc:
            log.warning("agent_config_rejected", error_detail=str(exc))
            raise
        except Exception as exc:
            log.exception("agent_table_build_failed")
            raise ConfigRejected("agent", "table", f"{type(exc).__name__}: {exc}") from exc
        finally:
            self.metrics.table_built(time.perf_counter() - started)

    async def commit(self, prepared: Any | None, held: HeldConfig) -> None:
        if prepared is not None:
            try:
                result = self._listeners.apply(prepared)
                if inspect.isawaitable(result):
                    await result
            except (OSError, ConfigRejected) as exc:
                if not self.client.ready.is_set() and self._start_error is None:
                    self._start_error = AgentStartError(
                        str(exc)
                        if isinstance(exc, ConfigRejected)
                        else f"cannot open a listener: {exc}"
                    )
                    self._failed.set()
                raise
            self.table = prepared
            self.metrics.table_applied(prepared)
            log.info("agent_config_applied", version=getattr(prepared, "version", ""))
        if self._cache is not None:
            await asyncio.to_thread(self._cache.save, held)

    async def start(self) -> None:
        """Serve the cached configuration, connect, and wait for a configuration to be in force.

        On failure (:class:`AgentStartError`) everything started is stopped again.
        """
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise

    async def _start(self) -> None:
        if self.admin is not None:
            try:
                await self.admin.start()
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise AgentStartError(
                    f"cannot serve admin on {self.options.admin_address}: {reason}"
                ) from None
        cached = self._cache.load() if self._cache is not None else None
        if cached is not None:
            try:
                await self.client.load(cached)
            except OSError as exc:
                raise AgentStartError(f"cannot open a listener: {exc}") from None
            except ConfigRejected as exc:  # from the listeners: the table itself was accepted
                raise AgentStartError(str(exc)) from None
        self._task = asyncio.create_task(self.client.run(), name="pilotfish-agent-xds")
        self._reporting = asyncio.create_task(
            run_load_reporter(
                self.options.xds_server, self.load_reports, backoff=self.options.backoff()
            ),
            name="pilotfish-agent-lrs",
        )
        if self.client.ready.is_set():
            return
        ready = asyncio.create_task(self.client.ready.wait())
        failed = asyncio.create_task(self._failed.wait())
        try:
            await asyncio.wait(
                {ready, failed},
                timeout=self.options.connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            ready.cancel()
            failed.cancel()
        if self._start_error is not None:
            raise self._start_error
        if not self.client.ready.is_set():
            reason = self.client.last_error or "no answer"
            raise AgentStartError(
                f"no configuration from the xDS server {self.options.xds_server} within "
                f"{self.options.connect_timeout:g}s and none cached ({reason})"
            )

    async def close(self) -> None:
        if self._reporting is not None:
            self._reporting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reporting
            self._reporting = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.admin is not None:
            await self.admin.close()
        closer = getattr(self._listeners, "close", None)
        if closer is not None:
            result = closer()
            if inspect.isawaitable(result):
                await result


def _default_build_table() -> TableBuilder:
    builder: TableBuilder = _part("agents.table").build_table
    return builder


def _default_listeners() -> ListenerApplier:
    # Listener addresses already carry the node's bind address (the control plane uses it).
    manager: ListenerApplier = _part("agents.listeners").ListenerManager()
    return manager


def _part(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise AgentStartError(f"this installation lacks {module} ({exc})") from None
