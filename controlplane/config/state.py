"""The state directory: the last good version of every file, kept across restarts.

A :class:`~controlplane.config.store.ConfigStore` serves, per file, the last
version that was part of a good model (its *accepted* version). Without a
record of those versions a restart would start from whatever is on disk, so
a typo that was safely rejected while running would take the whole file out
of the mesh on the next start. :class:`StateDir` keeps that record in a
directory operators do not edit (by default
``$XDG_STATE_HOME/pilotfish/<hash>``, see :func:`default_state_dir`)::

    manifest.json     {"format": 1, "config_dir": "/real/path", "files": {"a.yaml": "<sha256>"}}
    files/<sha256>    the bytes of one accepted version, named by its digest

Writing (:meth:`StateDir.save`) only hands the accepted versions to a
background thread and returns: the latest set wins, so a burst of reloads
costs one write. The thread writes each version it does not have yet as a
temporary file, fsyncs and renames it into place, then replaces the manifest
the same way and removes versions no longer named. The manifest is renamed
last, so a crash at any point leaves the previous record or the new one,
never a mix. Content addressing means an edit rewrites one file, not all.

Reading (:meth:`StateDir.load`) happens once, at start. A record that cannot
be used (unparsable manifest, a version missing or not matching its digest,
a record of another config directory) is ignored as a whole and logged once:
starting without it is what Pilotfish did before there was a state
directory. Likewise a state directory that cannot be written is logged once
(and again once it works) and never stops serving.

Several processes serving one directory (``pilotfish serve --workers``) share
one state directory with a single writer: the others open it with
``read_only=True``, since two writers could each delete a version the other's
newer manifest names. Their record is the same anyway: they accept the same
files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
VERSIONS = "files"
_DIGEST = re.compile(r"[0-9a-f]{64}\Z")

Text = str | Callable[[], str]
"""A version's text, or what returns it (called only when the version is written)."""


def default_state_dir(config_dir: Path, environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/pilotfish/<hash>`` (``~/.local/state`` without the variable).

    The hash is of the config directory's real path, so each config directory
    gets its own record and two servers of different directories never share one.
    """
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    real = os.path.realpath(config_dir)
    return Path(base) / "pilotfish" / hashlib.sha256(real.encode()).hexdigest()[:12]


class StateDir:
    """The record of accepted versions in ``path`` for the config directory ``config_dir``."""

    def __init__(self, path: Path, config_dir: Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.config_dir = os.path.realpath(config_dir)
        self._cond = threading.Condition()
        self._pending: dict[str, tuple[str, Text]] | None = None
        self._writing = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._write_failed = False
        self._stored: set[str] | None = None

    def load(self) -> dict[str, tuple[str, str]]:
        """The recorded versions, ``{path: (digest, text)}``; empty when none can be used."""
        manifest_path = self.path / MANIFEST
        try:
            raw = manifest_path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            return self._unusable(f"cannot read {manifest_path}: {exc.strerror or exc}")
        try:
            manifest = json.loads(raw)
            files = manifest["files"]
            if manifest.get("format") != FORMAT or not isinstance(files, dict):
                raise ValueError(f"unknown format {manifest.get('format')!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return self._unusable(f"{manifest_path} is not a Pilotfish manifest: {exc}")
        if manifest.get("config_dir") != self.config_dir:
            return self._unusable(
                f"{manifest_path} records {manifest.get('config_dir')!r}, not {self.config_dir}"
            )
        out: dict[str, tuple[str, str]] = {}
        for rel, digest in files.items():
            if not isinstance(rel, str) or not isinstance(digest, str) or not _DIGEST.match(digest):
                return self._unusable(f"{manifest_path} has a bad entry for {rel!r}")
            version = self.path / VERSIONS / digest
            try:
                data = version.read_bytes()
            except OSError as exc:
                return self._unusable(f"cannot read {version}: {exc.strerror or exc}")
            if hashlib.sha256(data).hexdigest() != digest:
                return self._unusable(f"{version} does not match its digest")
            try:
                out[rel] = (digest, data.decode("utf-8"))
            except UnicodeDecodeError:
                return self._unusable(f"{version} is not UTF-8")
        return out

    def _unusable(self, reason: str) -> dict[str, tuple[str, str]]:
        log.error("config_state_unusable", state_dir=str(self.path), reason=reason)
        return {}

    def save(self, files: Mapping[str, tuple[str, Text]]) -> None:
        """Record ``{path: (digest, text)}`` as the accepted versions, in the background.

        A text may be a function returning it: it is called, on the writer's
        thread, only for a version not stored yet."""
        with self._cond:
            if self._closed or self.read_only:
                return
            self._pending = dict(files)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="pilotfish-state", daemon=True
                )
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every :meth:`save` so far is written (or has failed); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._writing, timeout)

    def close(self, timeout: float | None = 5.0) -> None:
        """Finish the pending write (within ``timeout``) and stop the writer."""
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None:
                    return
                files, self._pending = self._pending, None
                self._writing = True
            try:
                self._write(files)
            except Exception as exc:  # a disk error must never stop serving
                self._stored = None
                if not self._write_failed:
                    log.error(
                        "config_state_write_failed",
                        state_dir=str(self.path),
                        error=str(exc),
                        consequence="a restart starts from the files on disk only",
                    )
                    self._write_failed = True
            else:
                if self._write_failed:
                    log.info("config_state_write_resumed", state_dir=str(self.path))
                    self._write_failed = False
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()

    def _write(self, files: Mapping[str, tuple[str, Text]]) -> None:
        versions = self.path / VERSIONS
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        versions.mkdir(exist_ok=True, mode=0o700)
        if self._stored is None:
            # Temporaries left by a crash are removed once; the versions are taken stock of.
            for leftover in [*self.path.glob(".*.tmp"), *versions.glob(".*.tmp")]:
                with contextlib.suppress(OSError):
                    leftover.unlink()
            self._stored = {p.name for p in versions.iterdir() if _DIGEST.match(p.name)}
        stored = self._stored
        wrote = False
        for digest, text in {digest: text for digest, text in files.values()}.items():
            if digest not in stored:
                data = (text if isinstance(text, str) else text()).encode("utf-8")
                _write_atomically(versions / digest, data)
                stored.add(digest)
                wrote = True
        if wrote:
            _fsync_directory(versions)
        manifest = {
            "format": FORMAT,
            "config_dir": self.config_dir,
            "files": {rel: files[rel][0] for rel in sorted(files)},
        }
        _write_atomically(self.path / MANIFEST, json.dumps(manifest, indent=1).encode())
        _fsync_directory(self.path)
        named = {digest for digest, _ in files.values()}
        for digest in sorted(stored - named):
            with contextlib.suppress(FileNotFoundError):
                (versions / digest).unlink()
            stored.discard(digest)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
