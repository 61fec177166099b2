"""Killing the control plane (SIGKILL of ``pilotfish serve``) interrupts no traffic.

Requests flow without a pause while the control plane dies; an agent restarted while it is
down serves from its cache at once; when the control plane comes back on the same address the
agent reconnects and applies what was edited in the meantime, still without a failed request.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

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


class Traffic:
    """Sends requests back to back on one keep-alive connection until stopped."""

    def __init__(self, port: int) -> None:
        self.client = Client(port, HOST)
        self.answers: Counter[tuple[int, str]] = Counter()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while not self._stop.is_set():
                response = await self.client.request("/")
                self.answers[response.status, response.backend] += 1
                await asyncio.sleep(0)
        finally:
            await self.client.close()

    async def after(self, n: int) -> None:
        """Wait until ``n`` more requests were answered."""
        target = self.total + n
        await eventually(lambda: self.total >= target or self._task.done())

    @property
    def total(self) -> int:
        return sum(self.answers.values())

    async def stop(self) -> Counter[tuple[int, str]]:
        self._stop.set()
        await self._task
        return self.answers


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_killing_the_control_plane_interrupts_no_traffic_and_the_cache_restarts_it(
    tmp_path: Path, delta: bool
) -> None:
    port = free_port()
    cache = tmp_path / "cache"
    async with backends("a", "b") as running:
        config = tmp_path / "config"
        config.mkdir()
        (config / "mesh.yaml").write_text(hello_mesh(port, running))
        (config / "rule.yaml").write_text(subsets_rule(["a", "b"]))
        routes = config / "routes.yaml"
        routes.write_text(split_service({"a": 100}))
        served = serve(config, tmp_path)
        first = sidecar(served.address, cache, delta=delta)
        try:
            await first.start()
            traffic = Traffic(port)
            await traffic.after(200)
            served.kill()
            await eventually(lambda: first.client.last_error != "")
            await traffic.after(500)
            answers = await traffic.stop()
            assert set(answers) == {(200, "a")}
        finally:
            await first.close()
            if served.process.poll() is None:
                served.kill()

        second = sidecar(served.address, cache, delta=delta)  # the control plane is still down
        try:
            await second.start()
            traffic = Traffic(port)
            await traffic.after(200)
            write_atomically(routes, split_service({"b": 100}))
            again = serve(config, tmp_path, served.address)
            try:
                await eventually(lambda: traffic.answers[200, "b"] >= 200)
                answers = await traffic.stop()
            finally:
                again.kill()
        finally:
            await second.close()
        assert set(answers) == {(200, "a"), (200, "b")}
