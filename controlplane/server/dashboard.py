"""The live dashboard of the HTTP admin: what it shows, and how it reaches browsers.

The page (``dashboard.html``, shipped as package data, inline CSS and script,
no external asset) is served at ``/`` of the HTTP admin; it opens a
server-sent-events stream at ``/dashboard/stream`` and renders what arrives,
every string as text (never as markup), so nothing taken from the config or
from a proxy (a NACK message, a node id) can inject HTML.

What is shown is cut into four parts, each a JSON document built from the
running control plane (:class:`~controlplane.server.http_admin.Source`):

* ``mesh``: gateways, services with their ports, endpoints and subsets, and
  the virtual services' routes with their weights (rebuilt only when the
  model changes);
* ``proxies``: each connected stream, per type its state (as ``pilotfish
  status`` tells it) and the last NACK with its reason;
* ``traffic``: request and error rates per service and cluster, from the
  load reports;
* ``config``: the config version and the last reload's validation messages
  with file, line, column and code.

Nothing here is on the push path, and nothing runs while no browser watches.
:class:`DashboardFeed` starts one producer task when the first subscriber
comes and stops it when the last leaves. The producer builds every part once
per tick, for all subscribers, and offers each part that changed to each
subscriber's mailbox, which holds only the newest text per part: a slow
browser skips intermediate states, and a subscriber holds at most one
document per part whatever it reads.

A build must not hold the event loop that serves xDS: it reads the streams
:data:`CHUNK` at a time and yields to the loop between chunks, reads only
each stream's state per type (a full row is made only for the
:data:`MAX_ROWS` proxies shown, the problem ones first), and the tick stretches so that
building takes at most a twentieth of the loop's time (a fleet large enough
to make a build slow is shown less often, never slows a push). Every list is
cut to :data:`MAX_ROWS` rows, and the counts say how many there are.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from controlplane.model import Mesh
from controlplane.model.routing import HttpMatch, HttpRoute, RouteDestination, StringMatch
from controlplane.model.service import Labels, Service, labels_match
from controlplane.server.admin import NACKED, NOT_SENT, PENDING, STALE, SYNCED, rfc3339, type_state
from controlplane.xds.load_reports import ClusterRate, LoadReports
from controlplane.xds.stream import TypeStatus
from controlplane.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, push_rank, short_name

if TYPE_CHECKING:
    from controlplane.server.ads import AggregatedDiscoveryService, _Stream
    from controlplane.server.http_admin import Source

MAX_ROWS = 500
"""Services, routes, gateways, proxies and clusters shown at most, each."""
MAX_ENDPOINTS = 8
"""Endpoints listed per service port (the count says how many there are)."""
TICK = 1.0
"""Seconds between builds while someone watches, at least."""
LOOP_SHARE = 0.05
"""The largest share of the event loop's time building may take."""

_CORE_TYPES = (LISTENER, ROUTE, CLUSTER, ENDPOINT)
_STATES = (NACKED, STALE, PENDING, NOT_SENT, SYNCED)
_STATE_RANK = {state: rank for rank, state in enumerate(_STATES)}
CHUNK = 200
"""Streams read between two yields to the event loop, in a build."""


def _labels(labels: Labels) -> dict[str, str]:
    return dict(labels)


def _round(value: float) -> float:
    return round(value, 3)


# -- mesh ----------------------------------------------------------------------


def _match(match: HttpMatch) -> str:
    def text(what: str, value: StringMatch) -> str:
        return f"{what} {value.kind.value} {value.value}"

    conditions = [
        text(what, value)
        for what, value in (
            ("uri", match.uri),
            ("scheme", match.scheme),
            ("method", match.method),
            ("authority", match.authority),
        )
        if value is not None
    ]
    conditions += [text(f"header {name}", value) for name, value in match.headers]
    conditions += [f"no header {name}" for name, _ in match.without_headers]
    conditions += [text(f"query {name}", value) for name, value in match.query_params]
    if match.port is not None:
        conditions.append(f"port {match.port}")
    if match.gateways:
        conditions.append("gateways " + ",".join(match.gateways))
    return " and ".join(conditions) or "any"


