"""Reading many files with a helper process gives exactly what reading alone gives."""

from __future__ import annotations

import io
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from controlplane import cli
from controlplane.config import parallel_read
from controlplane.config.files import scan
from controlplane.config.limits import DEFAULT_LIMITS, ConfigLimits
from controlplane.config.parallel_read import (
    FilesRead,
    Reader,
    ReadHelper,
    cores_available,
    enough_files,
    read_files,
)
from controlplane.config.store import ConfigStore, FileVersion, _read, validate_directory

MIN_FILES = 256
FILES = MIN_FILES + 44


@pytest.fixture(autouse=True)
def fewer_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """A helper for a few hundred files already, to keep the tests quick."""
    monkeypatch.setattr(parallel_read, "MIN_FILES", MIN_FILES)


SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: svc-{i}
  namespace: mixed
spec:
  selector:
    app: svc-{i}
  ports:
  - name: http
    port: 8080
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: svc-{i}
  namespace: mixed
spec:
  address: 10.0.{a}.{b}
  labels:
    app: svc-{i}
"""


def mixed_directory(root: Path, count: int = FILES) -> list[str]:
    """``count`` files: mostly valid, with every kind of bad file spread through them."""
    for i in range(count):
        rel = f"d{i % 3}/svc-{i:04d}.yaml"
        path = root / rel
        path.parent.mkdir(exist_ok=True)
        text = SERVICE.format(i=i, a=i // 250, b=i % 250)
        if i % 37 == 5:
            text = text.replace("port: 8080", "port: 99999")  # a field error (PF114)
        elif i % 41 == 7:
            text = text.replace("  selector:", "  selector: [")  # a syntax error
        elif i % 43 == 9:
            text = text.replace("kind: Service", "kind: Sevrice")  # a misspelt kind (PF102)
        path.write_text(text)
    (root / "latin1.yaml").write_bytes("metadata: {name: caf\xe9}\n".encode("latin-1"))
    (root / "large.yaml").write_text("x" * 5000)
    return sorted(scan(root))


SMALL_FILES = ConfigLimits(max_file_bytes=4096)


def slow_here(root: Path, rel: str, limits: ConfigLimits) -> FileVersion | None:
    """``_read``, 10 ms slower in the test's own process: the helper gets to answer."""
    if str(os.getpid()) == os.environ.get("PILOTFISH_TEST_SLOW_PID"):
        time.sleep(0.01)
    return _read(root, rel, limits)


@pytest.fixture
def slow(monkeypatch: pytest.MonkeyPatch) -> Reader[FileVersion | None]:
    monkeypatch.setenv("PILOTFISH_TEST_SLOW_PID", str(os.getpid()))
    return slow_here


def test_a_helper_reads_part_of_the_files_and_the_results_equal_reading_alone(
    tmp_path: Path, slow: Reader[FileVersion | None]
) -> None:
    paths = mixed_directory(tmp_path)
    alone = read_files(tmp_path, paths, SMALL_FILES, _read, helper=False)
    shared = read_files(tmp_path, paths, SMALL_FILES, slow)

    assert alone.by_helper == 0
    assert 0 < shared.by_helper < len(paths)
    assert shared.results == alone.results

    # Fields left out of equality came across too.
    def keys(read: FilesRead[FileVersion | None]) -> dict[str, list[tuple[str, str, str]]]:
        return {p: [r.meta.key for r in v.result.resources] for p, v in read.results.items() if v}

    assert keys(shared) == keys(alone)
    assert list(alone.results) == paths
    codes = {f.code for v in alone.results.values() if v is not None for f in v.result.findings}
    assert codes == {"PF100", "PF102", "PF105", "PF106", "PF114"}


def test_fewer_files_than_the_minimum_are_read_without_a_helper(tmp_path: Path) -> None:
    paths = mixed_directory(tmp_path, MIN_FILES - 10)

    read = read_files(tmp_path, paths, DEFAULT_LIMITS, _read)

    assert read.by_helper == 0
    assert read.results == read_files(tmp_path, paths, DEFAULT_LIMITS, _read, helper=False).results


