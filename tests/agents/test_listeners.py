"""ListenerManager.apply: sockets follow the table; failures keep the old one; pools drain."""

from __future__ import annotations

import asyncio
import socket

import pytest

from agents.actions import Forward, WeightedCluster
from agents.errors import ConfigRejected
from agents.listeners import ListenerManager, TableHolder
from tests.agents.http_fakes import (
    Backend,
    FakeListener,
    FakeTable,
    cluster,
    forward,
    get,
    request,
)
from tests.agents.live_support import free_port


async def refused(port: int) -> bool:
    try:
        _, w = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    w.close()
    return False


async def test_listeners_open_stay_move_and_close_with_the_table() -> None:
    backend = await Backend().start()
    p1, p2, p3 = free_port(), free_port(), free_port()
    c = cluster("backend", backend.port)
    holder = TableHolder()
    manager = ListenerManager(holder)
    first = FakeTable(
        [("/", forward())],
        [c],
        (FakeListener("web", port=p1), FakeListener("admin", port=p2)),
    )
    await manager.apply(first)
    assert holder.current is first and set(manager.names) == {"web", "admin"}
    assert (await request(p1, get())).status == 200
    assert (await request(p2, get())).status == 200
    server_before = manager._open["web"].server
    second = FakeTable(
        [("/", forward())],
        [c],
        (FakeListener("web", port=p1), FakeListener("admin", port=p3)),
    )
    await manager.apply(second)
    assert manager._open["web"].server is server_before  # unchanged: same socket
    assert await refused(p2)
    assert (await request(p3, get())).status == 200
    third = FakeTable([("/", forward())], [c], (FakeListener("admin", port=p3),))
    await manager.apply(third)
    assert await refused(p1) and manager.names == ("admin",)
    await manager.close()
    assert await refused(p3)
    await backend.close()


async def test_a_port_that_cannot_be_bound_rejects_the_table_and_keeps_the_old_one() -> None:
    backend = await Backend().start()
    holder = TableHolder()
    manager = ListenerManager(holder)
    old = FakeTable([("/", forward())], [cluster("backend", backend.port)])
    await manager.apply(old)
    port = manager.port("http")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    bad = FakeTable(
        [("/", forward())],
        [cluster("backend", backend.port)],
        (FakeListener("http", port=0), FakeListener("other", port=taken.getsockname()[1])),
    )
    with pytest.raises(ConfigRejected) as e:
        await manager.apply(bad)
    assert str(e.value).startswith("Listener other: address: cannot listen")
    assert holder.current is old and manager.names == ("http",)
    assert (await request(port, get())).status == 200
    taken.close()
    await manager.close()
    await backend.close()


async def test_changing_a_listener_kind_on_the_same_port_replaces_it() -> None:
    backend = await Backend().start()
    port = free_port()
    manager = ListenerManager()
    c = cluster("backend", backend.port)
    await manager.apply(FakeTable([("/", forward())], [c], (FakeListener("l", port=port),)))
    assert (await request(port, get())).status == 200
    tcp = FakeListener(
        "l", port=port, kind="tcp", route_config=None, tcp=Forward((WeightedCluster("backend"),))
    )
    await manager.apply(FakeTable([], [c], (tcp,)))
    # Through the TCP proxy the backend still answers HTTP, byte for byte.
    assert (await request(port, get())).status == 200
    assert manager._open["l"].kind == "tcp"
    await manager.close()
    await backend.close()


async def test_pooled_connections_to_removed_endpoints_are_drained() -> None:
    a, b = await Backend().start(), await Backend().start()
    manager = ListenerManager()
    await manager.apply(FakeTable([("/", forward())], [cluster("backend", a.port)]))
    port = manager.port("http")
    assert (await request(port, get())).status == 200
    assert manager.pool.idle_count(("127.0.0.1", a.port)) == 1
    await manager.apply(FakeTable([("/", forward())], [cluster("backend", b.port)]))
    assert manager.pool.idle_count(("127.0.0.1", a.port)) == 0
    assert (await request(port, get())).status == 200
    assert len(b.requests) == 1 and manager.pool.idle_count(("127.0.0.1", b.port)) == 1
    await manager.close()
    await a.close()
    await b.close()