def _destination(destination: RouteDestination) -> dict[str, Any]:
    return {
        "host": destination.host,
        "subset": destination.subset or "",
        "port": destination.port,
        "weight": destination.weight,
    }


def _http_route(route: HttpRoute) -> dict[str, Any]:
    notes = []
    if route.redirect is not None:
        notes.append("redirect")
    if route.rewrite is not None:
        notes.append("rewrite")
    if route.fault is not None:
        notes.append("fault")
    if route.retries is not None:
        notes.append(f"{route.retries.attempts} retries")
    if route.timeout is not None:
        notes.append(f"timeout {route.timeout.total_seconds():g}s")
    if route.mirror is not None:
        notes.append(f"mirror {route.mirror.host}")
    return {
        "name": route.name,
        "match": " or ".join(_match(m) for m in route.matches) or "any",
        "destinations": [_destination(d) for d in route.destinations],
        "notes": notes,
    }


def _service(service: Service, subsets: Iterable[tuple[str, Labels]]) -> dict[str, Any]:
    ports = []
    everyone: dict[tuple[str, int], Labels] = {}
    for port in service.ports:
        endpoints = service.endpoints_for(port.port)
        for endpoint in endpoints:
            everyone[(endpoint.address, endpoint.port)] = endpoint.labels
        ports.append(
            {
                "port": port.port,
                "name": port.name,
                "protocol": port.protocol.value,
                "endpoints": len(endpoints),
                "sample": [f"{e.address}:{e.port}" for e in endpoints[:MAX_ENDPOINTS]],
            }
        )
    return {
        "host": service.host,
        "namespace": service.namespace,
        "name": service.name,
        "external": service.mesh_external,
        "resolution": service.resolution.value,
        "ports": ports,
        "subsets": [
            {
                "name": name,
                "labels": _labels(labels),
                "endpoints": sum(1 for have in everyone.values() if labels_match(labels, have)),
            }
            for name, labels in subsets
        ],
    }


def mesh_part(mesh: Mesh) -> dict[str, Any]:
    """Gateways, services (ports, endpoints, subsets) and routes with their weights."""
    subsets: dict[str, list[tuple[str, Labels]]] = {}
    for policy in mesh.destination_policies:
        subsets.setdefault(policy.host, []).extend((s.name, s.labels) for s in policy.subsets)
    return {
        "counts": {
            "services": len(mesh.services),
            "routes": len(mesh.virtual_services),
            "gateways": len(mesh.gateways),
        },
        "services": [_service(s, subsets.get(s.host, ())) for s in mesh.services[:MAX_ROWS]],
        "routes": [
            {
                "namespace": vs.namespace,
                "name": vs.name,
                "hosts": list(vs.hosts),
                "gateways": list(vs.gateways),
                "http": [_http_route(r) for r in vs.http],
                "tcp": [
                    {"destinations": [_destination(d) for d in r.destinations]} for r in vs.tcp
                ],
            }
            for vs in mesh.virtual_services[:MAX_ROWS]
        ],
        "gateways": [
            {
                "namespace": gw.namespace,
                "name": gw.name,
                "selector": _labels(gw.selector),
                "servers": [
                    {"port": s.port, "protocol": s.protocol.value, "hosts": list(s.hosts)}
                    for s in gw.servers
                ],
            }
            for gw in mesh.gateways[:MAX_ROWS]
        ],
    }


# -- proxies -------------------------------------------------------------------


class _Proxy:
    """One stream's states, read in the cheap pass over every stream."""

    __slots__ = ("rank", "sort_key", "stream", "types")

    def __init__(
        self, stream: _Stream, types: list[tuple[str, str, TypeStatus | None]], rank: int
    ) -> None:
        self.stream = stream
        self.types = types
        """``(type URL, state, status)`` per type."""
        self.rank = rank
        self.sort_key = (rank, stream.core.node_id or "", stream.connection)


