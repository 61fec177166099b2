"""docker-compose.yml, the Dockerfile and examples/docker-mesh agree with each other.

Docker does not run here (no compose plugin), so the compose file is checked
by ``docker-compose config`` where that is installed (Debian's package; the
test skips otherwise) and always against the structure of the Compose
specification that it uses (keys, ``network_mode: service:...``,
``depends_on`` conditions, volumes, ports). Every command a container runs
is a real command line: each is parsed by the parser of the program it
names, and the gateway's bootstrap command is run for real (and the
bootstrap checked by ``envoy --mode validate`` when Envoy is installed). The
ports the containers dial, listen on, scrape and publish must match each
other and the mesh's YAML. The slow test runs the compose commands
themselves as local processes, container names resolving to ``localhost``,
and sends traffic through them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents import cli as agent_cli
from controlplane import cli
from controlplane.demo.envoy import find_envoy
from controlplane.demo.mesh import CONFIG_SUFFIXES
from tests.agents.live_support import free_port
from tests.demo.live_demo import LiveDemo, child_env

ROOT = Path(__file__).resolve().parents[2]
MESH = ROOT / "examples" / "docker-mesh"
WORKLOADS = ("storefront-v1", "storefront-v2", "catalog-1", "catalog-2", "catalog-3")

TOP_LEVEL = {"services", "volumes", "networks", "name"}
SERVICE_KEYS = {
    "build",
    "image",
    "command",
    "volumes",
    "ports",
    "depends_on",
    "network_mode",
    "restart",
    "environment",
}
RESTART = {"no", "always", "on-failure", "unless-stopped"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def mesh_docs() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((MESH / "storefront.yaml").read_text()) if doc]


def entries() -> dict[str, dict[str, Any]]:
    """ServiceEntry specs by their short host name."""
    found = {}
    for doc in mesh_docs():
        if doc["kind"] == "ServiceEntry":
            found[doc["spec"]["hosts"][0].split(".")[0]] = doc["spec"]
    return found


def parse(command: list[str]) -> tuple[str, argparse.Namespace]:
    """The program a compose command runs and its parsed arguments (argparse exits on errors)."""
    if command[:2] == ["pilotfish", "agent"]:
        return "pilotfish agent", agent_cli.build_parser().parse_args(command[2:])
    if command[0] == "pilotfish":
        return "pilotfish", cli.build_parser().parse_args(command[1:])
    assert command[:2] == ["python", "-m"], command
    module = importlib.import_module(command[2])
    parser: argparse.ArgumentParser = module.build_parser()
    return command[2], parser.parse_args(command[3:])


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    found = service.get("depends_on") or {}
    if isinstance(found, list):
        return {name: "service_started" for name in found}
    return {name: spec["condition"] for name, spec in found.items()}


# -- the structure of the compose file ----------------------------------------------------


def test_the_compose_file_uses_only_keys_of_the_compose_specification() -> None:
    document = compose()
    assert {k for k in document if not k.startswith("x-")} <= TOP_LEVEL
    for name, service in services().items():
        assert set(service) <= SERVICE_KEYS, name
        assert isinstance(service["image"], str), name
        assert all(isinstance(part, str) for part in service["command"]), name
        assert service.get("restart", "no") in RESTART, name
        for target, condition in depends_on(service).items():
            assert target in services(), (name, target)
            assert condition in CONDITIONS, (name, condition)
        for port in service.get("ports", []):
            assert re.fullmatch(r"127\.0\.0\.1:\d+:\d+", port), (name, port)


def test_every_volume_is_declared_or_a_directory_of_the_repository() -> None:
    declared = set(compose()["volumes"])
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source, target, *mode = volume.split(":")
            assert target.startswith("/"), (name, volume)
            assert mode in ([], ["ro"]), (name, volume)
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, volume)
            else:
                assert source in declared, (name, volume)


def test_each_sidecar_shares_the_network_of_the_service_it_stands_beside() -> None:
    found = {
        name: service["network_mode"]
        for name, service in services().items()
        if "network_mode" in service
    }
    assert found == {f"{w}-sidecar": f"service:{w}" for w in WORKLOADS}
    for name in found:
        sidecar = services()[name]
        assert "ports" not in sidecar  # published by the service whose network it shares
        assert set(depends_on(sidecar)) == {"controlplane", name.removesuffix("-sidecar")}


def compose_tool() -> list[str] | None:
    """``docker compose`` when the plugin works, else ``docker-compose`` (Debian's package)."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy is not None else None


def test_docker_compose_config_accepts_the_file() -> None:
    tool = compose_tool()
    if tool is None:
        message = "neither docker compose nor docker-compose is installed"
        if os.environ.get("PILOTFISH_COMPOSE_REQUIRED"):  # set by .ci/run, which installs it
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [*tool, "config", "-q"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# -- every command is a real command line -------------------------------------------------


def test_every_pilotfish_command_parses_with_the_parser_of_its_program() -> None:
    programs = {}
    for name, service in services().items():
        if service["image"].startswith("pilotfish"):
            programs[name] = parse(service["command"])[0]
    assert programs == {
        "controlplane": "pilotfish",
        "gateway-bootstrap": "controlplane.demo.envoy",
        **{w: "controlplane.demo.storefront" for w in WORKLOADS},
        **{f"{w}-sidecar": "pilotfish agent" for w in WORKLOADS},
    }


def test_the_control_plane_serves_the_mounted_docker_mesh_and_the_dashboard() -> None:
    service = services()["controlplane"]
    _, args = parse(service["command"])
    assert args.command == "serve"
    assert (args.config_dir, args.xds_address, args.admin_address, args.poll) == (
        "/config",
        "0.0.0.0:18000",
        "0.0.0.0:15000",
        True,
    )
    assert service["volumes"] == ["./examples/docker-mesh:/config:ro"]
    assert service["ports"] == ["127.0.0.1:15000:15000"]


def test_pilotfish_validate_finds_nothing_in_examples_docker_mesh() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controlplane", "validate", str(MESH)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "",
        "0 error(s), 0 warning(s)\n",
    )


def test_each_workload_is_an_endpoint_of_the_mesh_on_the_port_it_listens_on() -> None:
    endpoints = {
        endpoint["address"]: (host, endpoint["ports"]["http"])
        for host, spec in entries().items()
        for endpoint in spec["endpoints"]
    }
    assert set(endpoints) == set(WORKLOADS)
    for name in WORKLOADS:
        _, args = parse(services()[name]["command"])
        assert (args.name, args.host, args.port) == (name, "0.0.0.0", endpoints[name][1])


def test_frontends_call_the_catalog_through_their_sidecar_on_its_service_port() -> None:
    catalog_port = entries()["catalog"]["ports"][0]["number"]
    for name in ("storefront-v1", "storefront-v2"):
        _, args = parse(services()[name]["command"])
        assert (args.calls, args.via) == (("catalog", catalog_port), "127.0.0.1")
        _, sidecar = parse(services()[f"{name}-sidecar"]["command"])
        assert (sidecar.xds_server, sidecar.node_id, sidecar.role, sidecar.bind_address) == (
            "controlplane:18000",
            f"{name}-sidecar",
            "sidecar",
            "127.0.0.1",
        )
    _, slow = parse(services()["catalog-3"]["command"])
    assert slow.delay == 0.1


def test_the_gateway_bootstrap_command_writes_what_the_envoy_container_reads(
    tmp_path: Path,
) -> None:
    bootstrap_service = services()["gateway-bootstrap"]
    gateway = services()["gateway"]
    assert gateway["image"].startswith("envoyproxy/envoy:")
    assert depends_on(gateway)["gateway-bootstrap"] == "service_completed_successfully"
    (volume,) = bootstrap_service["volumes"]
    assert gateway["volumes"] == [f"{volume}:ro"]
    mount = volume.split(":")[1]

    command = [part.replace(mount, str(tmp_path)) for part in bootstrap_service["command"]]
    result = subprocess.run(
        [sys.executable, *command[1:]], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")

    config_arg = gateway["command"][gateway["command"].index("-c") + 1]
    written = tmp_path / Path(config_arg).relative_to(mount)
    document = json.loads(written.read_text())
    (gateway_doc,) = [doc for doc in mesh_docs() if doc["kind"] == "Gateway"]
    assert document["node"]["metadata"] == {
        "pilotfish.io/role": "gateway",
        "labels": gateway_doc["spec"]["selector"],
    }
    (xds,) = document["static_resources"]["clusters"]
    (locality,) = xds["load_assignment"]["endpoints"]
    assert [e["endpoint"]["address"] for e in locality["lb_endpoints"]] == [
        {"socket_address": {"address": "controlplane", "port_value": 18000}}
    ]
    port = gateway_doc["spec"]["servers"][0]["port"]["number"]
    assert gateway["ports"] == [f"127.0.0.1:{port}:{port}"]

    envoy = find_envoy()
    if envoy is not None:
        validated = subprocess.run(
            [envoy, "--mode", "validate", "-c", str(written), "-l", "error"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert validated.returncode == 0, validated.stdout + validated.stderr


def test_prometheus_scrapes_the_control_plane_every_agent_and_the_gateway() -> None:
    prometheus = services()["prometheus"]
    (volume,) = prometheus["volumes"]
    source, target, _ = volume.split(":")
    assert prometheus["command"] == [f"--config.file={target}"]
    assert (ROOT / source).suffix not in CONFIG_SUFFIXES  # the control plane does not read it
    config = yaml.safe_load((ROOT / source).read_text())
    targets = {
        job["job_name"]: sorted(t for group in job["static_configs"] for t in group["targets"])
        for job in config["scrape_configs"]
    }
    admin_port = parse(services()["controlplane"]["command"])[1].admin_address.split(":")[1]
    agent_ports = {
        parse(services()[f"{w}-sidecar"]["command"])[1].admin_address.split(":")[1]
        for w in WORKLOADS
    }
    (agent_port,) = agent_ports
    assert targets == {
        "controlplane": [f"controlplane:{admin_port}"],
        "agents": sorted(f"{w}:{agent_port}" for w in WORKLOADS),
        "gateway": ["gateway:9901"],
    }
    assert parse(services()["gateway-bootstrap"]["command"])[1].admin_address == "0.0.0.0"


def test_the_compose_comment_and_the_readme_give_the_same_command() -> None:
    command = "docker compose up --build"
    assert command in (ROOT / "docker-compose.yml").read_text()
    assert command in (ROOT / "README.md").read_text()


def test_the_dockerfile_installs_pilotfish_on_python_3_11_slim() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    assert "RUN pip install . && rm -rf /src" in lines
    copied = [line.split()[1] for line in lines if line.startswith("COPY ")]
    assert copied == ["pyproject.toml", "controlplane", "agents", "pilotfish"]
    assert all((ROOT / path).exists() for path in ["README.md", *copied])


@pytest.mark.parametrize("name", WORKLOADS)
def test_the_tour_edits_apply_to_the_docker_mesh_too(name: str) -> None:
    """The docker mesh routes by the same resources the tour edits."""
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in mesh_docs()}
    assert {
        ("VirtualService", "storefront"),
        ("VirtualService", "catalog"),
        ("DestinationRule", "storefront"),
        ("DestinationRule", "catalog"),
    } <= names
    assert name in {e["address"] for spec in entries().values() for e in spec["endpoints"]}


# -- the compose commands, run for real ---------------------------------------------------


def local(command: list[str], replacements: dict[str, str]) -> list[str]:
    """A compose command as a local process: ``python`` is this interpreter, values replaced."""
    if command[0] == "pilotfish":
        command = ["python", "-m", "agents" if command[1] == "agent" else "controlplane"] + (
            command[2:] if command[1] == "agent" else command[1:]
        )
    return [sys.executable, *(replacements.get(part, part) for part in command[1:])]


@pytest.mark.slow
def test_the_compose_commands_route_the_docker_mesh_when_the_names_resolve(
    tmp_path: Path,
) -> None:
    """Every compose service but Envoy and Prometheus, as processes; container names -> localhost.

    Each frontend and its sidecar get a loopback address of their own (a container's
    network namespace, in compose); the gateway is an agent in the gateway role.
    """
    config = tmp_path / "config"
    config.mkdir()
    text = (MESH / "storefront.yaml").read_text()
    ports = {name: free_port() for name in WORKLOADS}
    for name in WORKLOADS:
        text = re.sub(
            rf"address: {name}\n(.*?)http: 9080",
            rf"address: localhost\n\g<1>http: {ports[name]}",
            text,
            count=1,
            flags=re.S,
        )
    gateway_port = free_port()
    text = text.replace("number: 8080", f"number: {gateway_port}")
    (config / "storefront.yaml").write_text(text)
    xds, admin = free_port(), free_port()
    namespaces = {"storefront-v1": "127.0.0.51", "storefront-v2": "127.0.0.52"}

    serve = local(
        services()["controlplane"]["command"],
        {
            "/config": str(config),
            "0.0.0.0:18000": f"127.0.0.1:{xds}",
            "0.0.0.0:15000": f"127.0.0.1:{admin}",
        },
    )
    commands = {"controlplane": [*serve, "--state-dir", str(tmp_path / "state")]}
    for name in WORKLOADS:
        via = namespaces.get(name, "127.0.0.1")
        commands[name] = local(
            services()[name]["command"],
            {"0.0.0.0": "127.0.0.1", "9080": str(ports[name]), "127.0.0.1": via},
        )
    for name, address in namespaces.items():
        commands[f"{name}-sidecar"] = local(
            services()[f"{name}-sidecar"]["command"],
            {
                "controlplane:18000": f"127.0.0.1:{xds}",
                "127.0.0.1": address,
                "0.0.0.0:15001": "127.0.0.1:0",
            },
        )
    commands["gateway"] = [sys.executable, "-m", "agents", "--xds-server", f"127.0.0.1:{xds}"]
    commands["gateway"] += ["--node-id", "gateway", "--role", "gateway"]
    commands["gateway"] += ["--labels", "istio=ingressgateway", "--admin-address", "127.0.0.1:0"]
    commands["gateway"] += ["--connect-timeout", "60s"]

    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            log = (tmp_path / f"{name}.log").open("wb")
            processes[name] = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=ROOT
            )
        demo = LiveDemo(processes["gateway"], config, gateway_port, xds, admin)  # type: ignore[arg-type]
        demo.eventually(lambda: answered(demo), timeout=120)
        assert {demo.get().line for _ in range(3)} == {
            f"storefront-v1 <- catalog-{i}" for i in (1, 2, 3)
        }
        demo.replace_resource(
            "storefront.yaml",
            re.search(
                r"apiVersion: \S+\nkind: VirtualService\nmetadata:\n  name: storefront\n.*?(?=---)",
                text,
                re.S,
            )
            .group(0)  # type: ignore[union-attr]
            .replace("weight: 100", "weight: 1000")
            .replace("weight: 0", "weight: 100")
            .replace("weight: 1000", "weight: 0"),
        )
        demo.eventually(lambda: demo.get().backend == "storefront-v2")
        assert {demo.get().backend for _ in range(5)} == {"storefront-v2"}
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def answered(demo: LiveDemo) -> bool:
    try:
        return demo.get().status == 200
    except OSError:
        return False
