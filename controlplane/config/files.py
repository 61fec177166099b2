"""Which files in the config directory are configuration, and a fast scan of them.

Operators drop multi-document YAML files (``*.yaml``, ``*.yml``) anywhere under
the config directory. Everything else in that tree is noise that must never be
read as configuration:

* hidden entries: any path component starting with ``.`` hides the whole
  subtree. This covers dotfiles, ``.git`` and the Kubernetes ConfigMap volume
  internals (``..data``, ``..2024_01_01_00_00_00.123`` and ``..data_tmp``);
* editor temporaries and backups (:func:`is_editor_temp`): ``name~``, vim swap
  files (``.swp``, ``.swo``, ... and ``.swx``) and vim's ``4913`` probe, emacs
  ``#name#`` and ``.#name``, ``*.tmp``, ``*.bak`` and ``*.orig``.

:func:`scan` walks the tree with :func:`os.scandir` and returns a
:class:`FileStamp` per config file. A reloader compares two scans to decide
whether anything changed. The scan follows symlinks, because a ConfigMap volume
exposes each key as ``name.yaml -> ..data/name.yaml`` with
``..data -> ..<timestamp>/``, so the stamp of ``name.yaml`` is that of the file
the kubelet wrote last. Hidden directories are never entered. Each directory is
listed once, identified by ``(device, inode)``, so a symlink loop cannot make
the scan run forever, and a directory that is reachable by two paths is
reported under the one a breadth-first walk in name order meets first (so the
shallowest). Entries that vanish or cannot be read during the scan are left out
without an error, since racing an editor that is saving a file is normal; a
directory that cannot be listed is reported to the caller, who must not take
its files for deleted.
"""

from __future__ import annotations

import os
import re
import stat
from collections import deque
from dataclasses import dataclass
from pathlib import Path, PurePath

CONFIG_SUFFIXES = (".yaml", ".yml")

_TEMP_SUFFIXES = (".tmp", ".bak", ".orig")
# Vim names its swap files .swp, then .swo, .swn, ... down to .swa; .swx is the
# name it uses to test whether a directory is writable.
_VIM_SWAP = re.compile(r"\.sw[a-px]\Z")
# Vim writes this file to check that it can create files in a directory.
_VIM_PROBE = "4913"


@dataclass(frozen=True, slots=True)
class FileStamp:
    """What a file looked like when scanned (of the symlink's target, if it is one)."""

    size: int
    mtime_ns: int
    inode: int
    device: int


def is_hidden(rel: PurePath) -> bool:
    """Whether any component of the relative path ``rel`` starts with ``.``."""
    return any(part.startswith(".") for part in rel.parts)


def is_editor_temp(name: str) -> bool:
    """Whether the file name ``name`` is an editor's temporary, swap or backup file."""
    return (
        name.endswith("~")
        or name.endswith(_TEMP_SUFFIXES)
        or _VIM_SWAP.search(name) is not None
        or name == _VIM_PROBE
        or (len(name) > 1 and name.startswith("#") and name.endswith("#"))
        or name.startswith(".#")
    )


def is_config_path(rel: PurePath) -> bool:
    """Whether ``rel``, relative to the config directory, names a configuration file."""
    return (
        bool(rel.parts)
        and not is_hidden(rel)
        and rel.name.endswith(CONFIG_SUFFIXES)
        and not is_editor_temp(rel.name)
    )


def scan(root: Path, unreadable: dict[str, OSError] | None = None) -> dict[str, FileStamp]:
    """Every config file under ``root``, keyed by its POSIX path relative to ``root``.

    Returns an empty dict if ``root`` does not exist or is not a directory.
    Directories that exist but cannot be listed (permissions, I/O errors) are
    added to ``unreadable``, keyed by their relative path with a trailing ``/``
    (``""`` for ``root``): what they hold is unknown, not gone.
    """
    try:
        root_stat = os.stat(root)
    except OSError:
        return {}
    if not stat.S_ISDIR(root_stat.st_mode):
        return {}
    visited = {(root_stat.st_dev, root_stat.st_ino)}
    found: dict[str, FileStamp] = {}
    pending: deque[tuple[str, str]] = deque([(os.fspath(root), "")])
    while pending:
        directory, prefix = pending.popleft()
        subdirectories: list[tuple[str, str]] = []
        try:
            with os.scandir(directory) as listing:
                for entry in listing:
                    name = entry.name
                    if name.startswith("."):
                        continue
                    try:
                        # No editor temporary name ends in .yaml or .yml, so the suffix is
                        # enough here; this loop is hot.
                        # is_file() rules out FIFOs and devices: reading those could block.
                        if name.endswith(CONFIG_SUFFIXES) and entry.is_file():
                            target = entry.stat()
                            found[prefix + name] = FileStamp(
                                size=target.st_size,
                                mtime_ns=target.st_mtime_ns,
                                inode=target.st_ino,
                                device=target.st_dev,
                            )
                        elif entry.is_dir():
                            subdirectories.append((name, entry.path))
                    except OSError:
                        continue
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            if unreadable is not None:
                unreadable[prefix] = exc
            continue
        for name, path in sorted(subdirectories):
            try:
                target = os.stat(path)
            except OSError:
                continue
            key = (target.st_dev, target.st_ino)
            if key not in visited:
                visited.add(key)
                pending.append((path, f"{prefix}{name}/"))
    return found