class ProxyReader:
    """Reads each stream's state per type; per proxy class, its types are worked out once."""

    def __init__(self, ads: AggregatedDiscoveryService, now: float) -> None:
        self.ads = ads
        self.now = now
        self._types: dict[int, tuple[object, list[str]]] = {}

    def _type_urls(self, stream: _Stream) -> list[str]:
        snapshot = stream.core.snapshot
        known = self._types.get(id(snapshot))
        if known is not None and known[0] is snapshot:
            return known[1]
        urls = set(_CORE_TYPES) | (set(snapshot.type_urls) if snapshot is not None else set())
        ordered = sorted(urls, key=lambda url: (push_rank(url), url))
        self._types[id(snapshot)] = (snapshot, ordered)
        return ordered

    def read(self, stream: _Stream) -> _Proxy:
        sent_at = max(self.ads.published_at.get(stream.key or "", 0.0), stream.connected_at)
        core = stream.core
        types: list[tuple[str, str, TypeStatus | None]] = []
        rank = _STATE_RANK[SYNCED]
        for url in self._type_urls(stream):
            status = core.status(url)
            if status is None and url not in _CORE_TYPES:
                continue
            state = type_state(status, stream.dirty, sent_at, self.now)
            rank = min(rank, _STATE_RANK[state])
            types.append((url, state, status))
        return _Proxy(stream, types, rank)


def _proxy_row(proxy: _Proxy) -> dict[str, Any]:
    stream = proxy.stream
    nacks = stream.last_nacks or {}
    types: dict[str, Any] = {}
    for url, state, status in proxy.types:
        nack = None
        if url in nacks:
            version, message, at = nacks[url]
            nack = {"version": version, "message": message, "at": rfc3339(at)}
        types[short_name(url)] = {
            "state": state,
            "sent": status.version if status is not None else "",
            "acked": status.acked_version if status is not None else "",
            "nack": nack,
        }
    return {
        "node_id": proxy.sort_key[1],
        "role": (stream.key or "").split("|", 1)[0],
        "address": stream.connection,
        "protocol": stream.protocol,
        "connected_since": rfc3339(stream.connected_at),
        "state": _STATES[proxy.rank],
        "types": types,
    }


def _proxies_summary(proxies: list[_Proxy]) -> dict[str, Any]:
    states: dict[str, int] = {}
    for proxy in proxies:
        state = _STATES[proxy.rank]
        states[state] = states.get(state, 0) + 1
    shown = heapq.nsmallest(MAX_ROWS, proxies, key=lambda p: p.sort_key)
    return {"total": len(proxies), "states": states, "proxies": [_proxy_row(p) for p in shown]}


def _streams(ads: AggregatedDiscoveryService | None) -> list[_Stream]:
    return [s for s in ads.streams() if s.core.has_node] if ads is not None else []


def proxies_part(ads: AggregatedDiscoveryService | None, now: float) -> dict[str, Any]:
    """Each connected proxy's state per type, the NACKed and stale ones first."""
    streams = _streams(ads)
    if ads is None or not streams:
        return _proxies_summary([])
    reader = ProxyReader(ads, now)
    return _proxies_summary([reader.read(s) for s in streams])


# -- traffic -------------------------------------------------------------------


