"""``pilotfish serve`` and ``pilotfish agent`` as real processes on the bookinfo example.

The agent process runs as shipped (uvloop when installed); the test talks to it over its
listeners and admin port only, kills the control plane with SIGKILL mid-traffic, stops the agent
with SIGTERM and restarts it from its cache while the control plane is still down.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.agents.live_support import (
    BOOKINFO_WORKLOADS,
    HOST,
    Client,
    backends,
    bookinfo_config,
    child_env,
    eventually,
    free_port,
    hello_mesh,
    serve,
    subsets_rule,
    write_atomically,
)
from tests.agents.test_live_swaps import ALL_TO_C, CHUNK, CONNECTIONS, REQUESTS, SPLIT

REVIEWS = "reviews.bookinfo.svc.cluster.local"
RATINGS = "ratings.bookinfo.svc.cluster.local"


def start_agent(xds: str, admin: int, cache: Path, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "agents",
        "--xds-server",
        xds,
        "--node-id",
        "reviews-1",
        "--admin-address",
        f"127.0.0.1:{admin}",
        "--cache-dir",
        str(cache),
        "--connect-timeout",
        "15s",
        "--log-format",
        "json",
    ]
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=child_env())


async def ready(admin: int) -> bool:
    try:
        client = Client(admin, "admin")
        try:
            return (await client.request("/ready")).status == 200
        finally:
            await client.close()
    except OSError:
        return False


async def test_serve_and_agent_processes_route_bookinfo_and_survive_the_control_plane(
    tmp_path: Path,
) -> None:
    async with backends(*BOOKINFO_WORKLOADS) as running:
        port = free_port()
        config = bookinfo_config(tmp_path, running, port)

        served = serve(config, tmp_path)
        admin, cache, log = free_port(), tmp_path / "cache", tmp_path / "agent.log"
        agent = start_agent(served.address, admin, cache, log)
        try:
            await eventually(lambda: ready(admin), timeout=20)
            reviews, ratings = Client(port, REVIEWS), Client(port, RATINGS)
            jason = await reviews.request("/reviews/1", headers={"end-user": "jason"})
            assert (jason.status, jason.backend) == (200, "reviews-v2")
            aborted = await ratings.request("/ratings/1", headers={"x-test-fault": "abort"})
            assert (aborted.status, aborted.headers["x-pilotfish-error"]) == (503, "fault_abort")

            answered: Counter[tuple[int, str]] = Counter()
            for _ in range(100):
                answered[(r := await reviews.request("/reviews/2")).status, r.backend] += 1
            served.kill()
            await asyncio.sleep(0.3)
            for _ in range(100):
                answered[(r := await reviews.request("/reviews/2")).status, r.backend] += 1
            assert set(answered) == {(200, "reviews-v1"), (200, "reviews-v3")}
            assert sum(answered.values()) == 200
            await reviews.close()
            await ratings.close()

            os.kill(agent.pid, signal.SIGTERM)
            assert await asyncio.to_thread(agent.wait, 10) == 0

            agent = start_agent(served.address, admin, cache, log)  # no control plane now
            await eventually(lambda: ready(admin), timeout=20)
            again = Client(port, REVIEWS)
            try:
                jason = await again.request("/reviews/1", headers={"end-user": "jason"})
                assert (jason.status, jason.backend) == (200, "reviews-v2")
            finally:
                await again.close()
        finally:
            if agent.poll() is None:
                os.kill(agent.pid, signal.SIGKILL)
                agent.wait(5)
            if served.process.poll() is None:
                served.kill()


async def test_the_agent_process_loses_no_request_across_edits_every_100ms(
    tmp_path: Path,
) -> None:
    """The swap test again with the agent as shipped (its own process and event loop)."""
    port = free_port()
    async with backends("a", "b", "c") as running:
        config = tmp_path / "config"
        config.mkdir()
        (config / "mesh.yaml").write_text(hello_mesh(port, running))
        (config / "rule.yaml").write_text(subsets_rule(["a", "b", "c"]))
        routes = config / "routes.yaml"
        routes.write_text(SPLIT)
        served = serve(config, tmp_path)
        admin, log = free_port(), tmp_path / "agent.log"
        agent = start_agent(served.address, admin, tmp_path / "cache", log)
        done = asyncio.Event()

        def swaps() -> int:
            return log.read_text().count('"agent_config_applied"')

        async def edit() -> int:
            for edits, text in enumerate(itertools.cycle((ALL_TO_C, SPLIT))):
                if done.is_set():
                    return edits
                write_atomically(routes, text)
                await asyncio.sleep(0.1)
            raise AssertionError("unreachable")

        statuses: Counter[tuple[int, str]] = Counter()

        async def send(client: Client, n: int) -> None:
            try:
                for i in range(n):
                    if i and i % CHUNK == 0:
                        await eventually(lambda chunk=i // CHUNK: swaps() >= base + chunk)
                    response = await client.request(f"/r/{i}")
                    statuses[response.status, response.backend] += 1
            finally:
                await client.close()

        try:
            await eventually(lambda: ready(admin), timeout=20)
            base = swaps()
            editor = asyncio.create_task(edit())
            try:
                await asyncio.gather(
                    *(send(Client(port, HOST), REQUESTS // CONNECTIONS) for _ in range(CONNECTIONS))
                )
            finally:
                done.set()
                edits = await editor
            assert set(statuses) <= {(200, "a"), (200, "b"), (200, "c")}, statuses
            assert sum(statuses.values()) == REQUESTS
            assert statuses[200, "c"] > 0 and statuses[200, "a"] + statuses[200, "b"] > 0
            assert edits >= REQUESTS // CONNECTIONS // CHUNK - 1
        finally:
            if agent.poll() is None:
                os.kill(agent.pid, signal.SIGKILL)
                agent.wait(5)
            served.kill()
