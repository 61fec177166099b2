"""Table swaps under load lose no request.

``pilotfish serve`` runs as a subprocess (on the other core) while a live agent carries 10,000
keep-alive requests over a few connections; every 100 ms the VirtualService is rewritten to flip
between a 50/50 split of ``a`` and ``b`` and everything to ``c``. Every request must get a 200
from one of them, and both configurations must have carried traffic.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.agents.live_support import (
    HOST,
    Client,
    backends,
    eventually,
    free_port,
    hello_mesh,
    serve,
    sidecar,
    split_service,
    subsets_rule,
    write_atomically,
)

REQUESTS = 10_000
CONNECTIONS = 4
CHUNK = 250
SPLIT = split_service({"a": 50, "b": 50})
ALL_TO_C = split_service({"c": 100})


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_live_edits_every_100ms_under_10000_requests_lose_none(
    tmp_path: Path, delta: bool
) -> None:
    port = free_port()
    async with backends("a", "b", "c") as running:
        config = tmp_path / "config"
        config.mkdir()
        (config / "mesh.yaml").write_text(hello_mesh(port, running))
        (config / "rule.yaml").write_text(subsets_rule(["a", "b", "c"]))
        routes = config / "routes.yaml"
        routes.write_text(SPLIT)
        served = serve(config, tmp_path)
        agent = sidecar(served.address, delta=delta)
        try:
            await agent.start()
            statuses: Counter[tuple[int, str]] = Counter()
            sent = 0
            done = asyncio.Event()

            def swaps() -> int:
                return sum(1 for e in logs if e["event"] == "agent_config_applied")

            async def send(client: Client, n: int) -> None:
                nonlocal sent
                try:
                    for i in range(n):
                        if i and i % CHUNK == 0:  # however fast the machine, swaps interleave
                            await eventually(lambda chunk=i // CHUNK: swaps() >= chunk)
                        response = await client.request(f"/r/{i}")
                        statuses[response.status, response.backend] += 1
                        sent += 1
                finally:
                    await client.close()

            async def edit() -> int:
                for edits, text in enumerate(itertools.cycle((ALL_TO_C, SPLIT))):
                    if done.is_set():
                        return edits
                    write_atomically(routes, text)
                    await asyncio.sleep(0.1)
                raise AssertionError("unreachable")

            logs: list[dict[str, object]]
            with capture_logs() as logs:
                editor = asyncio.create_task(edit())
                clients = [Client(port, HOST) for _ in range(CONNECTIONS)]
                try:
                    await asyncio.gather(*(send(c, REQUESTS // CONNECTIONS) for c in clients))
                finally:
                    done.set()
                    edits = await editor
            assert sent == REQUESTS
            assert set(statuses) <= {(200, "a"), (200, "b"), (200, "c")}, statuses
            assert sum(statuses.values()) == REQUESTS
            assert statuses[200, "c"] > 0 and statuses[200, "a"] + statuses[200, "b"] > 0
            assert edits >= REQUESTS // CONNECTIONS // CHUNK - 1
            assert swaps() >= REQUESTS // CONNECTIONS // CHUNK - 1
            assert [c.connections for c in clients] == [1] * CONNECTIONS

            write_atomically(routes, ALL_TO_C)
            last = Client(port, HOST)
            try:

                async def settled() -> bool:
                    return (await last.request("/")).backend == "c"

                await eventually(settled)
                assert {(await last.request("/")).backend for _ in range(20)} == {"c"}
            finally:
                await last.close()
        finally:
            await agent.close()
            served.kill()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_endpoints_removed_and_added_under_load_lose_no_request_and_are_drained(
    tmp_path: Path, delta: bool
) -> None:
    port = free_port()
    async with backends("a", "b", "c") as running:
        config = tmp_path / "config"
        config.mkdir()
        mesh = config / "mesh.yaml"
        mesh.write_text(hello_mesh(port, {n: running[n] for n in ("a", "b")}))
        served = serve(config, tmp_path)
        agent = sidecar(served.address, delta=delta)
        try:
            await agent.start()
            statuses: Counter[tuple[int, str]] = Counter()
            done = asyncio.Event()

            async def send(client: Client) -> None:
                try:
                    while not done.is_set():
                        response = await client.request("/")
                        statuses[response.status, response.backend] += 1
                finally:
                    await client.close()

            senders = [asyncio.create_task(send(Client(port, HOST))) for _ in range(CONNECTIONS)]
            try:
                await eventually(lambda: statuses[200, "a"] >= 100)
                assert running["a"].connections >= 1
                write_atomically(mesh, hello_mesh(port, {n: running[n] for n in ("b", "c")}))
                await eventually(lambda: statuses[200, "c"] >= 100)
                seen_by_a = len(running["a"].seen)
                await eventually(lambda: statuses[200, "c"] >= 1000)
            finally:
                done.set()
                await asyncio.gather(*senders)
            assert len(running["a"].seen) == seen_by_a  # a gets nothing once c gets traffic
            await eventually(lambda: running["a"].connections == 0)  # drained, then closed
            assert set(statuses) == {(200, "a"), (200, "b"), (200, "c")}, statuses
        finally:
            await agent.close()
            served.kill()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_request_in_flight_finishes_on_its_table_when_its_endpoint_is_removed(
    tmp_path: Path, delta: bool
) -> None:
    port = free_port()
    async with backends("a", "b") as running:
        config = tmp_path / "config"
        config.mkdir()
        mesh = config / "mesh.yaml"
        mesh.write_text(hello_mesh(port, {"a": running["a"]}))
        served = serve(config, tmp_path)
        agent = sidecar(served.address, delta=delta)
        slow, fresh = Client(port, HOST), Client(port, HOST)
        try:
            await agent.start()
            assert (await slow.request("/warm")).backend == "a"
            running["a"].delay = 1.0
            in_flight = asyncio.create_task(slow.request("/slow"))
            await eventually(lambda: len(running["a"].seen) == 2)
            table = agent.table
            write_atomically(mesh, hello_mesh(port, {"b": running["b"]}))
            await eventually(lambda: agent.table is not table)
            assert (await fresh.request("/new")).backend == "b"
            assert not in_flight.done()
            answer = await in_flight
            assert (answer.status, answer.backend, answer.json()["path"]) == (200, "a", "/slow")
            await eventually(lambda: running["a"].connections == 0)
            assert (await slow.request("/after")).backend == "b"  # same client connection
        finally:
            await slow.close()
            await fresh.close()
            await agent.close()
            served.kill()