def _split_cluster(name: str) -> tuple[str, str, str] | None:
    """``(host, port, subset)`` of a translated ``outbound|port|subset|host`` cluster."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] != "outbound":
        return None
    return parts[3], parts[1], parts[2]


def _rate(rate: ClusterRate) -> dict[str, Any]:
    return {
        "rps": _round(rate.requests_per_second),
        "eps": _round(rate.errors_per_second),
        "error_ratio": _round(rate.error_ratio),
        "in_progress": rate.in_progress,
    }


def traffic_part(traffic: LoadReports | None, mesh: Mesh, now: float | None = None) -> Any:
    """Rates per service (its clusters summed) and per cluster, from the load reports."""
    if traffic is None:
        return None
    rates = traffic.rates(now)
    totals = traffic.totals(now)
    hosts = {service.host for service in mesh.services}
    services: dict[str, dict[str, Any]] = {}
    other: list[dict[str, Any]] = []
    for name, rate in rates.items():
        counts = totals[name].counts if name in totals else None
        row = {
            "cluster": name,
            **_rate(rate),
            "issued": counts.issued if counts else 0,
            "errors": counts.errors if counts else 0,
        }
        split = _split_cluster(name)
        if split is None or split[0] not in hosts:
            other.append(row)
            continue
        host, port, subset = split
        service = services.setdefault(
            host,
            {"service": host, "rps": 0.0, "eps": 0.0, "in_progress": 0, "issued": 0, "errors": 0},
        )
        service["rps"] += rate.requests_per_second
        service["eps"] += rate.errors_per_second
        service["in_progress"] += rate.in_progress
        service["issued"] += row["issued"]
        service["errors"] += row["errors"]
        service.setdefault("clusters", []).append({**row, "port": port, "subset": subset})
    rows = sorted(services.values(), key=lambda s: (-s["rps"], s["service"]))
    for service in rows:
        service["rps"] = _round(service["rps"])
        service["eps"] = _round(service["eps"])
    return {
        "interval": traffic.interval,
        "window": traffic.window,
        "services": rows[:MAX_ROWS],
        "other": other[:MAX_ROWS],
    }


# -- config --------------------------------------------------------------------


def config_part(source: Source) -> dict[str, Any]:
    """The config version and the last reload's validation messages."""
    view = source.config_view
    return {
        "loaded": view.loaded,
        "version": view.version,
        "reloads": view.reloads,
        "reloaded_at": rfc3339(view.reloaded_at),
        "files": len(view.files),
        "rejected": list(view.rejected),
        "diagnostics": [
            {
                "severity": d.severity.value,
                "code": d.code,
                "file": d.file,
                "line": d.line,
                "column": d.column,
                "resource": d.resource,
                "field": d.field,
                "message": d.message,
            }
            for d in view.diagnostics[:MAX_ROWS]
        ],
        "errors": sum(1 for d in view.diagnostics if d.is_error),
        "warnings": sum(1 for d in view.diagnostics if not d.is_error),
    }


# -- several workers -------------------------------------------------------------

_SUMMED = ("rps", "eps", "in_progress", "issued", "errors")


