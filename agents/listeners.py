"""Listening sockets that follow the forwarding table.

:class:`TableHolder` is the one place the current table lives; swapping
``holder.current`` is a single attribute store, so every request sees the old
table or the new one, and an exchange keeps the table it read at its start
until it ends.

:meth:`ListenerManager.apply` makes the sockets match a new table's
``listeners`` by name: a listener that appeared is opened, one that
disappeared is closed, one whose address, port or kind changed is replaced,
and one that did not change keeps its socket (a TCP listener's forward is
updated in place). New sockets are bound before the table is swapped: when
one cannot be bound, those just opened are closed again and
:class:`agents.errors.ConfigRejected` is raised, so the update is NACKed and
the previous table and sockets stay. Closing a listening socket stops new
connections only; connections already accepted finish what they carry.
After the swap, pooled upstream connections to endpoints no longer in any
cluster are drained (closed when idle, after their exchange when busy).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agents.errors import ConfigRejected
from agents.http_proxy import (
    DEFAULT_SETTINGS,
    ClientConnection,
    ProxyContext,
    ProxySettings,
    Stats,
)
from agents.tcp_proxy import TcpClient, TcpContext
from agents.upstream_pool import UpstreamPool


class TableHolder:
    __slots__ = ("current",)

    def __init__(self, current: Any = None) -> None:
        self.current: Any = current


@dataclass(slots=True)
class _Open:
    name: str
    address: str
    port: int
    kind: str
    server: asyncio.Server
    tcp: TcpContext | None


class ListenerManager:
    def __init__(
        self,
        holder: TableHolder | None = None,
        bind_address: str | None = None,
        pool: UpstreamPool | None = None,
        settings: ProxySettings = DEFAULT_SETTINGS,
        stats: Stats | None = None,
    ) -> None:
        self.holder = holder if holder is not None else TableHolder()
        self.bind_address = bind_address
        self.pool = pool if pool is not None else UpstreamPool()
        self.settings = settings
        self.stats = stats if stats is not None else Stats()
        self._open: dict[str, _Open] = {}

    def port(self, name: str) -> int:
        """The port a listener is bound to (useful when it asked for port 0)."""
        sock = self._open[name].server.sockets[0]
        return int(sock.getsockname()[1])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._open)

    async def apply(self, table: Any) -> None:
        wanted = {entry.name: entry for entry in table.listeners}
        opened: dict[str, _Open] = {}
        replaced: list[_Open] = []
        try:
            for name, entry in wanted.items():
                address = self.bind_address or entry.address
                old = self._open.get(name)
                if (
                    old is not None
                    and old.address == address
                    and old.port == entry.port
                    and old.kind == entry.kind
                ):
                    continue
                if old is not None and old.port == entry.port and old.address == address:
                    # Same socket address, another kind: the old socket must go first.
                    old.server.close()
                    replaced.append(old)
                opened[name] = await self._listen(name, address, entry)
        except OSError as e:
            for o in opened.values():
                o.server.close()
            for old in replaced:
                with contextlib.suppress(OSError):
                    restored = await self._listen(old.name, old.address, _Entry(old))
                    self._open[old.name] = restored
            raise ConfigRejected(f"Listener {name}", "address", f"cannot listen: {e}") from e
        self.holder.current = table
        for name, entry in wanted.items():
            current = self._open.get(name)
            if name in opened:
                if current is not None and current not in replaced:
                    current.server.close()
                self._open[name] = opened[name]
            elif current is not None and current.tcp is not None:
                current.tcp.forward = entry.tcp
        for name in list(self._open):
            if name not in wanted:
                self._open.pop(name).server.close()
        self._drain(table)

    def _drain(self, table: Any) -> None:
        clusters = getattr(table, "clusters", None)
        if not isinstance(clusters, Mapping):
            return
        keep = {ep.key for cluster in clusters.values() for ep in cluster.endpoints}
        self.pool.drain(keep.__contains__)

    async def _listen(self, name: str, address: str, entry: Any) -> _Open:
        loop = asyncio.get_running_loop()
        tcp: TcpContext | None = None
        if entry.kind == "tcp":
            tcp = TcpContext(name, self.holder, entry.tcp, self.stats)
            ctx_tcp = tcp
            server = await loop.create_server(
                lambda: TcpClient(ctx_tcp), address, entry.port, reuse_address=True, backlog=1024
            )
        else:
            ctx = ProxyContext(name, self.holder, self.pool, self.settings, self.stats)
            server = await loop.create_server(
                lambda: ClientConnection(ctx), address, entry.port, reuse_address=True, backlog=1024
            )
        return _Open(name, address, entry.port, entry.kind, server, tcp)

    async def close(self) -> None:
        for o in self._open.values():
            o.server.close()
        self._open.clear()
        self.pool.close()


class _Entry:
    """A closed listener's settings, to open it again after a failed apply."""

    def __init__(self, o: _Open) -> None:
        self.name = o.name
        self.address = o.address
        self.port = o.port
        self.kind = o.kind
        self.tcp = o.tcp.forward if o.tcp is not None else None
