"""The config directory as a sequence of good models: last known good, per file.

:class:`ConfigStore` owns the directory's state. :meth:`ConfigStore.reload`
scans it (stat only), reads and validates just the files whose stamp
changed (results are cached by content hash), and then decides what to
accept:

1. Every file has a *current* version (what is on disk) and possibly an
   *accepted* one (the last version that was part of a good model). A file
   that was never valid has no accepted version and contributes nothing.
2. Changed files whose own text has errors are not applied: their accepted
   version stays in effect.
3. The remaining changes are applied together and the cross-resource checks
   run. A file blamed by an error is reverted to its accepted version and the
   rest is tried again, until no error is left. If an error sits in a file
   that did not change (a change elsewhere broke it, for example by deleting
   the Service it routes to), the changes are instead applied one at a time,
   each kept only if the model stays free of errors.

So a bad edit never reaches a proxy, the rest of a change still applies when
it is valid on its own, and the errors stay available (:attr:`diagnostics`)
for ``pilotfish status`` and the logs.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from controlplane import collector
from controlplane.config.build import BuildResult, MeshBuilder, build_mesh
from controlplane.config.diagnostics import Diagnostic, Finding, Severity
from controlplane.config.document import FileResult, file_too_large, read_text
from controlplane.config.files import FileStamp, scan
from controlplane.config.limits import DEFAULT_LIMITS, ConfigLimits, FileTooLargeError, read_limited
from controlplane.config.resources import Resource
from controlplane.config.yamlsource import forget_scalars, locate_all
from controlplane.model import Mesh

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class FileVersion:
    """One version of one file: its text and what validation made of it."""

    path: str
    digest: str
    text: str
    result: FileResult


@dataclass(frozen=True)
class ReloadResult:
    """What one reload did."""

    mesh: Mesh
    changed: bool
    applied: tuple[str, ...]
    rejected: tuple[str, ...]
    diagnostics: tuple[Diagnostic, ...]

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.is_error)


@dataclass
class _State:
    stamps: dict[str, FileStamp] = field(default_factory=dict)
    current: dict[str, FileVersion] = field(default_factory=dict)
    accepted: dict[str, FileVersion] = field(default_factory=dict)


def _read(root: Path, rel: str, limits: ConfigLimits = DEFAULT_LIMITS) -> FileVersion | None:
    try:
        raw = read_limited(root / rel, limits.max_file_bytes)
    except FileTooLargeError as exc:
        # Never read: the size stands in for the content, so a new size is a new version.
        return FileVersion(rel, f"too-large:{exc.size}", "", file_too_large(rel, exc.size, limits))
    except OSError:
        return None
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        finding = Finding("PF105", rel, 0, (), "", f"the file is not UTF-8: {exc.reason}")
        return FileVersion(rel, digest, "", FileResult(rel, (), (finding,)))
    return FileVersion(rel, digest, text, read_text(rel, text, limits))


def resolve_positions(findings: Iterable[Finding], texts: dict[str, str]) -> list[Diagnostic]:
    """Give each finding its line and column by looking its path up in the file's text."""
    findings = list(findings)
    positions = [(1, 1)] * len(findings)
    by_file: dict[str, list[int]] = {}
    for index, finding in enumerate(findings):
        by_file.setdefault(finding.file, []).append(index)
    for file, indexes in by_file.items():
        text = texts.get(file, "")
        if text:
            wanted = [(findings[i].doc, findings[i].path) for i in indexes]
            for index, position in zip(indexes, locate_all(text, wanted), strict=True):
                positions[index] = position
    return [finding.at(*position) for finding, position in zip(findings, positions, strict=True)]