def merge_proxies(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``proxies`` parts of several workers as one: counts summed, rows in one order."""
    states: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    for part in parts:
        for state, count in part["states"].items():
            states[state] = states.get(state, 0) + count
        rows.extend(part["proxies"])
    rows.sort(key=lambda row: (_STATE_RANK[row["state"]], row["node_id"], row["address"]))
    return {
        "total": sum(part["total"] for part in parts),
        "states": states,
        "proxies": rows[:MAX_ROWS],
    }


def _sum_rows(rows: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        into = merged.get(row[key])
        if into is None:
            merged[row[key]] = {**row}
            continue
        for name in _SUMMED:
            into[name] += row[name]
    for row in merged.values():
        row["rps"], row["eps"] = _round(row["rps"]), _round(row["eps"])
        if "error_ratio" in row:
            row["error_ratio"] = _round(row["eps"] / row["rps"]) if row["rps"] else 0.0
    return list(merged.values())


def merge_traffic(parts: list[Any]) -> Any:
    """The ``traffic`` parts of several workers as one: each proxy reports to the worker it
    is connected to, so rates and totals of one service or cluster add up."""
    present = [part for part in parts if part is not None]
    if not present:
        return None
    services = _sum_rows((s for part in present for s in part["services"]), "service")
    for service in services:
        host = service["service"]
        service["clusters"] = _sum_rows(
            (
                cluster
                for part in present
                for other in part["services"]
                if other["service"] == host
                for cluster in other.get("clusters", [])
            ),
            "cluster",
        )
    services.sort(key=lambda s: (-s["rps"], s["service"]))
    return {
        "interval": present[0]["interval"],
        "window": present[0]["window"],
        "services": services[:MAX_ROWS],
        "other": _sum_rows((o for part in present for o in part["other"]), "cluster")[:MAX_ROWS],
    }


PeerParts = Callable[[], Awaitable[list[dict[str, Any]]]]
"""The other workers' own ``proxies`` and ``traffic`` parts (see controlplane.server.peers)."""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class Parts:
    """Builds the parts as JSON text, the mesh part only when the model changed."""

    def __init__(self, source: Source, clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.clock = clock
        self._mesh: tuple[Mesh, str] | None = None
        self.peers: PeerParts | None = None
        """Set in a worker of ``serve --workers``: proxies and traffic then cover every worker."""

    def _others(self) -> dict[str, str]:
        source = self.source
        mesh = source.mesh
        if self._mesh is None or self._mesh[0] is not mesh:
            self._mesh = (mesh, _dumps(mesh_part(mesh)))
        return {
            "config": _dumps(config_part(source)),
            "mesh": self._mesh[1],
            "traffic": _dumps(traffic_part(source.traffic, mesh)),
        }

    def build(self) -> dict[str, str]:
        """Every part, at once."""
        return {**self._others(), "proxies": _dumps(proxies_part(self.source.ads, self.clock()))}

    async def build_async(self, *, local_only: bool = False) -> tuple[dict[str, str], float]:
        """Every part, yielding to the event loop every :data:`CHUNK` streams, and the
        seconds spent building (waits left out); merged with the other workers' unless
        ``local_only``."""
        clock = time.perf_counter
        started = clock()
        parts = self._others()
        ads = self.source.ads
        streams = _streams(ads)
        proxies: list[_Proxy] = []
        spent = clock() - started
        if ads is not None:
            reader = ProxyReader(ads, self.clock())
            for first in range(0, len(streams), CHUNK):
                if first:
                    await asyncio.sleep(0)
                started = clock()
                proxies.extend(reader.read(stream) for stream in streams[first : first + CHUNK])
                spent += clock() - started
        started = clock()
        own = _proxies_summary(proxies)
        spent += clock() - started
        if self.peers is None or local_only:
            parts["proxies"] = _dumps(own)
            return parts, spent
        others = await self.peers()
        started = clock()
        parts["proxies"] = _dumps(merge_proxies([own, *(o["proxies"] for o in others)]))
        traffic = [json.loads(parts["traffic"]), *(o["traffic"] for o in others)]
        parts["traffic"] = _dumps(merge_traffic(traffic))
        return parts, spent + clock() - started


# -- the feed ------------------------------------------------------------------


class Subscriber:
    """One browser's mailbox: the newest text of each part not yet taken."""

    def __init__(self) -> None:
        self._pending: dict[str, str] = {}
        self._ready = asyncio.Event()
        self.closed = False

    def offer(self, part: str, text: str) -> None:
        self._pending[part] = text
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def take(self) -> list[tuple[str, str]] | None:
        """Every part changed since the last take (waits for one), or None once closed."""
        while not self._pending:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        taken = sorted(self._pending.items())
        self._pending.clear()
        return taken


class DashboardFeed:
    """Builds the parts once per tick while anyone subscribes, and offers the changed ones."""

    def __init__(
        self,
        parts: Parts,
        *,
        tick: float = TICK,
    ) -> None:
        self.parts = parts
        self.tick = tick
        self.builds = 0
        """Builds done (the tests check that none happen while no one watches)."""
        self._subscribers: set[Subscriber] = set()
        self._latest: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closed = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscriber:
        subscriber = Subscriber()
        if self._closed:
            subscriber.close()
            return subscriber
        for part, text in self._latest.items():
            subscriber.offer(part, text)
        self._subscribers.add(subscriber)
        if not self.running:
            self._latest.clear()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="pilotfish-dashboard"
            )
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        subscriber.close()
        if not self._subscribers:
            self._wake.set()

    async def close(self) -> None:
        """End every subscription and the producer (the server is stopping)."""
        self._closed = True
        for subscriber in list(self._subscribers):
            subscriber.close()
        self._subscribers.clear()
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while self._subscribers:
            built, cost = await self.parts.build_async()
            self.builds += 1
            for part, text in built.items():
                if self._latest.get(part) != text:
                    self._latest[part] = text
                    for subscriber in self._subscribers:
                        subscriber.offer(part, text)
            self._wake.clear()
            if not self._subscribers:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(self.tick, cost / LOOP_SHARE))
        self._latest.clear()
