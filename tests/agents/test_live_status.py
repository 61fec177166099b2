"""A NACK provoked on purpose in a live agent shows up in ``pilotfish status`` with its reason."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agents import matching
from controlplane.cli import main
from tests.agents.live_support import (
    backends,
    eventually,
    free_port,
    hello_mesh,
    live_agent,
    split_service,
    subsets_rule,
    write_atomically,
)
from tests.agents.test_live_nack import REFUSED


async def status(address: str, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    capsys.readouterr()
    # The server's logs (on the same stdout) are captured away meanwhile.
    with capture_logs():
        assert await asyncio.to_thread(main, ["status", "--server", address, "-o", "json"]) == 0
    data: dict[str, object] = json.loads(capsys.readouterr().out)
    return data


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
async def test_an_agent_nack_shows_in_status_with_its_reason_until_fixed(
    tmp_path: Path,
    delta: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
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
            address = live.plane.address
            states: dict[str, object] = {}

            async def synced() -> bool:
                [proxy] = (await status(address, capsys))["proxies"]  # type: ignore[misc]
                states.update({t: v["state"] for t, v in proxy["types"].items()})
                return set(states.values()) == {"SYNCED"}

            await eventually(synced)
            assert sorted(states) == ["CDS", "EDS", "LDS", "RDS"]

            write_atomically(routes, split_service({"b": 100}, extra_rule=REFUSED))
            rds: dict[str, object] = {}

            async def nacked() -> bool:
                [proxy] = (await status(address, capsys))["proxies"]  # type: ignore[misc]
                rds.update(proxy["types"]["RDS"])
                return rds["state"] == "NACKED"

            await eventually(nacked)
            assert rds["nack"]["message"] == (  # type: ignore[index]
                f"RouteConfiguration {port}: virtual_hosts[hello.default.svc.cluster.local:"
                f"{port}].routes[0].match.safe_regex: regex '/refused-by-the-agent': "
                "RE2 has no test constructs"
            )
            assert rds["acked"] != rds["sent"]

            capsys.readouterr()
            with capture_logs():
                assert await asyncio.to_thread(main, ["status", "--server", address]) == 0
            table = capsys.readouterr().out
            assert "RDS NACKED at " in table
            assert table.rstrip().endswith("RE2 has no test constructs")

            write_atomically(routes, split_service({"b": 100}))
            await eventually(synced)
