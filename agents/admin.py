"""The agent's admin endpoint: a small HTTP/1.1 server on ``--admin-address``.

``GET /ready``
    200 once a configuration is in force (the cached one, or the first complete
    one received), 503 before.
``GET /config_dump``
    The applied resources and their versions as JSON: per type, the version
    (SotW ``version_info`` or delta ``system_version_info``), and each resource
    as Envoy's JSON mapping with its delta version where there is one.

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

from agents.cache import HeldConfig
from controlplane.xds.types import push_rank, short_name

log = structlog.get_logger(__name__)

Page = Callable[[], tuple[int, str, bytes]]
"""Returns status, content type and body."""

MAX_REQUEST_HEAD = 8192
READ_TIMEOUT = 5.0
REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class AdminServer:
    def __init__(self, address: str, ready: Callable[[], bool], held: Callable[[], HeldConfig]):
        self.address = address
        self._ready = ready
        self._held = held
        self._pages: dict[str, Page] = {"/ready": self._ready_page, "/config_dump": self._dump}
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
        return page()

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


def _as_json(message: Any) -> Any:
    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
    except (TypeError, KeyError) as exc:  # an Any of a type this process never imported
        return {"unprintable": str(exc)}
