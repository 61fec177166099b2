"""The HTTP admin endpoint: health, readiness, the model as JSON and Prometheus metrics.

:class:`HttpAdmin` serves these routes on the event loop the gRPC server runs
on (``pilotfish serve --admin-address``), with the small HTTP/1.1 server of
:mod:`~controlplane.server.http11`:

* ``/healthz``: 200 while the process serves;
* ``/readyz``: 200 once the first configuration is loaded and xDS is served, 503 before;
* ``/debug/config``: the model served now (:class:`~controlplane.model.Mesh`),
  its dataclasses walked into JSON;
* ``/metrics``: Prometheus text from a registry of its own (one per control
  plane, so that several in one process never share counters);
* ``/``: the live dashboard, fed by server-sent events at ``/dashboard/stream``
  and also readable as one JSON document at ``/dashboard/state``
  (:mod:`~controlplane.server.dashboard`).

Metrics cost the push path nothing but integer adds: :class:`MeshCollector`
reads everything when scraped, from the live streams, the counters and
histograms of :class:`~controlplane.server.stats.XdsStats`, the snapshot cache,
the config view and the load reports. A scrape walks the live streams once.

Under ``pilotfish serve --workers`` every worker serves the port
(``reuse_port``) and a private Unix socket; ``/metrics`` then answers for
every worker through :attr:`HttpAdmin.merge_metrics` (see
:mod:`~controlplane.server.peers`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import PurePath
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from controlplane.model import Mesh
from controlplane.server.admin import ConfigView
from controlplane.server.admin_errors import AdminStartError as AdminStartError
from controlplane.server.ads import AggregatedDiscoveryService
from controlplane.server.dashboard import DashboardFeed, Parts
from controlplane.server.grpc_server import (
    ServerStartError,
    check_address,
    split_address,
)
from controlplane.server.http11 import (
    BodyWriter,
    Handler,
    HttpServer,
    Request,
    Response,
    Streamed,
)
from controlplane.server.peers import LOCAL_ONLY
from controlplane.server.stats import Histogram
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.load_reports import LoadReports
from controlplane.xds.types import short_name

KEEPALIVE = 15.0
"""Seconds between comments on an idle event stream (proxies close silent connections)."""
_CLOSED_CHECK = 1.0
"""Seconds between checks that an event stream's browser is still there."""


class Source(Protocol):
    """What the admin endpoint reads from the running control plane."""

    @property
    def ads(self) -> AggregatedDiscoveryService | None: ...

    @property
    def cache(self) -> SnapshotCache: ...

    @property
    def mesh(self) -> Mesh: ...

    @property
    def config_view(self) -> ConfigView: ...

    @property
    def reload_seconds(self) -> Histogram: ...

    @property
    def traffic(self) -> LoadReports | None: ...


