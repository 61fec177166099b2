"""Retries and per-try timeouts across hosts, partial faults and mirrors, listeners come and go.

All on a live control plane and agent with echo backends.
"""

from __future__ import annotations

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
    live_agent,
    subsets_rule,
    write_atomically,
)

ROUTES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hello, namespace: default}
spec:
  hosts: [hello]
  http:
  - name: per-try
    match:
    - uri: {prefix: /per-try}
    retries:
      attempts: 2
      perTryTimeout: 0.2s
      retryOn: 5xx
    route:
    - destination: {host: hello}
  - name: post
    match:
    - uri: {prefix: /post}
    retries:
      attempts: 1
      retryOn: 5xx
    route:
    - destination: {host: hello, subset: a}
  - name: partial-faults
    match:
    - uri: {prefix: /partial}
    fault:
      abort:
        httpStatus: 418
        percentage: {value: 50}
    mirrorPercentage: {value: 50}
    mirror: {host: hello, subset: b}
    route:
    - destination: {host: hello, subset: a}
  - route:
    - destination: {host: hello}
"""

DEAD_ENDPOINT = """\
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: dead, namespace: default}}
spec:
  address: 127.0.0.1
  labels: {{app: hello, name: dead}}
  ports: {{http: {port}}}
"""


async def test_a_dead_endpoint_costs_no_request_with_istios_default_retries(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with backends("a", "b") as running:
        config = tmp_path / "config"
        config.mkdir()
        mesh = hello_mesh(port, running) + DEAD_ENDPOINT.format(port=free_port())
        (config / "mesh.yaml").write_text(mesh)
        async with live_agent(config, port) as live:
            client = live.client(HOST)
            try:
                answered: Counter[tuple[int, str]] = Counter()
                for _ in range(60):
                    response = await client.request("/")
                    answered[response.status, response.backend] += 1
            finally:
                await client.close()
            assert set(answered) == {(200, "a"), (200, "b")}
            assert sum(answered.values()) == 60


async def test_retries_per_try_timeouts_post_bodies_partial_faults_and_mirrors(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with backends("a", "b") as running:
        config = tmp_path / "config"
        config.mkdir()
        (config / "mesh.yaml").write_text(hello_mesh(port, running))
        (config / "rule.yaml").write_text(
            subsets_rule(["a", "b"], "    loadBalancer: {simple: ROUND_ROBIN}\n")
        )
        (config / "routes.yaml").write_text(ROUTES)
        async with live_agent(config, port) as live:
            client = live.client(HOST)
            try:
                running["a"].delay = 1.0  # the first try times out; the retry goes to b
                for _ in range(4):
                    response = await client.request("/per-try")
                    assert (response.status, response.backend) == (200, "b")
                running["a"].delay = 0.0

                running["a"].fail = 1
                posted = await client.request("/post", "POST", body=b"payload-1")
                assert (posted.status, posted.backend) == (200, "a")
                assert [(s.method, s.body) for s in running["a"].seen[-2:]] == [
                    ("POST", b"payload-1"),
                    ("POST", b"payload-1"),
                ]

                before_a, before_b = len(running["a"].seen), len(running["b"].seen)
                statuses: Counter[int] = Counter()
                n = 400
                for _ in range(n):
                    statuses[(await client.request("/partial")).status] += 1
                # binomial(400, 0.5): 5 sigma is 50
                assert set(statuses) == {200, 418}
                assert abs(statuses[418] - n / 2) <= 50
                assert len(running["a"].seen) - before_a == statuses[200]
                await eventually(lambda: len(running["b"].seen) > before_b)
                mirrored = len(running["b"].seen) - before_b
                # mirrors only what was forwarded (faults come first), half of it
                assert abs(mirrored - statuses[200] / 2) <= 5 * (statuses[200] / 4) ** 0.5
            finally:
                await client.close()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_service_added_gets_a_listener_and_a_service_removed_loses_it(
    tmp_path: Path, delta: bool
) -> None:
    port, second_port = free_port(), free_port()
    async with backends("a") as running:
        config = tmp_path / "config"
        config.mkdir()
        (config / "mesh.yaml").write_text(hello_mesh(port, running))
        async with live_agent(config, port, delta=delta) as live:
            second = config / "second.yaml"
            write_atomically(
                second,
                hello_mesh(second_port, running)
                .replace("name: hello", "name: second")
                .replace("name: a,", "name: a2,")
                .replace("{app: hello", "{app: second"),
            )
            client = Client(second_port, "second.default.svc.cluster.local")

            async def served() -> bool:
                try:
                    return (await client.request("/")).backend == "a"
                except OSError:
                    await client.close()
                    return False

            await eventually(served)
            await client.close()
            second.unlink()

            async def refused() -> bool:
                probe = Client(second_port, "second.default.svc.cluster.local")
                try:
                    await probe.request("/")
                except OSError:
                    return True
                finally:
                    await probe.close()
                return False

            await eventually(refused)
            first = live.client(HOST)
            try:
                assert (await first.request("/")).backend == "a"
            finally:
                await first.close()
