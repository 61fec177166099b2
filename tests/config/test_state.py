"""StateDir: the accepted versions, written atomically and read back once at start."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from controlplane.config.state import StateDir, default_state_dir


def version(text: str) -> tuple[str, str]:
    return hashlib.sha256(text.encode()).hexdigest(), text


A = version("kind: A\n")
B = version("kind: B\n")
B2 = version("kind: B, edited\n")


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.mkdir()
    return path


def saved(state: StateDir, files: dict[str, tuple[str, str]]) -> None:
    state.save(files)
    assert state.flush(5.0)


def test_saved_versions_load_back_in_a_new_instance(tmp_path: Path, config_dir: Path) -> None:
    saved(StateDir(tmp_path / "state", config_dir), {"a.yaml": A, "sub/b.yaml": B})
    assert StateDir(tmp_path / "state", config_dir).load() == {"a.yaml": A, "sub/b.yaml": B}


def test_the_record_is_a_manifest_and_one_file_per_version(
    tmp_path: Path, config_dir: Path
) -> None:
    state = StateDir(tmp_path / "state", config_dir)
    saved(state, {"a.yaml": A, "b.yaml": B})
    saved(state, {"a.yaml": A, "b.yaml": B2})
    assert json.loads((tmp_path / "state" / "manifest.json").read_text()) == {
        "format": 1,
        "config_dir": os.path.realpath(config_dir),
        "files": {"a.yaml": A[0], "b.yaml": B2[0]},
    }
    # The replaced version is removed; no temporary file is left behind.
    assert sorted(os.listdir(tmp_path / "state" / "files")) == sorted([A[0], B2[0]])
    assert sorted(os.listdir(tmp_path / "state")) == ["files", "manifest.json"]


def test_temporaries_left_by_a_crash_are_removed(tmp_path: Path, config_dir: Path) -> None:
    root = tmp_path / "state"
    saved(StateDir(root, config_dir), {"a.yaml": A})
    (root / ".manifest.json.99.tmp").write_text("half")
    (root / "files" / f".{B[0]}.99.tmp").write_text("half")
    saved(StateDir(root, config_dir), {"a.yaml": A, "b.yaml": B})
    assert sorted(os.listdir(root)) == ["files", "manifest.json"]
    assert sorted(os.listdir(root / "files")) == sorted([A[0], B[0]])


def test_nothing_recorded_loads_as_nothing_without_a_log_line(
    tmp_path: Path, config_dir: Path
) -> None:
    with capture_logs() as logs:
        assert StateDir(tmp_path / "state", config_dir).load() == {}
    assert logs == []


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda root: (root / "manifest.json").write_text("{not json"), "is not a Pilotfish"),
        (lambda root: (root / "files" / A[0]).write_text("kind: X\n"), "does not match"),
        (lambda root: (root / "files" / A[0]).unlink(), "cannot read"),
        (
            lambda root: (root / "manifest.json").write_text(
                json.dumps({"format": 1, "config_dir": "/elsewhere", "files": {}})
            ),
            "records '/elsewhere'",
        ),
    ],
)
def test_a_damaged_record_is_ignored_as_a_whole_and_logged(
    tmp_path: Path, config_dir: Path, damage: object, reason: str
) -> None:
    root = tmp_path / "state"
    saved(StateDir(root, config_dir), {"a.yaml": A, "b.yaml": B})
    damage(root)  # type: ignore[operator]
    with capture_logs() as logs:
        assert StateDir(root, config_dir).load() == {}
    assert [(e["event"], e["log_level"]) for e in logs] == [("config_state_unusable", "error")]
    assert reason in logs[0]["reason"]


def test_a_digest_that_is_not_a_digest_is_refused(tmp_path: Path, config_dir: Path) -> None:
    root = tmp_path / "state"
    saved(StateDir(root, config_dir), {"a.yaml": A})
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"]["a.yaml"] = "../manifest.json"
    (root / "manifest.json").write_text(json.dumps(manifest))
    with capture_logs() as logs:
        assert StateDir(root, config_dir).load() == {}
    assert "bad entry for 'a.yaml'" in logs[0]["reason"]


def test_a_state_dir_that_cannot_be_written_is_logged_once_and_then_when_it_works(
    tmp_path: Path, config_dir: Path
) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the state directory's parent should be")
    state = StateDir(blocker / "state", config_dir)
    with capture_logs() as logs:
        saved(state, {"a.yaml": A})
        saved(state, {"a.yaml": A, "b.yaml": B})
        blocker.unlink()
        blocker.mkdir()
        saved(state, {"a.yaml": A, "b.yaml": B})
    assert [e["event"] for e in logs] == ["config_state_write_failed", "config_state_write_resumed"]
    assert "Not a directory" in logs[0]["error"]
    assert StateDir(blocker / "state", config_dir).load() == {"a.yaml": A, "b.yaml": B}


def test_a_save_after_close_is_dropped(tmp_path: Path, config_dir: Path) -> None:
    state = StateDir(tmp_path / "state", config_dir)
    saved(state, {"a.yaml": A})
    state.close()
    state.save({"b.yaml": B})
    assert state.flush(1.0)
    assert StateDir(tmp_path / "state", config_dir).load() == {"a.yaml": A}


def test_the_default_is_under_xdg_state_home_and_depends_on_the_config_dirs_real_path(
    tmp_path: Path, config_dir: Path
) -> None:
    link = tmp_path / "link"
    link.symlink_to(config_dir)
    digest = hashlib.sha256(os.path.realpath(config_dir).encode()).hexdigest()[:12]
    env = {"XDG_STATE_HOME": "/var/lib/x"}
    assert default_state_dir(config_dir, env) == Path("/var/lib/x/pilotfish") / digest
    assert default_state_dir(link, env) == default_state_dir(config_dir, env)
    assert default_state_dir(tmp_path, env) != default_state_dir(config_dir, env)
    home = os.path.expanduser("~")
    assert default_state_dir(config_dir, {}) == Path(home, ".local/state/pilotfish", digest)
