"""ConfigStore.pack_texts: the texts held for diagnostics and the state directory, compressed.

The housekeeper of `pilotfish serve` calls it when the server is quiet; after
it, every file version holds its text as zlib bytes, and diagnostics, the
state directory and reloads behave as before.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from controlplane.config.diagnostics import Severity
from controlplane.config.state import StateDir
from controlplane.config.store import ConfigStore, FileVersion, _read
from tests.config.test_store import REVIEWS_HOST, Directory, service, yaml

RULES = """
    apiVersion: networking.istio.io/v1
    kind: DestinationRule
    metadata:
      name: reviews
    spec:
      host: reviews
    """


def held_versions(store: ConfigStore) -> list[FileVersion]:
    state = store._state
    return [*state.current.values(), *state.accepted.values()]


def test_a_packed_version_holds_zlib_bytes_and_gives_back_the_same_text(tmp_path: Path) -> None:
    text = yaml(service("reviews"))
    (tmp_path / "reviews.yaml").write_text(text)
    version = _read(tmp_path, "reviews.yaml")
    assert version is not None and version.body == text
    assert version.pack() is True
    assert isinstance(version.body, bytes) and zlib.decompress(version.body) == text.encode()
    assert version.text == text and version.get_text() == text
    assert version.pack() is False
    assert version == _read(tmp_path, "reviews.yaml")


def test_pack_texts_packs_each_held_version_once(tmp_path: Path) -> None:
    config = Directory(tmp_path / "mesh")
    config.write("reviews.yaml", service("reviews"))
    config.write("ratings.yaml", service("ratings"))
    store = ConfigStore(config.root)
    store.reload()
    assert all(isinstance(v.body, str) for v in held_versions(store))
    assert store.pack_texts() == 2
    assert all(isinstance(v.body, bytes) for v in held_versions(store))
    assert {v.path: v.text for v in held_versions(store)} == {
        "reviews.yaml": yaml(service("reviews")),
        "ratings.yaml": yaml(service("ratings")),
    }
    assert store.pack_texts() == 0
    config.write("ratings.yaml", service("ratings", 9090))
    store.reload()
    assert store.pack_texts() == 1


def test_pack_texts_waits_for_a_reload_under_way(tmp_path: Path) -> None:
    config = Directory(tmp_path / "mesh")
    config.write("reviews.yaml", service("reviews"))
    store = ConfigStore(config.root)
    store.reload()
    with store._lock:
        assert store.pack_texts() == 0
    assert store.pack_texts() == 1


def test_warnings_of_packed_versions_keep_their_positions(tmp_path: Path) -> None:
    config = Directory(tmp_path / "mesh")
    config.write("rules.yaml", RULES)
    store = ConfigStore(config.root)
    store.reload()
    assert store.pack_texts() == 1
    config.write("ratings.yaml", service("ratings"))
    result = store.reload()
    assert result.applied == ("ratings.yaml",)
    assert store.mesh.policy(REVIEWS_HOST) is not None
    assert [(d.severity, d.code, d.file, d.line, d.column) for d in result.diagnostics] == [
        (Severity.WARNING, "PF209", "rules.yaml", 6, 3)
    ]


def test_the_state_directory_records_packed_versions_as_their_text(tmp_path: Path) -> None:
    config = Directory(tmp_path / "mesh")
    state_path = tmp_path / "state"
    config.write("reviews.yaml", service("reviews"))
    config.write("ratings.yaml", service("ratings"))
    state = StateDir(state_path, config.root)
    store = ConfigStore(config.root, state=state)
    store.reload()
    state.flush()
    assert store.pack_texts() == 2
    config.write("ratings.yaml", service("ratings", 9090))
    store.reload()
    state.flush()
    recorded = StateDir(state_path, config.root).load()
    assert {rel: text for rel, (_, text) in recorded.items()} == {
        "reviews.yaml": yaml(service("reviews")),
        "ratings.yaml": yaml(service("ratings", 9090)),
    }
    # A fresh record (the versions stored are all new) is written from packed texts too.
    store.pack_texts()
    fresh = StateDir(tmp_path / "fresh", config.root)
    fresh.save({rel: (v.digest, v.get_text) for rel, v in store._state.accepted.items()})
    fresh.flush()
    assert StateDir(tmp_path / "fresh", config.root).load() == recorded
    store.close()
