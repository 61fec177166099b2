"""Reading many files with a helper process gives exactly what reading alone gives."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from controlplane.config import parallel_read
from controlplane.config.files import scan
from controlplane.config.limits import DEFAULT_LIMITS, ConfigLimits
from controlplane.config.parallel_read import (
    FilesRead,
    Reader,
    cores_available,
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
        "setup = p._read_frame(sys.stdin.buffer)\n"
        "number, chunk = p._read_frame(sys.stdin.buffer)\n"
        "from controlplane.config.store import _read\n"
        "from pathlib import Path\n"
        "p._write_frame(sys.stdout.buffer, (number, [_read(Path(setup[0]), c, setup[1]) "
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
