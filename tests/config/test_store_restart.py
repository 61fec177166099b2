"""ConfigStore with a state directory: the last good version of each file survives a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from controlplane.config.state import StateDir
from controlplane.config.store import ConfigStore
from tests.config.test_store import (
    MISSPELT_DIAGNOSTIC,
    MISSPELT_REVIEWS,
    RATINGS_HOST,
    REVIEWS_HOST,
    ROUTE_TO_REVIEWS,
    Directory,
    hosts,
    outcome,
    ports,
    refuse_to_read,
    service,
)


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def config(tmp_path: Path) -> Directory:
    root = tmp_path / "config"
    root.mkdir()
    return Directory(root)


def running(config: Directory, state_path: Path | None) -> ConfigStore:
    """A store as a server starts it: first reload done, its record written."""
    store = ConfigStore(
        config.root, state=StateDir(state_path, config.root) if state_path else None
    )
    store.reload()
    return store


def stopped(store: ConfigStore) -> None:
    store.close()


def test_a_rejected_edit_serves_the_last_good_version_after_a_restart(
    config: Directory, state_path: Path
) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("ratings.yaml", service("ratings"))
    before = running(config, state_path)
    config.write("reviews.yaml", MISSPELT_REVIEWS)
    assert outcome(before.reload()) == (False, (), ("reviews.yaml",))
    served = before.mesh
    stopped(before)

    with capture_logs() as logs:
        after = ConfigStore(config.root, state=StateDir(state_path, config.root))
        result = after.reload()
    assert after.mesh == served
    assert hosts(after.mesh) == [RATINGS_HOST, REVIEWS_HOST]
    # Relative to the record, nothing changed but the rejected edit.
    assert outcome(result) == (False, (), ("reviews.yaml",))
    assert result.diagnostics == (MISSPELT_DIAGNOSTIC,)
    stale = [e for e in logs if e["event"] == "config_stale_served"]
    assert stale == [
        {
            "event": "config_stale_served",
            "log_level": "error",
            "file": "reviews.yaml",
            "reason": MISSPELT_DIAGNOSTIC.render(),
            "restored_from": str(state_path),
            "digest": stale[0]["digest"],
        }
    ]


def test_without_a_record_a_broken_file_contributes_nothing(config: Directory) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("ratings.yaml", service("ratings"))
    before = running(config, None)
    config.write("reviews.yaml", MISSPELT_REVIEWS)
    before.reload()
    assert hosts(before.mesh) == [RATINGS_HOST, REVIEWS_HOST]

    after = running(config, None)
    assert hosts(after.mesh) == [RATINGS_HOST]


def test_fixing_the_file_after_a_restart_applies_it_and_updates_the_record(
    config: Directory, state_path: Path
) -> None:
    config.write("reviews.yaml", service("reviews"))
    first = running(config, state_path)
    config.write("reviews.yaml", MISSPELT_REVIEWS)
    first.reload()
    stopped(first)

    second = running(config, state_path)
    config.write("reviews.yaml", service("reviews", port=9999))
    assert outcome(second.reload()) == (True, ("reviews.yaml",), ())
    stopped(second)
    config.write("reviews.yaml", MISSPELT_REVIEWS)
    third = running(config, state_path)
    assert ports(third.mesh, REVIEWS_HOST) == [9999]


def test_a_file_deleted_while_the_server_was_down_stays_deleted(
    config: Directory, state_path: Path
) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("ratings.yaml", service("ratings"))
    stopped(running(config, state_path))
    config.delete("ratings.yaml")
    with capture_logs() as logs:
        after = running(config, state_path)
    assert hosts(after.mesh) == [REVIEWS_HOST]
    assert [e for e in logs if e["event"] == "config_stale_served"] == []


def test_a_file_edited_while_the_server_was_down_applies(
    config: Directory, state_path: Path
) -> None:
    config.write("reviews.yaml", service("reviews"))
    stopped(running(config, state_path))
    config.write("reviews.yaml", service("reviews", port=9999))
    assert ports(running(config, state_path).mesh, REVIEWS_HOST) == [9999]


def test_the_definition_that_won_a_duplicate_keeps_winning_after_a_restart(
    config: Directory, state_path: Path
) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("routing.yaml", ROUTE_TO_REVIEWS)
    before = running(config, state_path)
    # Sorts first, arrives second: held back while running.
    config.write("a-copy.yaml", service("reviews", port=9999))
    assert outcome(before.reload()) == (False, (), ("a-copy.yaml",))
    stopped(before)

    after = running(config, state_path)
    assert ports(after.mesh, REVIEWS_HOST) == [9080]
    assert [(d.code, d.file) for d in after.diagnostics] == [("PF208", "a-copy.yaml")]

    # With no record, the file that sorts first wins.
    fresh = running(config, None)
    assert ports(fresh.mesh, REVIEWS_HOST) == [9999]
    assert [(d.code, d.file) for d in fresh.diagnostics] == [("PF208", "reviews.yaml")]


def test_an_unusable_record_starts_from_the_files_on_disk(
    config: Directory, state_path: Path
) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("ratings.yaml", service("ratings"))
    before = running(config, state_path)
    config.write("reviews.yaml", MISSPELT_REVIEWS)
    before.reload()
    stopped(before)
    (state_path / "manifest.json").write_text("garbage")
    with capture_logs() as logs:
        after = running(config, state_path)
    assert hosts(after.mesh) == [RATINGS_HOST]
    assert [e["event"] for e in logs if e["event"].startswith("config_state")] == [
        "config_state_unusable"
    ]
    stopped(after)
    # The record is rewritten from what is served now.
    assert StateDir(state_path, config.root).load().keys() == {"ratings.yaml"}


def test_a_state_dir_that_cannot_be_written_does_not_stop_serving(
    config: Directory, tmp_path: Path
) -> None:
    (tmp_path / "blocker").write_text("")
    config.write("reviews.yaml", service("reviews"))
    with capture_logs() as logs:
        store = running(config, tmp_path / "blocker" / "state")
        config.write("ratings.yaml", service("ratings"))
        store.reload()
        stopped(store)
    assert hosts(store.mesh) == [RATINGS_HOST, REVIEWS_HOST]
    assert [e["event"] for e in logs if e["event"].startswith("config_state")] == [
        "config_state_unusable",
        "config_state_write_failed",
    ]


def test_the_record_is_written_only_when_accepted_versions_change(
    config: Directory, state_path: Path
) -> None:
    config.write("reviews.yaml", service("reviews"))
    store = running(config, state_path)
    stopped_once = StateDir(state_path, config.root)
    assert store.state is not None
    assert store.state.flush(5.0)
    manifest = state_path / "manifest.json"
    written = manifest.stat().st_mtime_ns, manifest.stat().st_ino
    config.write("reviews.yaml", MISSPELT_REVIEWS)
    store.reload()
    assert store.state.flush(5.0)
    assert (manifest.stat().st_mtime_ns, manifest.stat().st_ino) == written
    assert stopped_once.load().keys() == {"reviews.yaml"}


def test_a_file_unreadable_at_start_is_served_from_the_record(
    config: Directory, state_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write("reviews.yaml", service("reviews"))
    config.write("ratings.yaml", service("ratings"))
    stopped(running(config, state_path))
    refuse_to_read(monkeypatch, "reviews.yaml", PermissionError(13, "Permission denied"))
    with capture_logs() as logs:
        after = running(config, state_path)
    assert hosts(after.mesh) == [RATINGS_HOST, REVIEWS_HOST]
    assert [(e["file"], e["reason"]) for e in logs if e["event"] == "config_stale_served"] == [
        ("reviews.yaml", "reviews.yaml:1:1: error[PF105] cannot read the file: Permission denied")
    ]