class ConfigStore:
    """A watched config directory and the last good :class:`Mesh` built from it.

    Thread-safe: :meth:`reload` may be called from the watcher thread while
    other threads read :attr:`mesh` and :attr:`diagnostics`.
    """

    def __init__(self, root: Path, limits: ConfigLimits = DEFAULT_LIMITS) -> None:
        self.root = Path(root)
        self.limits = limits
        self._state = _State()
        self._lock = threading.Lock()
        self._mesh = Mesh()
        self._diagnostics: tuple[Diagnostic, ...] = ()
        self._positions: dict[str, tuple[Diagnostic, ...]] = {}
        self._builder = MeshBuilder()
        self._build: BuildResult | None = None
        self._last: ReloadResult | None = None
        self._last_changed: list[tuple[str, str]] | None = None

    @property
    def mesh(self) -> Mesh:
        return self._mesh

    @property
    def diagnostics(self) -> tuple[Diagnostic, ...]:
        return self._diagnostics

    def reload(self) -> ReloadResult:
        # A large reload creates millions of small immutable objects (no cycles);
        # with the collector on, each full collection rescans the growing heap
        # and a cold load turns quadratic. Reference counting frees everything.
        with self._lock, collector.paused():
            try:
                return self._reload()
            finally:
                forget_scalars()

    def _reload(self) -> ReloadResult:
        state = self._state
        if not self.root.is_dir():
            # A directory that vanished (an unmounted volume, a botched deploy) is an
            # outage, not a request to delete every route: keep serving what we have.
            log.error("config_dir_missing", directory=str(self.root))
            if self._last is not None:
                return replace(self._last, changed=False, applied=(), rejected=())
        stamps = scan(self.root)
        current: dict[str, FileVersion] = {}
        for rel, stamp in stamps.items():
            previous = state.current.get(rel)
            if previous is not None and state.stamps.get(rel) == stamp:
                current[rel] = previous
                continue
            version = _read(self.root, rel, self.limits)
            if version is None:
                continue
            if previous is not None and previous.digest == version.digest:
                version = previous
            current[rel] = version
        state.stamps = {rel: stamps[rel] for rel in current}
        state.current = current

        changed = sorted(
            rel
            for rel in set(current) | set(state.accepted)
            if (current.get(rel) is None) != (state.accepted.get(rel) is None)
            or (rel in current and current[rel].digest != state.accepted[rel].digest)
        )
        signature = [(rel, current[rel].digest if rel in current else "") for rel in changed]
        if signature == self._last_changed and self._last is not None:
            # Nothing new since the last reload (an event on a file we ignore, a touch).
            self._last = replace(self._last, changed=False, applied=(), rejected=())
            return self._last
        applicable = [rel for rel in changed if rel not in current or current[rel].result.ok]
        accepted, build, blocked = self._accept(state.accepted, current, applicable)
        applied = tuple(rel for rel in applicable if rel not in blocked)
        rejected = tuple(sorted({*blocked, *(r for r in changed if r not in applicable)}))
        state.accepted = accepted
        self._build = build
        self._last_changed = [item for item in signature if item[0] not in applied]
        self._mesh = build.mesh

        diagnostics: set[Diagnostic] = set()
        for version in current.values():
            if version.result.findings:
                diagnostics.update(self._file_diagnostics(version))
        # Warnings of the served model point into accepted versions; errors that held a
        # change back point into the current (rejected) version.
        warnings = [f for f in build.findings if f.severity is Severity.WARNING]
        diagnostics.update(
            resolve_positions(warnings, {f.file: accepted[f.file].text for f in warnings})
        )
        held_back = [finding for rel in blocked for finding in blocked[rel]]
        diagnostics.update(
            resolve_positions(
                held_back, {f.file: current[f.file].text for f in held_back if f.file in current}
            )
        )
        if len(self._positions) > 2 * len(current) + 64:
            live = {v.digest for v in current.values()}
            self._positions = {k: v for k, v in self._positions.items() if k in live}
        already_reported = set(self._diagnostics)
        self._diagnostics = tuple(sorted(diagnostics, key=Diagnostic.sort_key))
        diagnostics_out = self._diagnostics
        for diagnostic in diagnostics_out:
            if diagnostic not in already_reported:
                (log.error if diagnostic.is_error else log.warning)(
                    "config_error" if diagnostic.is_error else "config_warning",
                    message=diagnostic.render(),
                    code=diagnostic.code,
                    file=diagnostic.file,
                    line=diagnostic.line,
                    field=diagnostic.field,
                )
        if applied or rejected:
            log.info(
                "config_reloaded",
                applied=len(applied),
                rejected=list(rejected),
                services=len(self._mesh.services),
            )
        self._last = ReloadResult(self._mesh, bool(applied), applied, rejected, diagnostics_out)
        return self._last

    def _file_diagnostics(self, version: FileVersion) -> tuple[Diagnostic, ...]:
        cached = self._positions.get(version.digest)
        if cached is None or (cached and cached[0].file != version.path):
            result = version.result
            if result.syntax_error is not None:
                cached = tuple(f.at(*result.syntax_error) for f in result.findings)
            else:
                cached = tuple(resolve_positions(result.findings, {version.path: version.text}))
            self._positions[version.digest] = cached
        return cached

    def _accept(
        self,
        baseline: dict[str, FileVersion],
        current: dict[str, FileVersion],
        applicable: list[str],
    ) -> tuple[dict[str, FileVersion], BuildResult, dict[str, list[Finding]]]:
        """Apply as much of ``applicable`` as keeps the model free of errors."""
        blocked: dict[str, list[Finding]] = {}
        if not applicable and self._build is not None:
            return baseline, self._build, blocked
        pending = list(applicable)
        while True:
            candidate = _apply(baseline, current, pending)
            result = self._builder.build(_resources(candidate), frozenset(pending))
            errors = [f for f in result.findings if f.is_error]
            if not errors:
                return candidate, result, blocked
            blamed = {f.file for f in errors} & set(pending)
            if not blamed:
                break
            for f in errors:
                if f.file in blamed:
                    blocked.setdefault(f.file, []).append(f)
            pending = [rel for rel in pending if rel not in blamed]
        # An error in a file that did not change: find the changes that keep the model clean.
        accepted = dict(baseline)
        result = self._builder.build(_resources(accepted))
        progress = True
        remaining = list(pending)
        while progress and remaining:
            progress = False
            for rel in list(remaining):
                trial = _apply(accepted, current, [rel])
                trial_result = self._builder.build(_resources(trial), frozenset([rel]))
                trial_errors = [f for f in trial_result.findings if f.is_error]
                if trial_errors:
                    blocked[rel] = trial_errors
                    continue
                blocked.pop(rel, None)
                accepted, result = trial, trial_result
                remaining.remove(rel)
                progress = True
        return accepted, result, blocked


