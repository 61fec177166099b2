"""A live agent NACKs what it cannot apply; the server reports it; traffic keeps the old routes.

The control plane accepts a possessive quantifier (Python's ``re`` compiles ``a++`` since 3.11)
but RE2, and so the agent and Envoy, do not: a natural NACK.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from controlplane.xds import ROUTE
from tests.agents.live_support import (
    HOST,
    backends,
    eventually,
    free_port,
    hello_mesh,
    live_agent,
    split_service,
    subsets_rule,
    write_atomically,
)

POSSESSIVE = "  - match:\n    - uri: {regex: /a++}\n    route:\n    - destination: {host: hello}\n"


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_nacked_route_keeps_the_old_table_and_the_server_logs_the_nack(
    tmp_path: Path, delta: bool
) -> None:
    port = free_port()
    async with backends("a", "b") as running:
        config = tmp_path / "config"
        config.mkdir()
        (config / "mesh.yaml").write_text(hello_mesh(port, running))
        (config / "rule.yaml").write_text(subsets_rule(["a", "b"]))
        routes = config / "routes.yaml"
        routes.write_text(split_service({"a": 100}))
        async with live_agent(config, port, delta=delta) as live:
            client = live.client(HOST)
            try:
                assert (await client.request("/x")).backend == "a"
                table = live.agent.table
                kept = live.agent.held.types[ROUTE].version
                with capture_logs() as logs:
                    write_atomically(routes, split_service({"b": 100}, extra_rule=POSSESSIVE))
                    await eventually(lambda: any(e["event"] == "xds_nack" for e in logs))
                (nack,) = [e for e in logs if e["event"] == "xds_nack"]
                assert (nack["type"], nack["kept_version"]) == ("RDS", kept)
                assert nack["rejected_version"] != kept
                assert nack["error_detail"] == (
                    f"RouteConfiguration {port}: virtual_hosts[hello.default.svc.cluster.local:"
                    f"{port}].routes[0].match.safe_regex: regex '/a++': "
                    "RE2 has no possessive quantifiers"
                )
                assert live.agent.table is table
                assert live.agent.held.types[ROUTE].version == kept
                for _ in range(20):
                    response = await client.request("/x")
                    assert (response.status, response.backend) == (200, "a")

                write_atomically(routes, split_service({"b": 100}))
                await eventually(lambda: live.agent.table is not table)
                for _ in range(20):
                    response = await client.request("/x")
                    assert (response.status, response.backend) == (200, "b")
            finally:
                await client.close()
