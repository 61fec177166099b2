"""docker-compose.yml, the Dockerfile and examples/docker-mesh agree with each other.

Docker does not run here, so these tests read the files: every command must
parse with the parser of the program it names, the ports the containers
dial, listen on and publish must match, and the backends must be the
endpoints the config lists. The slow test runs the docker-mesh config for
real, with the container names replaced by ``localhost``: a DNS cluster in
Envoy, resolving names as it would inside compose.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane import cli
from controlplane.demo.backends import Backends, Client, free_ports
from controlplane.demo.envoy import find_envoy, gateway_metadata
from tests.interop.conftest import ControlPlaneThread, start_envoy, write_docs

ROOT = Path(__file__).resolve().parents[2]
MESH = ROOT / "examples" / "docker-mesh"
HELLO = ("hello-1", "hello-2", "hello-3")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def mesh_docs() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((MESH / "hello.yaml").read_text()) if doc]


def spec_of(kind: str) -> dict[str, Any]:
    (doc,) = [doc for doc in mesh_docs() if doc["kind"] == kind]
    spec: dict[str, Any] = doc["spec"]
    return spec


def parse(command: list[str]) -> tuple[str, argparse.Namespace]:
    """The program a compose command runs (``pilotfish`` or a module) and its parsed arguments."""
    if command[0] == "pilotfish":
        return "pilotfish", cli.build_parser().parse_args(command[1:])
    assert command[:2] == ["python", "-m"], command
    module = importlib.import_module(command[2])
    parser: argparse.ArgumentParser = module.build_parser()
    return command[2], parser.parse_args(command[3:])


def test_compose_runs_the_control_plane_three_backends_and_a_gateway_from_one_image() -> None:
    found = services()
    assert sorted(found) == ["controlplane", "gateway", "hello-1", "hello-2", "hello-3"]
    assert {(s["build"], s["image"]) for s in found.values()} == {(".", "pilotfish-demo:latest")}


def test_every_python_module_a_service_runs_exists_and_has_a_main() -> None:
    modules = {
        command[2]
        for service in services().values()
        if (command := service["command"])[:2] == ["python", "-m"]
    }
    assert modules == {"controlplane.demo.backends", "controlplane.demo.envoy"}
    for name in modules:
        assert importlib.util.find_spec(name) is not None
        assert callable(importlib.import_module(name).main)


def test_the_control_plane_serves_the_mounted_docker_mesh_on_the_port_the_gateway_dials() -> None:
    found = services()
    program, serve = parse(found["controlplane"]["command"])
    assert (program, serve.command, serve.config_dir, serve.xds_address) == (
        "pilotfish",
        "serve",
        "/config",
        "0.0.0.0:18000",
    )
    assert found["controlplane"]["volumes"] == ["./examples/docker-mesh:/config:ro"]
    assert MESH.is_dir()
    program, gateway = parse(found["gateway"]["command"])
    assert (program, gateway.xds_host, gateway.xds_port) == (
        "controlplane.demo.envoy",
        "controlplane",
        18000,
    )
    assert set(found["gateway"]["depends_on"]) == {"controlplane", *HELLO}


def test_the_gateway_has_the_labels_the_gateway_selects_and_publishes_its_port() -> None:
    gateway_service = services()["gateway"]
    _, gateway = parse(gateway_service["command"])
    spec = spec_of("Gateway")
    assert (gateway.role, dict(gateway.label), gateway.bind_address) == (
        "gateway",
        spec["selector"],
        None,  # listeners on 0.0.0.0, reachable from outside the container
    )
    (server,) = spec["servers"]
    published = [port.rsplit(":", 2) for port in gateway_service["ports"]]
    port = str(server["port"]["number"])
    assert published == [["127.0.0.1", port, port]]


def test_each_backend_is_named_after_its_service_and_listens_on_its_endpoint_port() -> None:
    found = services()
    endpoints = {e["address"]: e["ports"]["http"] for e in spec_of("ServiceEntry")["endpoints"]}
    assert sorted(endpoints) == list(HELLO)
    for name in HELLO:
        program, backend = parse(found[name]["command"])
        assert (program, backend.name, backend.host, backend.port) == (
            "controlplane.demo.backends",
            name,
            "0.0.0.0",
            endpoints[name],
        )


def test_the_docker_mesh_resolves_its_backends_by_dns() -> None:
    spec = spec_of("ServiceEntry")
    assert (spec["hosts"], spec["resolution"], spec["location"]) == (
        ["hello.default.svc.cluster.local"],
        "DNS",
        "MESH_INTERNAL",
    )


def test_pilotfish_validate_finds_nothing_in_examples_docker_mesh(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["validate", str(MESH)]) == 0
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "0 error(s), 0 warning(s)\n")


def test_the_dockerfile_installs_the_demo_extra_on_python_3_11_slim() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    assert "RUN pip install '.[demo]' && rm -rf /src" in lines
    copied = [line.split()[1] for line in lines if line.startswith("COPY ")]
    assert copied == ["pyproject.toml", "controlplane", "agents", "pilotfish"]
    assert all((ROOT / path).exists() for path in ["README.md", *copied])


# -- the docker-mesh config, for real ------------------------------------------------


@pytest.fixture
def envoy_binary() -> str:
    binary = find_envoy()
    if binary is None:
        pytest.skip("no envoy binary on PATH or next to the interpreter")
    return binary


@pytest.fixture
def backends() -> Iterator[Backends]:
    with Backends(HELLO) as started:
        yield started


@pytest.mark.slow
def test_the_docker_mesh_config_balances_round_robin_when_the_names_resolve(
    envoy_binary: str, backends: Backends, tmp_path: Path
) -> None:
    (gateway_port,) = free_ports(1)
    docs = mesh_docs()
    for doc in docs:
        if doc["kind"] == "ServiceEntry":
            for endpoint in doc["spec"]["endpoints"]:
                port = backends.port(endpoint["address"])
                endpoint.update(address="localhost", ports={"http": port})
        elif doc["kind"] == "Gateway":
            doc["spec"]["servers"][0]["port"]["number"] = gateway_port
    write_docs(tmp_path / "config" / "hello.yaml", docs)
    labels = spec_of("Gateway")["selector"]

    with ExitStack() as stack:
        plane = stack.enter_context(ControlPlaneThread(tmp_path / "config"))
        gateway = stack.enter_context(
            start_envoy(envoy_binary, tmp_path, plane.port, "gateway", gateway_metadata(labels))
        )
        cluster = "outbound|8080||hello.default.svc.cluster.local"
        assert gateway.cluster_hosts()[cluster] == sorted(
            f"127.0.0.1:{backends.port(name)}" for name in HELLO
        )
        with Client(gateway_port) as client:
            answered = client.sequence(9)
    assert sorted(answered[:3]) == list(HELLO)
    assert answered == answered[:3] * 3