def test_a_helper_that_cannot_start_leaves_every_file_read_here(tmp_path: Path) -> None:
    paths = mixed_directory(tmp_path)

    with capture_logs() as logs:
        read = read_files(tmp_path, paths, DEFAULT_LIMITS, _read, python=str(tmp_path / "none"))

    assert read.by_helper == 0
    assert read.results == read_files(tmp_path, paths, DEFAULT_LIMITS, _read, helper=False).results
    assert [e["event"] for e in logs] == ["config_read_helper_failed"]


def test_a_helper_that_dies_after_its_first_answer_leaves_the_rest_read_here(
    tmp_path: Path, slow: Reader[FileVersion | None]
) -> None:
    paths = mixed_directory(tmp_path)
    script = tmp_path / "dying.py"
    # Answers one chunk as the real helper would, then exits mid-read.
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {os.getcwd()!r})\n"
        "from controlplane.config import parallel_read as p\n"
        "root, limits, module, name, paths = p._read_frame(sys.stdin.buffer)\n"
        "chunk = paths[(len(paths) - 1) // p.CHUNK * p.CHUNK :]\n"
        "from controlplane.config.store import _read\n"
        "from pathlib import Path\n"
        "p._write_frame(sys.stdout.buffer, (chunk, None, [_read(Path(root), c, limits) "
        "for c in chunk]))\n"
        "os._exit(3)\n"
    )
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {script}\n")
    wrapper.chmod(0o755)

    with capture_logs() as logs:
        read = read_files(tmp_path, paths, DEFAULT_LIMITS, slow, python=str(wrapper))

    assert read.by_helper == len(paths) % parallel_read.CHUNK  # the last chunk, answered first
    assert read.results == read_files(tmp_path, paths, DEFAULT_LIMITS, _read, helper=False).results
    # Whichever this process notices first: the end of its answers or of its input.
    assert [e["event"] for e in logs] == ["config_read_helper_failed"]
    assert logs[0]["error"] in {"the helper process ended", "the helper process stopped reading"}


def test_a_helper_that_answers_garbage_is_dropped_and_its_files_read_here(
    tmp_path: Path, slow: Reader[FileVersion | None]
) -> None:
    paths = mixed_directory(tmp_path)
    wrapper = tmp_path / "python"
    wrapper.write_text("#!/bin/sh\nprintf '\\000\\000\\000\\005garbage'\ncat >/dev/null\n")
    wrapper.chmod(0o755)

    with capture_logs() as logs:
        read = read_files(tmp_path, paths, DEFAULT_LIMITS, slow, python=str(wrapper))

    assert read.by_helper == 0
    assert read.results == read_files(tmp_path, paths, DEFAULT_LIMITS, _read, helper=False).results
    assert [(e["event"], e["error"]) for e in logs] == [
        ("config_read_helper_failed", "an answer that does not unpickle")
    ]


def _slot_values(value: Any) -> Any:
    """``value`` with every slotted record spelt out as its class and all its slots."""
    if isinstance(value, tuple | list):
        return type(value)(_slot_values(item) for item in value)
    slots = getattr(type(value), "__slots__", None)
    if slots is None or not hasattr(type(value), "__dataclass_fields__"):
        return value
    names = [n for base in type(value).__mro__ for n in getattr(base, "__slots__", ())]
    return (type(value), [(n, _slot_values(getattr(value, n))) for n in names])


def test_answers_unpickle_in_a_fresh_interpreter_to_records_equal_in_every_slot(
    tmp_path: Path,
) -> None:
    from bench.config_scale import service_file, six_file

    paths = mixed_directory(tmp_path)
    for index, text in enumerate([service_file(3, 1), six_file(4, 1)]):
        (tmp_path / f"shape-{index}.yaml").write_text(text)
        paths.append(f"shape-{index}.yaml")
    versions = [_read(tmp_path, path, DEFAULT_LIMITS) for path in paths]
    # The fresh interpreter has made no rebuild function yet: it finds them by name.
    echo = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from controlplane.config import parallel_read as p\n"
            "sys.stdout.buffer.write(p._frame(p._read_frame(sys.stdin.buffer)))\n",
        ],
        input=parallel_read._frame(versions),
        capture_output=True,
        check=True,
    ).stdout

    back = parallel_read._read_frame(io.BytesIO(echo))

    assert back == versions
    assert _slot_values(back) == _slot_values(versions)
    assert {r.meta.kind for v in back if v is not None for r in v.result.resources} == {
        "Service",
        "WorkloadEntry",
        "VirtualService",
        "DestinationRule",
    }