def _apply(
    baseline: dict[str, FileVersion], current: dict[str, FileVersion], paths: Iterable[str]
) -> dict[str, FileVersion]:
    candidate = dict(baseline)
    for rel in paths:
        if rel in current:
            candidate[rel] = current[rel]
        else:
            candidate.pop(rel, None)
    return candidate


def _resources(files: dict[str, FileVersion]) -> dict[str, tuple[Resource, ...]]:
    return {path: version.result.resources for path, version in files.items()}


def validate_directory(root: Path, limits: ConfigLimits = DEFAULT_LIMITS) -> list[Diagnostic]:
    """Every problem in ``root``: each file's own, and those across all files.

    Unlike :meth:`ConfigStore.reload`, nothing is held back: the valid
    documents of every file take part in the cross-resource checks, so one bad
    document does not hide or cause problems elsewhere.
    """
    versions = [v for rel in scan(root) if (v := _read(root, rel, limits)) is not None]
    texts = {v.path: v.text for v in versions}
    diagnostics: list[Diagnostic] = []
    for version in versions:
        result = version.result
        if result.syntax_error is not None:
            diagnostics.extend(f.at(*result.syntax_error) for f in result.findings)
        else:
            diagnostics.extend(resolve_positions(result.findings, texts))
    build = build_mesh(r for v in versions for r in v.result.resources)
    diagnostics.extend(resolve_positions(build.findings, texts))
    return sorted(set(diagnostics), key=Diagnostic.sort_key)