def to_json(value: Any) -> Any:
    """A plain JSON value for a model object: dataclasses by field, enums by value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, frozenset | set):
        items = [to_json(item) for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    if isinstance(value, tuple | list):
        return [to_json(item) for item in value]
    if isinstance(value, PurePath):
        return str(value)
    return str(value)


def _histogram(
    name: str, documentation: str, histograms: Mapping[str, Histogram], label: str | None
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=[label] if label else [])
    for key, histogram in sorted(histograms.items()):
        family.add_metric(
            [key] if label else [],
            histogram.cumulative(),
            histogram.total,  # type: ignore[arg-type]
        )
    return family


class MeshCollector(Collector):
    """Every Pilotfish metric, read from ``source`` at scrape time."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from self._config()
        yield from self._resources()
        ads = self.source.ads
        if ads is not None:
            yield from self._xds(ads)
        traffic = self.source.traffic
        if traffic is not None:
            yield from self._traffic(traffic)

    def _config(self) -> Iterator[Metric]:
        view = self.source.config_view
        yield CounterMetricFamily(
            "pilotfish_config_reloads", "Reloads of the config directory.", value=view.reloads
        )
        yield _histogram(
            "pilotfish_config_reload_duration_seconds",
            "Seconds a reload took (read, validate, translate, publish).",
            {"": self.source.reload_seconds},
            None,
        )
        yield GaugeMetricFamily(
            "pilotfish_config_errors",
            "Validation errors in the last reload.",
            value=sum(1 for d in view.diagnostics if d.is_error),
        )
        yield GaugeMetricFamily(
            "pilotfish_config_files_held_back",
            "Files whose latest version is held back for errors (the last good one is served).",
            value=len(view.rejected),
        )
        info = GaugeMetricFamily(
            "pilotfish_config_version", "The config version served (always 1).", labels=["version"]
        )
        info.add_metric([view.version], 1)
        yield info

    def _resources(self) -> Iterator[Metric]:
        cache = self.source.cache
        most: dict[str, int] = {}
        keys = cache.keys()
        for key in keys:
            snapshot = cache.get(key)
            if snapshot is None:
                continue
            for url in snapshot.type_urls:
                most[url] = max(most.get(url, 0), len(snapshot.resources(url)))
        yield GaugeMetricFamily(
            "pilotfish_proxy_classes",
            "Proxy classes with a snapshot (proxies that get the same config share one).",
            value=len(keys),
        )
        resources = GaugeMetricFamily(
            "pilotfish_resources",
            "Resources of each type in the largest snapshot of any proxy class.",
            labels=["type"],
        )
        for url, count in sorted(most.items()):
            resources.add_metric([short_name(url)], count)
        yield resources

    def _xds(self, ads: AggregatedDiscoveryService) -> Iterator[Metric]:
        connected: dict[tuple[str, str, str], int] = {}
        for stream in ads.streams():
            role = (stream.key or "").split("|", 1)[0] or "unknown"
            kind = short_name(stream.type_url) if stream.type_url else "ADS"
            key = (role, stream.protocol, kind)
            connected[key] = connected.get(key, 0) + 1
        proxies = GaugeMetricFamily(
            "pilotfish_proxies_connected",
            "Live xDS streams by proxy role, protocol (sotw, delta) and service (ADS or a type).",
            labels=["role", "protocol", "type"],
        )
        for labels, count in sorted(connected.items()):
            proxies.add_metric(list(labels), count)
        yield proxies
        stats = ads.stats
        for name, documentation, counts in (
            ("pilotfish_xds_pushes", "xDS responses sent, by type.", stats.pushes),
            ("pilotfish_xds_acks", "xDS ACKs received, by type.", stats.acks),
            ("pilotfish_xds_nacks", "xDS NACKs received (config refused), by type.", stats.nacks),
        ):
            family = CounterMetricFamily(name, documentation, labels=["type"])
            for url, count in sorted(counts.items()):
                family.add_metric([short_name(url)], count)
            yield family
        yield _histogram(
            "pilotfish_convergence_seconds",
            "Seconds from a config change being published to each proxy's ACK of it, by type.",
            {short_name(url): h for url, h in stats.convergence.items()},
            "type",
        )

    def _traffic(self, traffic: LoadReports) -> Iterator[Metric]:
        totals = traffic.totals()
        rates = traffic.rates()
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "requests": CounterMetricFamily(
                "pilotfish_cluster_requests",
                "Requests the proxies reported issuing, by cluster (load reports).",
                labels=["cluster"],
            ),
            "errors": CounterMetricFamily(
                "pilotfish_cluster_errors",
                "Requests the proxies reported as failed, by cluster.",
                labels=["cluster"],
            ),
            "rps": GaugeMetricFamily(
                "pilotfish_cluster_requests_per_second",
                "Requests per second over the recent window, by cluster.",
                labels=["cluster"],
            ),
            "eps": GaugeMetricFamily(
                "pilotfish_cluster_errors_per_second",
                "Failed requests per second over the recent window, by cluster.",
                labels=["cluster"],
            ),
            "in_progress": GaugeMetricFamily(
                "pilotfish_cluster_requests_in_progress",
                "Requests in flight at the last report, by cluster.",
                labels=["cluster"],
            ),
        }
        for name, load in totals.items():
            families["requests"].add_metric([name], load.counts.issued)
            families["errors"].add_metric([name], load.counts.errors)
            families["in_progress"].add_metric([name], load.counts.in_progress)
        for name, rate in rates.items():
            families["rps"].add_metric([name], rate.requests_per_second)
            families["eps"].add_metric([name], rate.errors_per_second)
        yield from families.values()


