"""``pilotfish agent`` / ``python -m agents``: flags checked up front, one line per failure."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agents import cli
from agents.agent import Agent
from agents.node import NodeIdentity
from controlplane import cli as pilotfish_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def keep_logging_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configured logging caches loggers for good, which later capture_logs would miss."""
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_flags_become_agent_options() -> None:
    args = cli.build_parser().parse_args(
        [
            "--xds-server",
            "cp.local:18000",
            "--node-id",
            "gw-1",
            "--role",
            "gateway",
            "--labels",
            "istio=ingress,app=gw",
            "--bind-address",
            "[::1]",
            "--admin-address",
            "127.0.0.1:15099",
            "--cache-dir",
            "/var/cache/agent",
            "--delta",
            "--connect-timeout",
            "1500ms",
        ]
    )
    options = cli.options_from(args)
    assert options.node == NodeIdentity(
        "gw-1", role="gateway", labels={"istio": "ingress", "app": "gw"}, bind_address="::1"
    )
    assert (options.xds_server, options.admin_address, options.cache_dir) == (
        "cp.local:18000",
        "127.0.0.1:15099",
        Path("/var/cache/agent"),
    )
    assert (options.delta, options.connect_timeout) == (True, 1.5)


def test_defaults_are_a_sidecar_on_loopback_with_sotw() -> None:
    options = cli.options_from(
        cli.build_parser().parse_args(["--xds-server", "127.0.0.1:18000", "--node-id", "a"])
    )
    assert options.node == NodeIdentity("a", role="sidecar", labels={}, bind_address="127.0.0.1")
    assert (options.delta, options.connect_timeout, options.admin_address) == (
        False,
        10.0,
        "127.0.0.1:15001",
    )
    assert options.cache_dir is None


GOOD = ["--xds-server", "127.0.0.1:1", "--node-id", "a"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--node-id", "a"], "the following arguments are required: --xds-server"),
        ([*GOOD, "--xds-server", "nohost"], "argument --xds-server: 'nohost' is not HOST:PORT"),
        ([*GOOD, "--xds-server", "h:99999"], "argument --xds-server: 'h:99999' is not HOST:PORT"),
        ([*GOOD, "--node-id", " "], "argument --node-id: the node id must not be empty"),
        ([*GOOD, "--role", "mesh"], "argument --role: invalid choice: 'mesh'"),
        ([*GOOD, "--labels", "app"], "argument --labels: 'app' is not a label like key=value"),
        ([*GOOD, "--bind-address", "x"], "argument --bind-address: 'x' is not an IP address"),
        ([*GOOD, "--namespace", "Shop"], "argument --namespace: 'Shop' is not a namespace name"),
        ([*GOOD, "--connect-timeout", "soon"], "argument --connect-timeout: 'soon' is not a"),
        ([*GOOD, "--connect-timeout", "0s"], "argument --connect-timeout: '0s' is not a"),
        ([*GOOD, "--delta=yes"], "argument --delta: ignored explicit argument 'yes'"),
        ([*GOOD, "--event-loop", "trio"], "argument --event-loop: invalid choice: 'trio'"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"pilotfish agent: error: {message}")
    assert "Traceback" not in err


def test_cache_dir_that_is_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "file"
    file.write_text("")
    code = cli.main(["--xds-server", "127.0.0.1:1", "--node-id", "a", "--cache-dir", str(file)])
    assert code == 2
    assert capsys.readouterr().err == f"pilotfish agent: --cache-dir {file} is not a directory\n"


class _Table:
    version = ""


class _Listeners:
    def apply(self, table: Any) -> None:
        pass


def test_unreachable_control_plane_without_cache_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_init = Agent.__init__

    def with_fakes(self: Agent, options: Any, **kwargs: Any) -> None:
        real_init(
            self, options, build_table=lambda r, p=None, **kw: _Table(), listeners=_Listeners()
        )

    monkeypatch.setattr(Agent, "__init__", with_fakes)
    address = f"127.0.0.1:{closed_port()}"
    code = pilotfish_cli.main(
        [
            "agent",
            "--xds-server",
            address,
            "--node-id",
            "a",
            "--connect-timeout",
            "200ms",
            "--admin-address",
            "127.0.0.1:0",
        ]
    )
    assert code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(
        f"pilotfish agent: no configuration from the xDS server {address} within 0.2s "
        "and none cached ("
    )
    assert not any("Traceback" in line for line in lines)


def test_python_m_agents_runs_the_same_command_line() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "agents", "--xds-server", "x", "--node-id", "a"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "python -m agents: error: argument --xds-server: 'x' is not HOST:PORT"
    )


def test_pilotfish_help_lists_the_agent_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        pilotfish_cli.main(["--help"])
    assert "agent" in capsys.readouterr().out


def test_event_loop_auto_takes_uvloop_when_installed_and_asyncio_on_request() -> None:
    assert cli._loop_factory("asyncio") is None
    try:
        import uvloop
    except ImportError:
        assert cli._loop_factory("auto") is None
    else:
        assert cli._loop_factory("auto") is uvloop.new_event_loop


def test_a_taken_admin_port_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_init = Agent.__init__

    def with_fakes(self: Agent, options: Any, **kwargs: Any) -> None:
        real_init(
            self, options, build_table=lambda r, p=None, **kw: _Table(), listeners=_Listeners()
        )

    monkeypatch.setattr(Agent, "__init__", with_fakes)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli.main(
            [
                "--xds-server",
                "127.0.0.1:1",
                "--node-id",
                "a",
                "--admin-address",
                f"127.0.0.1:{port}",
            ]
        )
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"pilotfish agent: cannot serve admin on 127.0.0.1:{port}: Address already in use"
    )
