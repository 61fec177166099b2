"""What a new user meets on the command line: help, address errors, shutdown, diagnostics."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
# Servers started here never take the default admin port, which another may hold.
ADMIN = ("--admin-address", "127.0.0.1:0")

# Line 8 has a misspelt field.
BROKEN = """\
apiVersion: v1
kind: Service
metadata:
  name: reviews
spec:
  selector:
    app: reviews
  prots:
  - name: http
    port: 9080
"""


def _subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub: argparse.ArgumentParser = action.choices[name]
            return sub
    raise AssertionError("no subcommands")


def _agent_parser() -> argparse.ArgumentParser:
    from agents.cli import build_parser as build_agent_parser

    return build_agent_parser()


@pytest.mark.parametrize("command", ["serve", "validate", "demo", "agent"])
def test_every_flag_has_a_help_text(command: str) -> None:
    parser = _agent_parser() if command == "agent" else _subcommand(command)
    missing = [
        action.option_strings or [action.dest]
        for action in parser._actions
        if not action.help and not isinstance(action, argparse._HelpAction)
    ]
    assert missing == []


def test_serve_help_shows_the_xds_address_default() -> None:
    text = _subcommand("serve").format_help()
    assert "port 0 for any free one (127.0.0.1:18000)" in " ".join(text.split())


def _pilotfish(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controlplane", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _start_serve(config: str, state: Path, *flags: str, cwd: Path = ROOT) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "controlplane", "serve", "--config-dir", config]
    return subprocess.Popen(
        [*command, "--state-dir", str(state), "--xds-address", "127.0.0.1:0", *ADMIN, *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_serve_on_a_busy_port_says_so_in_one_line_and_exits_2(
    tmp_path: Path, busy_port: int
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    completed = _pilotfish(
        "serve",
        "--config-dir",
        str(config),
        "--state-dir",
        str(tmp_path / "state"),
        "--xds-address",
        f"127.0.0.1:{busy_port}",
    )
    assert (completed.returncode, completed.stdout, completed.stderr) == (
        2,
        "",
        f"pilotfish serve: port {busy_port} is already in use on 127.0.0.1; "
        "pick another with --xds-address\n",
    )


def test_serve_on_a_busy_admin_port_says_so_in_one_line_and_exits_2(
    tmp_path: Path, busy_port: int
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    completed = _pilotfish(
        "serve",
        "--config-dir",
        str(config),
        "--state-dir",
        str(tmp_path / "state"),
        "--xds-address",
        "127.0.0.1:0",
        "--admin-address",
        f"127.0.0.1:{busy_port}",
    )
    assert (completed.returncode, completed.stdout, completed.stderr) == (
        2,
        "",
        f"pilotfish serve: port {busy_port} is already in use on 127.0.0.1; "
        "pick another with --admin-address\n",
    )


def test_serve_admin_address_must_be_host_port_or_off(tmp_path: Path) -> None:
    completed = _pilotfish("serve", "--config-dir", str(tmp_path), "--admin-address", "15000")
    assert (completed.returncode, completed.stderr.splitlines()[-1]) == (
        2,
        "pilotfish serve: error: argument --admin-address: '15000' is not HOST:PORT "
        "(like 127.0.0.1:15000) or off",
    )


def test_a_second_serve_on_the_same_port_is_refused_rather_than_sharing_it(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    first = _start_serve(str(config), tmp_path / "state")
    try:
        address = _serving_address(first)
        port = int(address.rsplit(":", 1)[1])
        completed = _pilotfish(
            "serve",
            "--config-dir",
            str(config),
            "--state-dir",
            str(tmp_path / "state2"),
            "--xds-address",
            address,
        )
        assert (completed.returncode, completed.stderr) == (
            2,
            f"pilotfish serve: port {port} is already in use on 127.0.0.1; "
            "pick another with --xds-address\n",
        )
    finally:
        first.terminate()
        first.wait(timeout=20)
        assert first.stderr is not None
        first.stderr.close()


def test_serve_with_a_port_and_no_host_is_a_usage_error_naming_host_port(
    tmp_path: Path,
) -> None:
    completed = _pilotfish("serve", "--config-dir", str(tmp_path), "--xds-address", "18734")
    assert (completed.returncode, completed.stdout, completed.stderr) == (
        2,
        "",
        "usage: pilotfish serve [flags]; 'pilotfish serve --help' lists them\n"
        "pilotfish serve: error: argument --xds-address: '18734' is not HOST:PORT, "
        "like 127.0.0.1:18000, 0.0.0.0:18000 or [::]:18000\n",
    )


def test_serve_on_a_host_that_does_not_resolve_says_so_in_one_line_and_exits_2(
    tmp_path: Path,
) -> None:
    (tmp_path / "config").mkdir()
    completed = _pilotfish(
        "serve",
        "--config-dir",
        str(tmp_path / "config"),
        "--state-dir",
        str(tmp_path / "state"),
        "--xds-address",
        "no-such-host.invalid:18000",
    )
    assert completed.returncode == 2
    assert completed.stderr.startswith(
        "pilotfish serve: cannot listen on no-such-host.invalid:18000: no-such-host.invalid: "
    )
    assert completed.stderr.endswith("; check --xds-address\n")
    assert completed.stderr.count("\n") == 1


def _serving_address(process: subprocess.Popen[str]) -> str:
    assert process.stderr is not None
    for line in process.stderr:
        if line.startswith("pilotfish: serving xDS on "):
            return line.split()[-1]
    raise AssertionError(f"serve exited with {process.wait()} before serving")


def test_serve_with_nothing_to_drain_exits_0_at_once_on_sigterm_not_after_the_grace(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    process = _start_serve(str(config), tmp_path / "state", "--grace", "30s")
    try:
        _serving_address(process)
        process.send_signal(signal.SIGTERM)
        # A wait for the 30 s grace would time out here.
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()


def test_serve_with_an_idle_stream_connected_ends_it_and_exits_0_without_waiting_the_grace(
    tmp_path: Path,
) -> None:
    import grpc
    from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

    config = tmp_path / "config"
    config.mkdir()
    process = _start_serve(str(config), tmp_path / "state", "--grace", "30s")
    try:
        address = _serving_address(process)
        with grpc.insecure_channel(address) as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            request = discovery_pb2.DiscoveryRequest(
                type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster"
            )
            request.node.id = "sidecar-1"
            stop = threading.Event()

            def requests() -> Iterator[discovery_pb2.DiscoveryRequest]:
                yield request
                stop.wait(20)

            responses = stub.StreamAggregatedResources(requests(), timeout=20)
            next(responses)
            process.send_signal(signal.SIGTERM)
            with pytest.raises(grpc.RpcError) as ended:
                next(responses)
            stop.set()
            assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
            # A wait for the 30 s grace would time out here.
            assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()


def test_serve_logs_diagnostics_with_the_fields_and_paths_of_validate_json(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "reviews.yaml").write_text(BROKEN)
    validated = _pilotfish("validate", "-o", "json", "./config/", cwd=tmp_path)
    process = _start_serve("./config/", tmp_path / "state", "--log-format", "json", cwd=tmp_path)
    events: list[dict[str, object]] = []
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        for line in process.stderr:
            if line.startswith("pilotfish: serving xDS on ") or time.monotonic() > deadline:
                break
            events.append(json.loads(line))
    finally:
        process.terminate()
        process.wait(timeout=20)
        assert process.stderr is not None
        process.stderr.close()
    errors = [event for event in events if event["event"] == "config_error"]
    assert [(e["level"], len(str(e["config_version"]))) for e in errors] == [("error", 12)]
    context = ("event", "level", "timestamp", "config_version")
    logged = [{key: e[key] for key in e if key not in context} for e in errors]
    assert validated.returncode == 1
    assert (
        logged
        == json.loads(validated.stdout)["messages"]
        == [
            {
                "severity": "error",
                "code": "PF110",
                "file": "config/reviews.yaml",
                "line": 8,
                "column": 3,
                "resource": "Service default/reviews",
                "field": "spec.prots",
                "message": "unknown field 'prots' in ServiceSpec; did you mean 'ports'?",
            }
        ]
    )


@pytest.mark.parametrize(("given", "expected"), [(None, 8 * 1024), ("0", 0), ("64KiB", 65536)])
def test_serve_read_buffer_bytes_reaches_the_xds_server_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str | None, expected: int
) -> None:
    from controlplane import cli

    seen: list[int] = []

    async def capture(options: object, grace: float) -> None:
        seen.append(options.server.read_buffer_bytes)  # type: ignore[attr-defined]

    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    monkeypatch.setattr(cli, "_run_until_signalled", capture)
    (tmp_path / "config").mkdir()
    argv = ["serve", "--config-dir", str(tmp_path / "config"), "--admin-address", "off"]
    argv += ["--xds-address", "127.0.0.1:0", "--state-dir", str(tmp_path / "state")]
    if given is not None:
        argv += ["--read-buffer-bytes", given]
    assert cli.main(argv) == 0
    assert seen == [expected]


def test_serve_read_buffer_bytes_that_is_no_size_is_a_one_line_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "controlplane",
            "serve",
            "--config-dir",
            str(tmp_path),
            "--read-buffer-bytes",
            "lots",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "pilotfish serve: error: argument --read-buffer-bytes: 'lots' is not a size like "
        "65536, 64KiB or 1.5MiB"
    )
