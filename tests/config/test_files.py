"""Which files are config files, and scanning the config directory."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

import pytest

from controlplane.config.files import FileStamp, is_config_path, is_editor_temp, scan


def stamp_of(path: Path) -> FileStamp:
    st = os.stat(path)
    return FileStamp(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino, device=st.st_dev)


def write(path: Path, text: str = "kind: Gateway\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "rel",
    ["a.yaml", "a.yml", "sub/a.yaml", "deep/er/gateway.v2.yml", "with space.yaml"],
)
def test_yaml_and_yml_files_are_config_paths(rel: str) -> None:
    assert is_config_path(PurePath(rel)) is True


@pytest.mark.parametrize(
    "rel",
    [
        "a.json",
        "a.yaml.txt",
        "yaml",
        "a.YAML",
        ".a.yaml",
        ".hidden/a.yaml",
        "sub/.hidden/a.yaml",
        "..data",
        "..data/a.yaml",
        "..data_tmp",
        "..2024_01_01_00_00_00.123456789/a.yaml",
        "a.yaml~",
        ".a.yaml.swp",
        "a.yaml.swp",
        "a.yaml.swo",
        "a.yaml.swx",
        "#a.yaml#",
        ".#a.yaml",
        "4913",
        "sub/4913",
        "a.yaml.tmp",
        ".a.yaml.tmp",
        "a.yaml.bak",
        "a.yaml.orig",
        "",
    ],
)
def test_hidden_editor_temp_and_other_files_are_not_config_paths(rel: str) -> None:
    assert is_config_path(PurePath(rel)) is False


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.yaml~", True),
        ("a.yaml.swp", True),
        ("a.yaml.swn", True),
        ("a.yaml.swx", True),
        ("#a.yaml#", True),
        (".#a.yaml", True),
        ("4913", True),
        ("a.yaml.tmp", True),
        ("a.yaml.bak", True),
        ("a.yaml.orig", True),
        ("a.yaml", False),
        ("README.md", False),
        ("#", False),
        ("conf.d", False),
    ],
)
def test_editor_temp_names(name: str, expected: bool) -> None:
    assert is_editor_temp(name) is expected


def test_scan_keys_every_config_file_by_posix_relative_path_with_its_stamp(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml")
    b = write(tmp_path / "gateways" / "b.yml", "x: 1\n")
    c = write(tmp_path / "gateways" / "eu" / "c.yaml", "")

    assert scan(tmp_path) == {
        "a.yaml": stamp_of(a),
        "gateways/b.yml": stamp_of(b),
        "gateways/eu/c.yaml": stamp_of(c),
    }


def test_scan_stamp_changes_when_a_file_is_rewritten(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "x: 1\n")
    before = scan(tmp_path)["a.yaml"]
    a.write_text("x: 22\n")
    after = scan(tmp_path)["a.yaml"]

    assert after == stamp_of(a)
    assert after.size == before.size + 1


def test_scan_skips_hidden_entries_editor_files_and_other_files(tmp_path: Path) -> None:
    keep = write(tmp_path / "keep.yaml")
    for rel in [
        ".hidden.yaml",
        ".git/config.yaml",
        "sub/.cache/x.yaml",
        "keep.yaml~",
        ".keep.yaml.swp",
        "keep.yaml.bak",
        "#keep.yaml#",
        "4913",
        "README.md",
        "values.json",
    ]:
        write(tmp_path / rel)

    assert scan(tmp_path) == {"keep.yaml": stamp_of(keep)}


def test_scan_follows_a_symlink_to_a_file_and_stamps_the_target(tmp_path: Path) -> None:
    target = write(tmp_path / "elsewhere" / "real.txt")
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked.yaml").symlink_to(target)

    assert scan(root) == {"linked.yaml": stamp_of(target)}


def test_scan_follows_a_symlink_to_a_directory(tmp_path: Path) -> None:
    target = write(tmp_path / "shared" / "mesh.yaml")
    root = tmp_path / "root"
    root.mkdir()
    (root / "shared").symlink_to(tmp_path / "shared")

    assert scan(root) == {"shared/mesh.yaml": stamp_of(target)}


def test_scan_reports_a_directory_reachable_twice_under_its_shallowest_name(
    tmp_path: Path,
) -> None:
    target = write(tmp_path / "b" / "x.yaml")
    write(tmp_path / "a" / "sub" / "placeholder.txt")
    (tmp_path / "a" / "sub" / "link").symlink_to(tmp_path / "b")
    (tmp_path / "c").symlink_to(tmp_path / "b")

    assert scan(tmp_path) == {"b/x.yaml": stamp_of(target)}


def test_scan_terminates_on_symlink_loops(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml")
    b = write(tmp_path / "sub" / "b.yaml")
    (tmp_path / "self").symlink_to(tmp_path)
    (tmp_path / "sub" / "up").symlink_to(tmp_path)
    (tmp_path / "sub" / "here").symlink_to(tmp_path / "sub")

    assert scan(tmp_path) == {"a.yaml": stamp_of(a), "sub/b.yaml": stamp_of(b)}


def test_scan_skips_dangling_symlinks(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml")
    (tmp_path / "gone.yaml").symlink_to(tmp_path / "missing.yaml")
    (tmp_path / "gone-dir").symlink_to(tmp_path / "missing-dir")

    assert scan(tmp_path) == {"a.yaml": stamp_of(a)}


def test_scan_skips_fifos_named_like_config_files(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml")
    os.mkfifo(tmp_path / "pipe.yaml")

    assert scan(tmp_path) == {"a.yaml": stamp_of(a)}


def test_scan_reads_a_kubernetes_configmap_volume_through_its_links(tmp_path: Path) -> None:
    data = write(tmp_path / "..2026_01_01_00_00_00.1" / "gateway.yaml")
    write(tmp_path / "..2026_01_01_00_00_00.1" / "routes.yml")
    (tmp_path / "..data").symlink_to("..2026_01_01_00_00_00.1")
    (tmp_path / "gateway.yaml").symlink_to("..data/gateway.yaml")
    (tmp_path / "routes.yml").symlink_to("..data/routes.yml")

    found = scan(tmp_path)

    assert sorted(found) == ["gateway.yaml", "routes.yml"]
    assert found["gateway.yaml"] == stamp_of(data)


def test_scan_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    assert scan(tmp_path / "missing") == {}


def test_scan_of_a_file_root_is_empty(tmp_path: Path) -> None:
    assert scan(write(tmp_path / "a.yaml")) == {}


def test_scan_skips_a_file_that_vanishes_during_the_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stays = write(tmp_path / "stays.yaml")
    vanishes = write(tmp_path / "vanishes.yaml")
    real_scandir = os.scandir

    class Listing:
        def __init__(self, entries: list[os.DirEntry[str]]) -> None:
            self._entries = entries

        def __enter__(self) -> Iterator[os.DirEntry[str]]:
            return iter(self._entries)

        def __exit__(self, *exc: object) -> None:
            return None

    def racing_scandir(path: Any) -> Listing:
        with real_scandir(path) as listing:
            entries = list(listing)
        vanishes.unlink(missing_ok=True)
        return Listing(entries)

    monkeypatch.setattr(os, "scandir", racing_scandir)

    assert scan(tmp_path) == {"stays.yaml": stamp_of(stays)}


def test_scan_skips_a_directory_it_cannot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = write(tmp_path / "a.yaml")
    write(tmp_path / "locked" / "b.yaml")
    real_scandir = os.scandir

    def guarded_scandir(path: Any) -> Any:
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", guarded_scandir)

    assert scan(tmp_path) == {"a.yaml": stamp_of(a)}
    unreadable: dict[str, OSError] = {}
    assert scan(tmp_path, unreadable) == {"a.yaml": stamp_of(a)}
    assert {path: exc.strerror for path, exc in unreadable.items()} == {
        "locked/": "Permission denied"
    }


def test_scan_of_ten_thousand_files_takes_well_under_100ms(tmp_path: Path) -> None:
    for d in range(50):
        directory = tmp_path / f"ns-{d}"
        directory.mkdir()
        for f in range(200):
            (directory / f"route-{f}.yaml").touch()

    # CPU time, not wall time: other processes competing for the CPU must not fail this.
    timings = []
    for _ in range(5):
        started = time.process_time()
        found = scan(tmp_path)
        timings.append(time.process_time() - started)

    assert len(found) == 10_000
    assert min(timings) < 0.1
