"""A live agent NACKs what it cannot apply; the server reports it; traffic keeps the old routes.

The control plane's validation refuses every regex construct RE2 lacks, so nothing it serves is
naturally refused by the agent's regex compiler: the route test teaches the agent to refuse one
more construct (``/refused-by-the-agent``, a valid regex everywhere) to get a NACK.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agents import matching
from controlplane.xds import ROUTE
from tests.agents.live_support import (
    HOST,
    Client,
    backends,
    eventually,
    free_port,
    hello_mesh,
    live_agent,
    split_service,
    subsets_rule,
    write_atomically,
)

REFUSED = (
    "  - match:\n    - uri: {regex: /refused-by-the-agent}\n"
    "    route:\n    - destination: {host: hello}\n"
)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_nacked_route_keeps_the_old_table_and_the_server_logs_the_nack(
    tmp_path: Path, delta: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = (re.compile(r"/refused-by-the-agent"), "test constructs")
    monkeypatch.setattr(matching, "_UNSUPPORTED_RE2", (*matching._UNSUPPORTED_RE2, refused))
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
                    write_atomically(routes, split_service({"b": 100}, extra_rule=REFUSED))
                    await eventually(lambda: any(e["event"] == "xds_nack" for e in logs))
                (nack,) = [e for e in logs if e["event"] == "xds_nack"]
                assert (nack["type"], nack["kept_version"]) == ("RDS", kept)
                assert nack["rejected_version"] != kept
                assert nack["error_detail"] == (
                    f"RouteConfiguration {port}: virtual_hosts[hello.default.svc.cluster.local:"
                    f"{port}].routes[0].match.safe_regex: regex '/refused-by-the-agent': "
                    "RE2 has no test constructs"
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


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_a_listener_port_taken_is_nacked_and_other_updates_still_apply(
    tmp_path: Path, delta: bool
) -> None:
    port, taken_port, third_port = free_port(), free_port(), free_port()
    async with backends("a", "b") as running:
        config = tmp_path / "config"
        config.mkdir()
        mesh = config / "mesh.yaml"
        mesh.write_text(hello_mesh(port, {"a": running["a"]}))
        async with live_agent(config, port, delta=delta) as live:
            holder = socket.socket()
            holder.bind(("127.0.0.1", taken_port))
            holder.listen()
            client = live.client(HOST)
            other = Client(taken_port, "other.default.svc.cluster.local")
            try:
                with capture_logs() as logs:
                    write_atomically(config / "other.yaml", other_service("other", taken_port))
                    await eventually(lambda: any(e["event"] == "xds_nack" for e in logs))
                    assert [entry.port for entry in live.agent.table.listeners] == [port]
                    assert (await client.request("/")).backend == "a"

                    # endpoints of another service change meanwhile: applied, not NACKed
                    write_atomically(mesh, hello_mesh(port, running))

                    async def reaches_b() -> bool:
                        return (await client.request("/")).backend == "b"

                    await eventually(reaches_b)
                    holder.close()
                    if not delta:
                        # SotW: the listener is bound at the next listener update. In delta
                        # the server resends a NACKed resource only once it changes.
                        write_atomically(config / "third.yaml", other_service("third", third_port))

                        async def bound() -> bool:
                            try:
                                return (await other.request("/")).backend == "b"
                            except OSError:
                                await other.close()
                                return False

                        await eventually(bound)
                nacks = [e for e in logs if e["event"] == "xds_nack"]
                assert [n["type"] for n in nacks] == ["LDS"]
                assert nacks[0]["error_detail"].startswith(
                    f"Listener 127.0.0.1_{taken_port}: address: cannot listen: "
                )
            finally:
                holder.close()
                await client.close()
                await other.close()


def other_service(name: str, port: int) -> str:
    """Service ``name`` on ``port``, backed by the hello workloads."""
    return (
        "apiVersion: v1\nkind: Service\n"
        f"metadata: {{name: {name}, namespace: default}}\n"
        f"spec:\n  selector: {{app: hello}}\n  ports:\n  - {{name: http, port: {port}}}\n"
    )