def test_a_store_with_a_read_helper_loads_the_same_model_and_diagnostics(tmp_path: Path) -> None:
    mixed_directory(tmp_path)
    alone = ConfigStore(tmp_path).reload()
    shared = ConfigStore(tmp_path, read_helper=True).reload()

    assert shared.mesh == alone.mesh
    assert shared.diagnostics == alone.diagnostics
    assert shared.rejected == alone.rejected
    assert len(shared.mesh.services) > 200


def test_validate_directory_reads_many_files_with_a_helper_and_reports_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mixed_directory(tmp_path)
    shared = validate_directory(tmp_path)
    monkeypatch.setattr(parallel_read, "MIN_FILES", 10**9)

    assert validate_directory(tmp_path) == shared


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cores_available_is_capped_by_a_cgroup_v2_quota(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/kubepods/pod1\n")
    write(tmp_path, "sys/fs/cgroup/kubepods/pod1/cpu.max", "150000 100000\n")

    assert cores_available(tmp_path) == min(1.5, len(os.sched_getaffinity(0)))


def test_cores_available_is_capped_by_a_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "4:memory:/x\n2:cpu,cpuacct:/docker/abc\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "50000\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")

    assert cores_available(tmp_path) == 0.5


def test_cores_available_without_a_quota_is_the_affinity(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "0::/\n2:cpu:/\n")
    write(tmp_path, "sys/fs/cgroup/cpu.max", "max 100000\n")
    write(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n")

    assert cores_available(tmp_path) == len(os.sched_getaffinity(0))


# -- a helper started ahead (`pilotfish serve` starts it before importing the server) --

READER = f"{_read.__module__}:{_read.__qualname__}"


def answered_once(helper: ReadHelper) -> None:
    """Wait until the helper's first answer (the last files of its sorted scan) is in the pipe."""
    assert helper.alive
    readable, _, _ = select.select([helper._fd], [], [], 60)
    assert readable, "the helper answered nothing within 60 s"


def read_now(root: Path, helper: ReadHelper | bool, reader: Reader[Any] = _read) -> FilesRead[Any]:
    """What the first reload does: scan, then read with the helper and the scan's stamps."""
    stamps = scan(root)
    return read_files(root, list(stamps), DEFAULT_LIMITS, reader, helper=helper, stamps=stamps)


def alone(root: Path, paths: list[str]) -> dict[str, Any]:
    return read_files(root, paths, DEFAULT_LIMITS, _read, helper=False).results


def test_the_cli_names_the_reader_the_store_reads_with() -> None:
    assert cli._CONFIG_READER == READER


def test_a_helper_started_ahead_is_taken_over_and_the_results_equal_reading_alone(
    tmp_path: Path, slow: Reader[FileVersion | None]
) -> None:
    paths = mixed_directory(tmp_path)
    helper = ReadHelper.ahead(tmp_path, DEFAULT_LIMITS, f"{__name__}:slow_here")
    answered_once(helper)

    shared = read_now(tmp_path, helper, slow)

    assert 0 < shared.by_helper < len(paths)
    assert shared.results == alone(tmp_path, paths)
    assert list(shared.results) == list(scan(tmp_path))
    assert helper._process is None and not helper.alive  # stopped at the end of the read


def test_a_file_changed_after_the_helper_read_it_is_read_again_and_its_new_content_wins(
    tmp_path: Path,
) -> None:
    paths = mixed_directory(tmp_path)
    helper = ReadHelper.ahead(tmp_path, DEFAULT_LIMITS, READER)
    answered_once(helper)
    edited = paths[-3]  # the last service, in the helper's first answer
    assert edited.startswith("d2/")
    path = tmp_path / edited
    path.write_text(path.read_text().replace("port: 8080", "port: 9090") + "# edited\n")

    shared = read_now(tmp_path, helper)

    version = shared.results[edited]
    assert version is not None and "port: 9090" in version.text
    assert shared.results == alone(tmp_path, paths)
    assert shared.by_helper > 0


def test_files_added_and_removed_after_the_helper_scanned_are_read_as_the_server_scans_them(
    tmp_path: Path,
) -> None:
    paths = mixed_directory(tmp_path)
    helper = ReadHelper.ahead(tmp_path, DEFAULT_LIMITS, READER)
    answered_once(helper)
    (tmp_path / paths[-1]).unlink()  # answered by the helper
    (tmp_path / "d2" / "svc-9999.yaml").write_text(SERVICE.format(i=9999, a=1, b=2))  # last

    shared = read_now(tmp_path, helper)

    now = sorted(scan(tmp_path))
    assert paths[-1] not in now and "d2/svc-9999.yaml" in now
    assert sorted(shared.results) == now
    assert shared.results == alone(tmp_path, now)
    assert shared.by_helper > 0


def test_answers_of_a_helper_started_ahead_without_the_servers_stamps_are_not_taken(
    tmp_path: Path,
) -> None:
    paths = mixed_directory(tmp_path)
    helper = ReadHelper.ahead(tmp_path, DEFAULT_LIMITS, READER)
    answered_once(helper)

    read = read_files(tmp_path, paths, DEFAULT_LIMITS, _read, helper=helper)

    assert read.by_helper == 0
    assert read.results == alone(tmp_path, paths)


def test_a_helper_started_ahead_that_dies_leaves_the_rest_read_here(tmp_path: Path) -> None:
    paths = mixed_directory(tmp_path)
    helper = ReadHelper.ahead(tmp_path, DEFAULT_LIMITS, READER)
    answered_once(helper)
    assert helper._process is not None
    helper._process.kill()
    helper._process.wait()

    with capture_logs() as logs:
        read = read_now(tmp_path, helper)

    assert 0 < read.by_helper < len(paths)  # what it answered before it died
    assert read.results == alone(tmp_path, paths)
    assert [(e["event"], e["error"]) for e in logs] == [
        ("config_read_helper_failed", "the helper process ended")
    ]


def test_a_helper_that_could_not_start_ahead_says_so_when_taken_over(tmp_path: Path) -> None:
    paths = mixed_directory(tmp_path)

    with capture_logs() as started:
        helper = ReadHelper.ahead(tmp_path, DEFAULT_LIMITS, READER, python=str(tmp_path / "none"))
    with capture_logs() as logs:
        read = read_now(tmp_path, helper)

    assert started == []  # before serve has set up its logging
    assert read.by_helper == 0
    assert read.results == alone(tmp_path, paths)
    assert [e["event"] for e in logs] == ["config_read_helper_failed"]


def test_a_helper_started_ahead_with_other_limits_is_stopped_and_not_used(tmp_path: Path) -> None:
    paths = mixed_directory(tmp_path)
    helper = ReadHelper.ahead(tmp_path, SMALL_FILES, READER)
    assert helper._process is not None
    pid = helper._process.pid

    read = read_files(tmp_path, paths, DEFAULT_LIMITS, _read, helper=helper, stamps=scan(tmp_path))

    assert helper._process is None and not alive(pid)
    assert read.results == alone(tmp_path, paths)


def test_a_store_takes_over_a_helper_started_ahead_and_loads_the_same(tmp_path: Path) -> None:
    mixed_directory(tmp_path)
    alone = ConfigStore(tmp_path).reload()
    helper = ReadHelper.ahead(tmp_path, DEFAULT_LIMITS, READER)
    store = ConfigStore(tmp_path, read_helper=helper)

    shared = store.reload()

    assert shared.mesh == alone.mesh
    assert shared.diagnostics == alone.diagnostics
    assert helper._process is None
    assert store._helper is True  # later reloads start their own


def test_enough_files_counts_config_files_as_the_scan_finds_them(tmp_path: Path) -> None:
    for rel in ("a.yaml", "b/c.yml", "b/.hidden.yaml", ".git/d.yaml", "e.txt", "f/g/h.yaml"):
        write(tmp_path, rel, "")
    (tmp_path / "loop").symlink_to(tmp_path)

    assert enough_files(tmp_path, 3)
    assert not enough_files(tmp_path, 4)
    assert not enough_files(tmp_path / "missing", 1)


# -- `pilotfish serve` starts the helper before importing the server --


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[ReadHelper, int]]:
    """The helpers `serve` starts ahead, with their process ids."""
    helpers: list[tuple[ReadHelper, int]] = []
    ahead = ReadHelper.ahead

    def record(root: Path, limits: ConfigLimits, reader: str, **kwargs: Any) -> ReadHelper:
        helper = ahead(root, limits, reader, **kwargs)
        assert helper._process is not None
        helpers.append((helper, helper._process.pid))
        return helper

    monkeypatch.setattr(ReadHelper, "ahead", staticmethod(record))
    monkeypatch.setattr(cli, "helper_pays", lambda: True)
    monkeypatch.setattr(cli, "configure_logging", lambda *args: None)
    return helpers


def test_serve_stops_its_read_helper_when_the_xds_port_is_taken(
    tmp_path: Path, started: list[tuple[ReadHelper, int]], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config"
    config.mkdir()
    mixed_directory(config)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["serve", "--config-dir", str(config), "--state-dir", str(tmp_path / "state")]
        code = cli.main([*argv, "--xds-address", f"127.0.0.1:{port}"])

    assert code == 2
    assert "already in use" in capsys.readouterr().err
    [(helper, pid)] = started
    assert helper.reads_for(config, DEFAULT_LIMITS, _read)
    assert not alive(pid)


def test_serve_starts_no_read_helper_for_a_small_directory_or_under_workers(
    tmp_path: Path, started: list[tuple[ReadHelper, int]]
) -> None:
    mixed_directory(tmp_path, MIN_FILES - 3)  # and two more files

    assert cli._read_ahead(["--config-dir", str(tmp_path)]) is None
    mixed_directory(tmp_path, MIN_FILES)
    assert cli._read_ahead(["--config-dir", str(tmp_path), "--workers", "2"]) is None
    assert cli._read_ahead(["--config-dir", str(tmp_path), "--help"]) is None
    assert started == []
    helper = cli._read_ahead(["--log-level", "debug", f"--config-dir={tmp_path}", "--grace", "1s"])
    assert helper is not None
    helper.close()
    assert [h for h, _ in started] == [helper]


def test_serve_hands_its_read_helper_to_the_first_reload_which_stops_it(
    tmp_path: Path, started: list[tuple[ReadHelper, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions

    config = tmp_path / "config"
    config.mkdir()
    mixed_directory(config)
    seen: list[Any] = []

    async def first_reload(options: ControlPlaneOptions, grace: float) -> None:
        plane = ControlPlane(options)
        seen.append((options.read_helper, plane.store.reload()))
        plane.store.close()

    monkeypatch.setattr(cli, "_run_until_signalled", first_reload)
    argv = ["serve", "--config-dir", str(config), "--state-dir", str(tmp_path / "state")]
    assert cli.main([*argv, "--xds-address", "127.0.0.1:0", "--admin-address", "off"]) == 0

    [(helper, pid)] = started
    [(handed, result)] = seen
    assert handed is helper and not alive(pid)
    assert result.mesh == ConfigStore(config).reload().mesh


def processes_with(marker: str) -> list[int]:
    """The processes whose environment holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_read_helper_ends_when_serve_is_killed_before_its_first_reload(
    tmp_path: Path,
) -> None:
    if not parallel_read.helper_pays():
        pytest.skip("serve starts no read helper with fewer than 1.5 CPUs")
    config = tmp_path / "config"
    config.mkdir()
    for i in range(2000):  # serve's own minimum: this is another process
        (config / f"svc-{i:04d}.yaml").write_text(SERVICE.format(i=i, a=i // 250, b=i % 250))
    value = f"{os.getpid()}-{tmp_path.name}"
    marker = f"PILOTFISH_TEST_MARKER={value}"
    argv = ["serve", "--config-dir", str(config), "--state-dir", str(tmp_path / "state")]
    addresses = ["--xds-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0"]
    serve = subprocess.Popen(
        [sys.executable, "-m", "controlplane", *argv, *addresses],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PILOTFISH_TEST_MARKER": value},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while len(processes_with(marker)) < 2 and serve.poll() is None:
            assert time.monotonic() < deadline, "serve started no read helper"
            time.sleep(0.01)
        assert serve.poll() is None
    finally:
        serve.kill()
        serve.wait()
    deadline = time.monotonic() + 60
    while processes_with(marker):
        assert time.monotonic() < deadline, f"left running: {processes_with(marker)}"
        time.sleep(0.05)
