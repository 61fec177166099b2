"""docs/tour.md walked against a live ``pilotfish demo``, with the edits taken from the doc itself.

One demo (a real subprocess, Envoy as the gateway when installed) serves the whole
module: the tour's steps run in order, each applying the YAML block the doc gives for
it (``<!-- tour: NAME FILE -->`` before a fenced ``yaml`` block) and checking what the
doc says the reader sees. The last test stops the demo with SIGTERM and checks by PID
that nothing it started is left. A second demo runs with ``--no-envoy``, where the
gateway is a Pilotfish agent, and is stopped with SIGINT (Ctrl-C).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.demo.envoy import find_envoy
from controlplane.demo.mesh import write_example
from tests.demo.live_demo import (
    EXAMPLE_PORTS,
    ROOT,
    LiveDemo,
    alive,
    child_env,
    free_port,
    kill_all,
    move_ports,
    start_demo,
)

pytestmark = pytest.mark.slow

TOUR = ROOT / "docs/tour.md"
CATALOG = {"catalog-1", "catalog-2", "catalog-3"}


def tour_edits() -> dict[str, tuple[str, str]]:
    """Each edit of the tour by name: (file, YAML block)."""
    text = TOUR.read_text()
    found = re.findall(r"<!-- tour: (\S+) (\S+) -->\n```yaml\n(.*?)```", text, re.S)
    return {name: (file, block) for name, file, block in found}


EDITS = tour_edits()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDemo]:
    live = start_demo(tmp_path_factory.mktemp("tour") / "my-mesh")
    try:
        yield live
    finally:
        live.stop()


def edit(demo: LiveDemo, name: str, expect: str) -> str:
    """Apply the tour's edit ``name`` and return the demo's line that matches ``expect``.

    An accepted edit names the new config version, which the control plane's admin
    (``/debug/config``, beside the dashboard) then serves.
    """
    file, block = EDITS[name]
    mark = demo.replace_resource(file, block)
    line = demo.wait_line(expect, after=mark)
    accepted = re.search(r"^pilotfish demo: (?:accepted|fixed): .*\(config version (\w+)\)$", line)
    if accepted:  # logged as the reload is accepted; served once translated, a moment later
        version = accepted.group(1)
        demo.eventually(lambda: demo.admin_json("/debug/config")["version"] == version)
    return line


def test_the_tour_names_every_step_the_test_walks() -> None:
    assert list(EDITS) == [
        "canary-half",
        "canary-done",
        "header",
        "fault",
        "no-fault",
        "latency-aware",
        "bad",
        "fixed",
    ]


def test_0_the_demo_prints_the_guide_and_runs_every_process(demo: LiveDemo) -> None:
    assert demo.wait_line(r"curl http://127.0.0.1:\d+/$").endswith(f":{demo.gateway_port}/")
    assert (
        demo.wait_line(r"storefront\.yaml$")
        .strip()
        .endswith(str(demo.config_dir / "storefront.yaml"))
    )
    assert demo.wait_line(r"pilotfish status --server").strip() == (
        f"pilotfish status --server 127.0.0.1:{demo.xds_port}"
    )
    assert demo.wait_line(r"the dashboard")
    assert f"http://127.0.0.1:{demo.admin_port}/" in [line.strip() for line in demo.lines]
    assert set(demo.pids) == {
        "gateway",
        "catalog-1",
        "catalog-2",
        "catalog-3",
        "storefront-v1",
        "storefront-v2",
        "storefront-v1-sidecar",
        "storefront-v2-sidecar",
    }
    assert all(alive(pid) for pid in demo.pids.values())
    assert demo.wait_line(r"^pilotfish demo: loaded: catalog\.yaml, storefront\.yaml")


def status(demo: LiveDemo) -> dict[str, str]:
    """``pilotfish status`` as the guide prints it: each proxy's row by node id."""
    result = subprocess.run(
        [sys.executable, "-m", "controlplane", "status", "--server", f"127.0.0.1:{demo.xds_port}"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line}


def all_synced(demo: LiveDemo) -> bool:
    rows = status(demo)
    return set(rows) == {"gateway", "storefront-v1-sidecar", "storefront-v2-sidecar"} and all(
        row.count("SYNCED") == 4 for row in rows.values()
    )


def test_0_pilotfish_status_lists_the_gateway_and_both_sidecars_synced(demo: LiveDemo) -> None:
    demo.eventually(lambda: all_synced(demo))


def test_1_round_robin_takes_the_catalog_instances_in_turn_behind_v1(demo: LiveDemo) -> None:
    answers = [demo.get() for _ in range(6)]
    assert {a.backend for a in answers} == {"storefront-v1"}
    assert all(a.status == 200 for a in answers)
    catalogs = [a.catalog for a in answers]
    assert set(catalogs[:3]) == CATALOG
    assert catalogs[3:] == catalogs[:3]
    assert answers[0].line == f"storefront-v1 <- {catalogs[0]}"


def test_2_the_canary_moves_storefront_from_v1_to_v2(demo: LiveDemo) -> None:
    line = edit(demo, "canary-half", r"accepted: storefront\.yaml is served now")
    assert re.search(r"\(config version [0-9a-f]+\)$", line)
    demo.eventually(lambda: demo.get().backend == "storefront-v2")
    half = Counter_of_backends(demo, 60)
    assert set(half) == {"storefront-v1", "storefront-v2"}

    edit(demo, "canary-done", r"accepted: storefront\.yaml is served now")
    demo.eventually(lambda: Counter_of_backends(demo, 10) == {"storefront-v2": 10})
    assert Counter_of_backends(demo, 30) == {"storefront-v2": 30}


def Counter_of_backends(demo: LiveDemo, count: int) -> dict[str, int]:
    seen: dict[str, int] = {}
    for _ in range(count):
        backend = demo.get().backend
        seen[backend] = seen.get(backend, 0) + 1
    return seen


def test_3_the_x_canary_header_routes_to_v2_and_the_rest_to_v1(demo: LiveDemo) -> None:
    edit(demo, "header", r"accepted: storefront\.yaml is served now")
    demo.eventually(lambda: demo.get().backend == "storefront-v1")
    assert {demo.get().backend for _ in range(10)} == {"storefront-v1"}
    assert {demo.get(**{"x-canary": "yes"}).backend for _ in range(10)} == {"storefront-v2"}


def test_4_a_fault_on_the_catalog_reaches_the_frontend_and_goes_away(demo: LiveDemo) -> None:
    edit(demo, "fault", r"accepted: catalog\.yaml is served now")
    demo.eventually(lambda: demo.get().status == 503)
    answer = demo.get()
    assert answer.status == 503
    assert answer.backend == "storefront-v1"
    assert (
        answer.line == "storefront-v1 <- catalog answered 503: 503 fault_abort"
    )  # as the tour shows

    edit(demo, "no-fault", r"accepted: catalog\.yaml is served now")
    demo.eventually(lambda: demo.get().status == 200)
    assert {demo.get().status for _ in range(6)} == {200}


def test_5_the_latency_aware_balancer_moves_traffic_off_the_slow_catalog(
    demo: LiveDemo,
) -> None:
    before = Counter_of_catalogs(demo, 30)
    assert before == {"catalog-1": 10, "catalog-2": 10, "catalog-3": 10}  # round robin

    edit(demo, "latency-aware", r"accepted: catalog\.yaml is served now")
    demo.eventually(lambda: Counter_of_catalogs(demo, 30).get("catalog-3", 0) <= 3)
    after = Counter_of_catalogs(demo, 60)
    assert after.get("catalog-3", 0) < 10, after  # round robin would give it 20
    assert set(after) >= {"catalog-1", "catalog-2"}


def Counter_of_catalogs(demo: LiveDemo, count: int) -> dict[str, int]:
    seen: dict[str, int] = {}
    for _ in range(count):
        catalog = demo.get().catalog
        seen[catalog] = seen.get(catalog, 0) + 1
    return seen


def test_6_a_bad_edit_is_rejected_with_file_and_line_and_traffic_keeps_flowing(
    demo: LiveDemo,
) -> None:
    path = demo.config_dir / "storefront.yaml"
    mark = demo.mark()
    error = edit(demo, "bad", r"error: .*PF201")
    text = path.read_text()
    line = text[: text.index("subset: v3")].count("\n") + 1
    assert error.startswith(f"pilotfish demo: error: {path}:{line}:")
    assert "subset 'v3' of storefront.default.svc.cluster.local is not defined" in error
    rejected = demo.wait_line(r"rejected: storefront\.yaml; the gateway and sidecars keep", mark)
    # The routing of step 3 is still in force, through the gateway and the sidecars.
    assert {demo.get().backend for _ in range(10)} == {"storefront-v1"}
    assert {demo.get(**{"x-canary": "yes"}).backend for _ in range(5)} == {"storefront-v2"}
    assert all(demo.get().status == 200 for _ in range(5))
    before = status(demo)
    assert all(row.count("SYNCED") == 4 for row in before.values()), before
    kept = demo.admin_json("/debug/config")["version"]
    assert rejected.endswith(f"(config version {kept})")  # the version served before the edit

    assert "storefront.yaml" in edit(demo, "fixed", r"fixed: storefront\.yaml")
    assert status(demo) == before  # the fix is the version already served
    assert {demo.get(**{"x-canary": "yes"}).backend for _ in range(5)} == {"storefront-v2"}


def test_7_sigterm_stops_every_process_the_demo_started(demo: LiveDemo) -> None:
    pids = dict(demo.pids)
    assert demo.stop(signal.SIGTERM) == 0
    assert [name for name, pid in pids.items() if alive(pid)] == []
    assert demo.lines[-1] == "pilotfish demo: stopped"


@pytest.mark.skipif(find_envoy() is None, reason="without Envoy the tour already used the agent")
def test_with_no_envoy_the_gateway_is_an_agent_and_ctrl_c_stops_everything(
    tmp_path: Path,
) -> None:
    demo = start_demo(tmp_path / "mesh", "--no-envoy")
    try:
        assert demo.wait_line(r"^  gateway \(Pilotfish agent\) +http://127\.0\.0\.1:\d+/$")
        answers = [demo.get() for _ in range(3)]
        assert {a.line for a in answers} == {f"storefront-v1 <- {c}" for c in CATALOG}
    finally:
        pids = dict(demo.pids)
        code = demo.stop(signal.SIGINT)
    assert code == 0
    assert [name for name, pid in pids.items() if alive(pid)] == []


def test_bookinfo_runs_one_backend_per_workload_entry_behind_the_gateway(tmp_path: Path) -> None:
    mesh = tmp_path / "bookinfo"
    shutil.copytree(ROOT / "examples" / "bookinfo", mesh)
    ports = {old: free_port() for old in (8080, 9201, 9202, 9211, 9212, 9213, 9221)}
    move_ports(mesh, ports)
    demo = start_demo(mesh, "--no-envoy", gateway_port=ports[8080])
    try:
        assert set(demo.pids) == {
            "gateway",
            "productpage-v1",
            "details-v1",
            "reviews-v1",
            "reviews-v2",
            "reviews-v3",
            "ratings-v1",
        }
        answer = demo.get()
        assert (answer.status, answer.backend, answer.line) == (
            200,
            "productpage-v1",
            "productpage-v1",
        )
    finally:
        pids = dict(demo.pids)
        code = demo.stop(signal.SIGTERM)
    assert code == 0
    assert [name for name, pid in pids.items() if alive(pid)] == []


def children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def test_sigterm_while_the_demo_starts_stops_what_it_started_and_exits_0(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh"
    write_example(mesh, {old: free_port() for old in EXAMPLE_PORTS})
    xds, admin = free_port(), free_port()
    command = [sys.executable, "-m", "controlplane", "demo", "--config-dir", str(mesh)]
    command += ["--xds-port", str(xds), "--admin-port", str(admin)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=ROOT,
    )
    try:
        started: set[int] = set()
        deadline = time.monotonic() + 60
        while len(started) < 5 and time.monotonic() < deadline:  # the five workloads at least
            started |= children_of(process.pid)
            time.sleep(0.05)
        assert len(started) >= 5
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            kill_all(children_of(process.pid))
    assert process.returncode == 0, stderr
    assert stderr.splitlines()[-1] == "pilotfish demo: stopped"
    assert "Pilotfish demo is up" not in stdout
    assert [pid for pid in started if alive(pid)] == []
