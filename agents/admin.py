"""The agent's admin endpoint: a small HTTP/1.1 server on ``--admin-address``.

``GET /ready``
    200 once a configuration is in force (the cached one, or the first complete
    one received), 503 before.
``GET /config_dump``
    The applied resources and their versions as JSON: per type, the version
    (SotW ``version_info`` or delta ``system_version_info``), and each resource
    as Envoy's JSON mapping with its delta version where there is one.
``GET /clusters``
    The forwarding table in force, per cluster: its kind, load-balancing
    policy, outlier detection, ejections and returns, what it still waits for,
    and every endpoint as its balancer sees it (health, ejection, outstanding
    requests, latency estimate), as JSON.
``GET /metrics``
    The agent's metrics (:mod:`agents.metrics`) in Prometheus text format.

More pages are registered with :meth:`AdminServer.add_page`. It is built on
asyncio streams, one short exchange per connection (``Connection: close``):
it serves operators and probes, not traffic. The address is bound when the
agent starts, before anything else, so a port already taken fails the start
with one clear line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import structlog
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST

from agents.cache import HeldConfig
from agents.metrics import AgentMetrics
from controlplane.xds.types import push_rank, short_name

log = structlog.get_logger(__name__)

Page = Callable[[], tuple[int, str, bytes]]
"""Returns status, content type and body."""

MAX_REQUEST_HEAD = 8192
READ_TIMEOUT = 5.0
REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class AdminServer:
    def __init__(
        self,
        address: str,
        ready: Callable[[], bool],
        held: Callable[[], HeldConfig],
        *,
        table: Callable[[], Any | None] = lambda: None,
        metrics: AgentMetrics | None = None,
    ) -> None:
        self.address = address
        self._ready = ready
        self._held = held
        self._table = table
        self._metrics = metrics
        self._pages: dict[str, Page] = {
            "/ready": self._ready_page,
            "/config_dump": self._dump,
            "/clusters": self._clusters,
        }
        if metrics is not None:
            self._pages["/metrics"] = self._metrics_page
        self._server: asyncio.Server | None = None

    def add_page(self, path: str, page: Page) -> None:
        self._pages[path] = page

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Bind and serve; OSError when the address cannot be bound."""
        host, _, port = self.address.rpartition(":")
        self._server = await asyncio.start_server(
            self._serve, host.strip("[]"), int(port), limit=MAX_REQUEST_HEAD
        )
        log.info("agent_admin_started", address=f"{host}:{self.port}")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            method, _, rest = head.decode("latin-1").partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            status, content_type, body = self._respond(method, path)
            writer.write(
                f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
                f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
                "connection: close\r\n\r\n".encode()
                + (b"" if method == "HEAD" else body)
            )
            await writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ConnectionError,
        ):
            pass  # a probe that hung up, sent too much or nothing: no answer is owed
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        page = self._pages.get(path)
        if page is None:
            return 404, "text/plain", b"not found\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"GET only\n"
        try:
            return page()
        except Exception:  # a page's bug must not leave the probe without an answer
            log.exception("agent_admin_page_failed", path=path)
            return 500, "text/plain", b"internal error, see the agent's log\n"

    def _ready_page(self) -> tuple[int, str, bytes]:
        if self._ready():
            return 200, "text/plain", b"ready\n"
        return 503, "text/plain", b"no configuration applied yet\n"

    def _dump(self) -> tuple[int, str, bytes]:
        held = self._held()
        dump: dict[str, Any] = {}
        for url in sorted(held.types, key=push_rank):
            config = held.types[url]
            resources = []
            for name, message in sorted(config.resources.items()):
                entry: dict[str, Any] = {"name": name, "resource": _as_json(message)}
                if name in config.resource_versions:
                    entry["version"] = config.resource_versions[name]
                resources.append(entry)
            dump[short_name(url)] = {
                "type_url": url,
                "version": config.version,
                "resources": resources,
            }
        return 200, "application/json", json.dumps(dump, indent=1).encode() + b"\n"

    def _clusters(self) -> tuple[int, str, bytes]:
        return (
            200,
            "application/json",
            json.dumps(clusters_view(self._table()), indent=1).encode() + b"\n",
        )

    def _metrics_page(self) -> tuple[int, str, bytes]:
        assert self._metrics is not None
        return 200, CONTENT_TYPE_LATEST, self._metrics.render()


def clusters_view(table: Any | None) -> dict[str, Any]:
    """What ``/clusters`` shows of ``table`` (None: nothing applied yet)."""
    clusters: dict[str, Any] = {}
    for name, entry in sorted((getattr(table, "clusters", None) or {}).items()):
        balancer = entry.balancer
        outlier = entry.outlier
        clusters[name] = {
            "kind": entry.kind,
            "lb_policy": getattr(entry.lb, "kind", ""),
            "outlier_detection": outlier is not None,
            "ejections_total": getattr(balancer, "ejections_total", 0),
            "returns_total": getattr(balancer, "returns_total", 0),
            "pending": list(entry.pending),
            "endpoints": balancer.snapshot(),
        }
    return {"version": getattr(table, "version", ""), "clusters": clusters}


def _as_json(message: Any) -> Any:
    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
    except (TypeError, KeyError) as exc:  # an Any of a type this process never imported
        return {"unprintable": str(exc)}
