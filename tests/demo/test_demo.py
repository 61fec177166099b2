"""``pilotfish demo`` end to end: real backends, control plane and Envoy on free ports.

The programmatic tests drive :func:`~controlplane.demo.run.run_demo` on the
test's event loop, so every blocking HTTP call goes through
``asyncio.to_thread`` (the control plane serves from that same loop). Temp
directories are redirected into ``tmp_path`` to check that the demo removes
its copy. The last test runs the real command line and stops it with SIGINT.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.demo.backends import Client, body_of, free_ports, port_is_free
from controlplane.demo.envoy import find_envoy, wait_for
from controlplane.demo.run import Demo, DemoOptions, run_demo, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_envoy() is None, reason="no envoy binary on PATH or beside python"),
]

HELLO = ("hello-1", "hello-2", "hello-3")
START_TIMEOUT = 90.0
EDIT_TIMEOUT = 15.0


@pytest.fixture
def options() -> DemoOptions:
    gateway, xds, *backends = free_ports(5)
    return DemoOptions(port=gateway, xds_port=xds, backend_ports=tuple(backends), debounce=0.05)


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``tempfile`` makes its directories here, so a test sees what the demo leaves behind."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root


def all_ports(options: DemoOptions) -> list[int]:
    return [options.port, options.xds_port, *options.backend_ports]


def read_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    spec: dict[str, Any] = doc["spec"]
    return spec


def route_only_to_hello_2(path: Path) -> None:
    """The edit a person would make: a subset for replica 2, and the route sent to it."""
    docs = read_docs(path)
    find(docs, "DestinationRule", "hello")["subsets"] = [
        {"name": "two", "labels": {"instance": "2"}}
    ]
    route = find(docs, "VirtualService", "hello")["http"][0]["route"][0]
    route["destination"]["subset"] = "two"
    temporary = path.with_name(".hello.yaml.tmp")
    temporary.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    os.replace(temporary, path)


async def start(options: DemoOptions, stop: asyncio.Event) -> tuple[Demo, asyncio.Task[Demo]]:
    """Run the demo until ``stop``; the started demo and the task that runs it."""
    started: asyncio.Future[Demo] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_demo(options, stop=stop, ready=started.set_result))
    await asyncio.wait({task, started}, timeout=START_TIMEOUT, return_when="FIRST_COMPLETED")
    if task.done():
        task.result()  # raises what stopped the start
    assert started.done(), "the demo did not start in time"
    return started.result(), task


async def test_the_demo_balances_round_robin_follows_an_edit_and_stops_everything(
    options: DemoOptions, private_tmp: Path
) -> None:
    stop = asyncio.Event()
    demo, task = await start(options, stop)
    envoy, backends, workdir = demo.envoy, demo.backends, demo.workdir
    assert envoy is not None and backends is not None and workdir is not None
    assert workdir.parent == private_tmp
    assert demo.config_file == workdir / "config" / "hello.yaml"
    client = Client(options.port)

    answered = await asyncio.to_thread(client.sequence, 9)
    assert sorted(answered[:3]) == list(HELLO)
    assert answered == answered[:3] * 3
    response = await asyncio.to_thread(client.get, "/any/path")
    assert (response.status, response.body) == (200, body_of(str(response.backend)))
    assert response.headers["x-echo-path"] == "/any/path"

    route_only_to_hello_2(demo.config_file)
    await wait_until(
        lambda: client.backends(10) == {"hello-2": 10}, EDIT_TIMEOUT, "only hello-2 to answer"
    )
    assert await asyncio.to_thread(client.backends, 30) == {"hello-2": 30}
    client.close()

    stop.set()
    assert await task is demo
    assert envoy.process is not None and envoy.process.returncode == 0
    assert [backend.running for backend in backends.by_name.values()] == [False, False, False]
    assert (demo.envoy, demo.plane, demo.backends, demo.workdir) == (None, None, None, None)
    assert list(private_tmp.iterdir()) == []
    assert [port for port in all_ports(options) if not port_is_free(port)] == []


async def test_the_demo_copy_runs_on_the_demo_ports_and_keeps_the_example_routing(
    options: DemoOptions, private_tmp: Path
) -> None:
    stop = asyncio.Event()
    demo, task = await start(options, stop)
    try:
        docs = read_docs(demo.config_file)
        gateway = find(docs, "Gateway", "hello-gateway")
        assert [server["port"]["number"] for server in gateway["servers"]] == [options.port]
        assert [find(docs, "WorkloadEntry", name)["ports"] for name in HELLO] == [
            {"http": port} for port in options.backend_ports
        ]
        assert find(docs, "VirtualService", "hello")["http"][0]["route"] == [
            {"destination": {"host": "hello", "port": {"number": 8080}}}
        ]
    finally:
        stop.set()
        await task


async def test_stopping_the_demo_while_it_starts_undoes_everything_it_started(
    options: DemoOptions, private_tmp: Path
) -> None:
    stop = asyncio.Event()
    stop.set()
    called: list[Demo] = []

    demo = await run_demo(options, stop=stop, ready=called.append)

    assert called == []
    assert (demo.envoy, demo.plane, demo.backends, demo.workdir) == (None, None, None, None)
    assert list(private_tmp.iterdir()) == []
    assert [port for port in all_ports(options) if not port_is_free(port)] == []


def test_pilotfish_demo_prints_the_guide_serves_and_exits_0_on_sigint(tmp_path: Path) -> None:
    gateway, xds, *backends = free_ports(5)
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    command = [sys.executable, "-m", "controlplane", "demo", "--port", str(gateway)]
    command += ["--xds-port", str(xds), "--backend-ports", ",".join(map(str, backends))]
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    try:
        wait_for(
            lambda: "Ctrl-C" in stdout.read_text() or process.poll() is not None,
            START_TIMEOUT,
            "the demo's guide",
        )
        guide = stdout.read_text()
        assert process.poll() is None, stderr.read_text()
        assert f"curl http://127.0.0.1:{gateway}/\n" in guide
        (config_file,) = re.findall(r"\S+/config/hello\.yaml", guide)
        assert Path(config_file).is_file()
        with Client(gateway) as client:
            assert sorted(client.backends(3)) == list(HELLO)
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(30)
    assert code == 0, stderr.read_text()
    assert stderr.read_text().splitlines()[-1] == "pilotfish demo: stopped"
    assert not Path(config_file).exists()