class HttpAdmin:
    """The admin HTTP server of one control plane; :meth:`start` it on the running loop."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MeshCollector(source))
        self._server: HttpServer | None = None
        self.host = ""
        self.port = 0
        self.merge_metrics: Callable[[bytes, Request], Awaitable[bytes]] | None = None
        """Workers: this worker's metrics text -> every worker's (see controlplane.server.peers)."""
        self.parts = Parts(source)
        self._feed: DashboardFeed | None = None
        self._page_text: str | None = None

    @property
    def _page(self) -> str:
        """The dashboard's page, read at its first request: importlib.resources (and the
        zipfile module it brings) stays out of a server whose dashboard nobody opens."""
        if self._page_text is None:
            from importlib import resources

            page = resources.files("controlplane.server").joinpath("dashboard.html")
            self._page_text = page.read_text("utf-8")
        return self._page_text

    @property
    def feed(self) -> DashboardFeed:
        """The dashboard's feed (made on the serving loop at first use)."""
        if self._feed is None:
            self._feed = DashboardFeed(self.parts)
        return self._feed

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def routes(self) -> dict[str, Handler]:
        return {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/debug/config": self._config,
            "/metrics": self._metrics,
            "/": self._dashboard,
            "/dashboard/state": self._dashboard_state,
            "/dashboard/stream": self._dashboard_stream,
        }

    async def start(
        self, address: str, *, reuse_port: bool = False, unix_path: str | None = None
    ) -> None:
        """Listen on ``address`` (HOST:PORT, port 0 for any); :class:`AdminStartError` if not.

        Workers join the port their supervisor holds (``reuse_port``) and listen on
        ``unix_path`` too, where their peers reach them alone."""
        try:
            if not reuse_port:
                check_address(address)
        except ServerStartError as exc:
            raise AdminStartError(exc) from exc
        host, port = split_address(address)
        server = HttpServer(self.routes())
        try:
            bound = await server.listen_tcp(host, port, reuse_port=reuse_port)
            if unix_path is not None:
                await server.listen_unix(unix_path)
        except OSError as exc:
            await server.close()
            raise AdminStartError(ServerStartError(f"cannot listen on {address}: {exc}")) from exc
        self._server = server
        self.host = host
        self.port = bound

    async def stop(self) -> None:
        if self._feed is not None:
            await self._feed.close()  # ends the event streams, so closing does not wait on them
        if self._server is not None:
            server, self._server = self._server, None
            # A browser that stopped reading its event stream must not hold a shutdown.
            await server.close(grace=2.0)

    async def _healthz(self, request: Request) -> Response:
        return Response(b"ok\n")

    async def _readyz(self, request: Request) -> Response:
        if self.source.config_view.loaded and self.source.ads is not None:
            return Response(b"ready\n")
        return Response(b"loading the config directory\n", status=503)

    async def _config(self, request: Request) -> Response:
        body = {"version": self.source.config_view.version, **to_json(self.source.mesh)}
        return _json(body)

    async def _metrics(self, request: Request) -> Response:
        body = generate_latest(self.registry)
        if self.merge_metrics is not None:
            body = await self.merge_metrics(body, request)
        return Response(body, content_type=CONTENT_TYPE_LATEST)

    async def _dashboard(self, request: Request) -> Response:
        # Scripts and styles run only with this response's nonce: even markup that got
        # into the page some other way could not run a script or load anything.
        nonce = secrets.token_urlsafe(16)
        policy = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        )
        return Response(
            self._page.replace("{{nonce}}", nonce).encode("utf-8"),
            content_type="text/html; charset=utf-8",
            headers=(
                ("Content-Security-Policy", policy),
                ("X-Content-Type-Options", "nosniff"),
                ("Cache-Control", "no-store"),
            ),
        )

    async def _dashboard_state(self, request: Request) -> Response:
        local_only = bool(request.headers.get(LOCAL_ONLY))
        built, _ = await self.parts.build_async(local_only=local_only)  # sliced, as the stream's
        return _json({name: json.loads(text) for name, text in built.items()})

    async def _dashboard_stream(self, request: Request) -> Streamed:
        """Server-sent events: each dashboard part as it changes, the newest only."""
        return Streamed(
            self._events,
            content_type="text/event-stream",
            headers=(("Cache-Control", "no-store"), ("X-Accel-Buffering", "no")),
        )

    async def _events(self, body: BodyWriter) -> None:
        feed = self.feed
        subscriber = feed.subscribe()
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        try:
            await body.write(b"retry: 2000\n\n")
            while not body.closed:
                try:
                    parts = await asyncio.wait_for(subscriber.take(), _CLOSED_CHECK)
                except TimeoutError:
                    if loop.time() - quiet_since >= KEEPALIVE:
                        await body.write(b": keep-alive\n\n")
                        quiet_since = loop.time()
                    continue
                if parts is None:
                    break
                for part, text in parts:
                    await body.write(f"event: {part}\ndata: {text}\n\n".encode())
                quiet_since = loop.time()
        finally:
            feed.unsubscribe(subscriber)


def _json(value: Any) -> Response:
    return Response(_dumps(value).encode("utf-8"), content_type="application/json; charset=utf-8")


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2) + "\n"
