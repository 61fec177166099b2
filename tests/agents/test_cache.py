"""The last applied configuration on disk: atomic writes, exact round trip, bad files ignored."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from agents.cache import FILE_NAME, ConfigCache, HeldConfig, TypeConfig
from controlplane.xds import CLUSTER, ENDPOINT, LISTENER
from tests.xds.resources import eds_cluster, load_assignment

NODE = {"role": "sidecar", "labels": {}, "bind_address": "127.0.0.1"}


def config() -> HeldConfig:
    return HeldConfig(
        {
            CLUSTER: TypeConfig("c1", {"a": eds_cluster("a"), "b": eds_cluster("b")}),
            ENDPOINT: TypeConfig(
                "e1",
                {"a": load_assignment("a", "10.0.0.1:80")},
                {"a": "hash-a"},
            ),
            LISTENER: TypeConfig("", {}),
        }
    )


def test_saved_configuration_loads_back_equal(tmp_path: Path) -> None:
    cache = ConfigCache(tmp_path / "cache", NODE)
    assert cache.save(config()) is True
    assert ConfigCache(tmp_path / "cache", NODE).load() == config()
    assert sorted(os.listdir(tmp_path / "cache")) == [FILE_NAME]


def test_missing_file_loads_nothing_silently(tmp_path: Path) -> None:
    with capture_logs() as logs:
        assert ConfigCache(tmp_path, NODE).load() is None
    assert logs == []


def test_a_file_written_for_another_node_class_is_not_used(tmp_path: Path) -> None:
    ConfigCache(tmp_path, NODE).save(config())
    other = {**NODE, "role": "gateway"}
    with capture_logs() as logs:
        assert ConfigCache(tmp_path, other).load() is None
    assert [(e["event"], e["reason"]) for e in logs] == [
        ("agent_cache_ignored", "written for another role, labels or bind address")
    ]


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) // 2],
        lambda text: text.replace('"any": "', '"any": "!!'),
        lambda text: "[]",
        lambda text: json.dumps({**json.loads(text), "types": {"type.x/Unknown": {}}}),
    ],
    ids=["torn", "bad-base64", "not-an-object", "unknown-type"],
)
def test_a_damaged_file_is_reported_and_ignored(tmp_path: Path, damage: Any) -> None:
    cache = ConfigCache(tmp_path, NODE)
    cache.save(config())
    cache.path.write_text(damage(cache.path.read_text()))
    with capture_logs() as logs:
        assert cache.load() is None
    assert [e["event"] for e in logs] in (["agent_cache_corrupt"], ["agent_cache_ignored"])


def test_save_replaces_the_file_atomically_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    cache = ConfigCache(tmp_path, NODE)
    cache.save(config())
    before = os.stat(cache.path).st_ino
    smaller = HeldConfig({CLUSTER: TypeConfig("c2", {"a": eds_cluster("a")})})
    cache.save(smaller)
    assert os.stat(cache.path).st_ino != before  # a new file renamed over the old one
    assert cache.load() == smaller
    assert sorted(os.listdir(tmp_path)) == [FILE_NAME]


def test_a_failed_write_keeps_the_old_file_and_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = ConfigCache(tmp_path, NODE)
    cache.save(config())

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with capture_logs() as logs:
        assert cache.save(HeldConfig({})) is False
    monkeypatch.undo()
    assert [e["event"] for e in logs] == ["agent_cache_not_written"]
    assert cache.load() == config()
    assert sorted(os.listdir(tmp_path)) == [FILE_NAME]
