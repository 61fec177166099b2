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

4. A file that exists but cannot be read (permissions, an I/O error) is an
   error (PF105), not a deletion: its accepted version stays in effect. Only
   a file that is gone is deleted.
5. A candidate model that is free of errors is also given to ``verify`` (the
   control plane checks that it translates, for every proxy class, into
   consistent snapshots small enough to send). When it fails, the changes are
   applied one at a time as in 3., and a change whose model fails is held
   back with PF212.
6. A reload that would withdraw all accepted resources, or more than
   ``max_withdraw_share`` of them (a directory emptied and refilled, a volume
   remounted), does not withdraw them yet: the files that would take
   resources away keep their accepted versions for ``withdraw_grace``
   seconds (:attr:`ReloadResult.recheck_at` says when to reload again). If
   they come back in time nothing was ever withdrawn; if not, the next reload
   after the grace applies the withdrawal. Smaller removals apply at once.
7. With a :class:`~controlplane.config.state.StateDir`, the accepted versions
   are recorded after every reload that changes them, and the first reload
   starts from the record: a file whose version on disk has errors is served
   as it was last accepted (logged as ``config_stale_served``), and which of
   two conflicting definitions wins (the one accepted first, see
   ``docs/validation.md``) survives the restart. Files gone from disk are
   deletions like any other.

So a bad edit never reaches a proxy, the rest of a change still applies when
it is valid on its own, and the errors stay available (:attr:`diagnostics`)
for ``pilotfish status`` and the logs.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import structlog

from controlplane import collector
from controlplane.config.build import BuildResult, MeshBuilder, build_mesh
from controlplane.config.diagnostics import Diagnostic, Finding, Severity
from controlplane.config.document import FileResult, file_too_large, read_text
from controlplane.config.files import FileStamp, scan
from controlplane.config.limits import DEFAULT_LIMITS, ConfigLimits, FileTooLargeError, read_limited
from controlplane.config.parallel_read import ReadHelper, helper_pays, read_files
from controlplane.config.resources import Resource
from controlplane.config.state import StateDir
from controlplane.config.yamlsource import forget_scalars, locate_all
from controlplane.model import Mesh

log = structlog.get_logger(__name__)

Verifier = Callable[[Mesh], str | None]
"""Checks a model beyond validation (the control plane: that it translates for every
proxy class); returns what is wrong with it, or ``None``."""


@dataclass(frozen=True, slots=True, init=False)
class FileVersion:
    """One version of one file: its text and what validation made of it.

    The text is read again only for diagnostics and the state directory, so
    once the server is quiet :meth:`pack` keeps it zlib-compressed (a sixth of
    its size for YAML); :attr:`text` is the same string either way. The digest
    stands for the text in comparisons.
    """

    path: str
    digest: str
    body: str | bytes = field(compare=False, repr=False)
    """The text, or its UTF-8 encoding compressed by :meth:`pack`."""
    result: FileResult

    def __init__(self, path: str, digest: str, text: str, result: FileResult) -> None:
        _set_path(self, path)
        _set_digest(self, digest)
        _set_body(self, text)
        _set_result(self, result)

    @property
    def text(self) -> str:
        return self.get_text()

    def get_text(self) -> str:
        body = self.body
        return body if isinstance(body, str) else zlib.decompress(body).decode("utf-8")

    def pack(self) -> bool:
        """Keep the text compressed from now on; ``True`` if it was not yet.

        Safe beside readers on other threads: the slot changes in one store,
        from a string to the bytes that decompress to it.
        """
        body = self.body
        if not isinstance(body, str) or not body:
            return False
        _set_body(self, zlib.compress(body.encode("utf-8")))
        return True


_set_path, _set_digest, _set_body, _set_result = (
    getattr(FileVersion, name).__set__ for name in ("path", "digest", "body", "result")
)


@dataclass(frozen=True)
class ReloadResult:
    """What one reload did."""

    mesh: Mesh
    changed: bool
    applied: tuple[str, ...]
    rejected: tuple[str, ...]
    diagnostics: tuple[Diagnostic, ...]
    held: tuple[str, ...] = ()
    """Files whose withdrawal waits out the grace period (neither applied nor rejected)."""
    recheck_at: float | None = None
    """When (``clock`` time) a held withdrawal is due: reload then, even without file events."""
    version: str = ""
    """The config version served after this reload (see :func:`config_version`)."""

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.is_error)


@dataclass
class _State:
    stamps: dict[str, FileStamp] = field(default_factory=dict)
    current: dict[str, FileVersion] = field(default_factory=dict)
    accepted: dict[str, FileVersion] = field(default_factory=dict)


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    return read_limited(path, max_bytes)


def _read(root: Path, rel: str, limits: ConfigLimits = DEFAULT_LIMITS) -> FileVersion | None:
    try:
        raw = _read_bytes(root / rel, limits.max_file_bytes)
    except FileTooLargeError as exc:
        # Never read: the size stands in for the content, so a new size is a new version.
        return FileVersion(rel, f"too-large:{exc.size}", "", file_too_large(rel, exc.size, limits))
    except (FileNotFoundError, NotADirectoryError):
        return None  # gone since the scan: deleted
    except OSError as exc:
        return _unreadable(rel, exc)
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        finding = Finding("PF105", rel, 0, (), "", f"the file is not UTF-8: {exc.reason}")
        return FileVersion(rel, digest, "", FileResult(rel, (), (finding,)))
    return FileVersion(rel, digest, text, read_text(rel, text, limits))


_UNREADABLE = "unreadable: "
TRANSLATION_FAILED = "PF212"


def _unreadable(rel: str, exc: OSError, directory: str | None = None) -> FileVersion:
    """A file that exists but cannot be read: an error, so its accepted version stays."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    what = f"its directory {directory}" if directory is not None else "the file"
    message = f"cannot read {what}: {reason}"
    finding = Finding("PF105", rel, 0, (), "", message)
    # Never equal to a digest of content, and never reused from the stamp: a permission
    # fixed with chmod leaves the stamp as it was.
    return FileVersion(rel, _UNREADABLE + message, "", FileResult(rel, (), (finding,), (1, 1)))


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

    ``state`` records the accepted versions across restarts, ``verify`` is run
    on every candidate model before it is accepted, and a reload withdrawing
    more than ``max_withdraw_share`` of the accepted resources (or all of them)
    is held back for ``withdraw_grace`` seconds (0: never); see the module
    docstring. With ``read_helper``, a reload with many files to read shares
    them with a helper process (:mod:`~controlplane.config.parallel_read`);
    a :class:`ReadHelper` already started is taken over by the first reload.
    """

    def __init__(
        self,
        root: Path,
        limits: ConfigLimits = DEFAULT_LIMITS,
        *,
        state: StateDir | None = None,
        verify: Verifier | None = None,
        withdraw_grace: float = 0.0,
        max_withdraw_share: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        read_helper: bool | ReadHelper = False,
    ) -> None:
        self.root = Path(root)
        self._helper = read_helper
        self.limits = limits
        self.state = state
        self._state = _State()
        self._lock = threading.Lock()
        self._mesh = Mesh()
        self._diagnostics: tuple[Diagnostic, ...] = ()
        self._positions: dict[str, tuple[Diagnostic, ...]] = {}
        self._builder = MeshBuilder()
        self._build: BuildResult | None = None
        self._last: ReloadResult | None = None
        self._last_changed: list[tuple[str, str]] | None = None
        self._verify = verify
        self._verified: Mesh | None = None
        self._withdraw_grace = withdraw_grace
        self._max_withdraw_share = max_withdraw_share
        self._clock = clock
        self._hold_until: float | None = None
        self._saved: dict[str, str] | None = None
        self._unlisted: set[str] = set()

    @property
    def mesh(self) -> Mesh:
        return self._mesh

    @property
    def diagnostics(self) -> tuple[Diagnostic, ...]:
        return self._diagnostics

    @property
    def files_in_effect(self) -> dict[str, str]:
        """``{path: content digest}`` of the accepted file versions being served."""
        return {path: version.digest for path, version in self._state.accepted.items()}

    def reload(self) -> ReloadResult:
        # A large reload creates millions of small immutable objects (no cycles);
        # with the collector on, each full collection rescans the growing heap
        # and a cold load turns quadratic. Reference counting frees everything.
        with self._lock, collector.paused():
            try:
                return self._reload()
            finally:
                forget_scalars()

    def close(self) -> None:
        """Finish writing the state directory (and stop a read helper never taken over)."""
        if isinstance(self._helper, ReadHelper):
            self._helper.close()
        if self.state is not None:
            self.state.close()

    def shown(self, diagnostic: Diagnostic) -> Diagnostic:
        """``diagnostic`` with its file as ``pilotfish validate`` prints it: under the root."""
        return replace(diagnostic, file=os.path.join(self.root, diagnostic.file))

    def _reload(self) -> ReloadResult:
        state = self._state
        if not self.root.is_dir():
            # A directory that vanished (an unmounted volume, a botched deploy) is an
            # outage, not a request to delete every route: keep serving what we have.
            log.error("config_dir_missing", directory=str(self.root))
            if self._last is not None:
                # Held withdrawals wait too: the watcher reloads when the directory is back.
                return replace(self._last, changed=False, applied=(), rejected=(), recheck_at=None)
        unlisted: dict[str, OSError] = {}
        stamps = scan(self.root, unlisted)
        current: dict[str, FileVersion] = {}
        to_read: list[str] = []
        for rel, stamp in stamps.items():
            previous = state.current.get(rel)
            if (
                previous is not None
                and state.stamps.get(rel) == stamp
                and not previous.digest.startswith(_UNREADABLE)
            ):
                current[rel] = previous
            else:
                to_read.append(rel)
        helper = self._helper
        if isinstance(helper, ReadHelper):
            self._helper = True  # this read takes it over; later ones start their own
        read = read_files(self.root, to_read, self.limits, _read, helper=helper, stamps=stamps)
        for rel in to_read:
            version = read.results[rel]
            if version is None:
                continue
            previous = state.current.get(rel)
            if previous is not None and previous.digest == version.digest:
                version = previous
            current[rel] = version
        for directory in sorted(unlisted.keys() - self._unlisted):
            log.error(
                "config_dir_unreadable",
                directory=directory or "./",
                error=unlisted[directory].strerror or str(unlisted[directory]),
                consequence="its files keep their last good versions",
            )
        self._unlisted = set(unlisted)
        for directory, exc in unlisted.items():
            for rel in {*state.current, *state.accepted}:
                if rel.startswith(directory) and rel not in current:
                    current[rel] = _unreadable(rel, exc, directory or "./")
        state.stamps = {rel: stamps[rel] for rel in current if rel in stamps}
        state.current = current
        restored = self._restore(current) if self._last is None and self.state else {}

        changed = sorted(
            rel
            for rel in set(current) | set(state.accepted)
            if (current.get(rel) is None) != (state.accepted.get(rel) is None)
            or (rel in current and current[rel].digest != state.accepted[rel].digest)
        )
        signature = [(rel, current[rel].digest if rel in current else "") for rel in changed]
        if signature == self._last_changed and self._last is not None and self._hold_until is None:
            # Nothing new since the last reload (an event on a file we ignore, a touch).
            self._last = replace(self._last, changed=False, applied=(), rejected=())
            return self._last
        applicable = [rel for rel in changed if rel not in current or current[rel].result.ok]
        applicable, held = self._hold_withdrawals(state.accepted, current, applicable)
        accepted, build, blocked = self._accept(state.accepted, current, applicable)
        applied = tuple(rel for rel in applicable if rel not in blocked)
        # Sets: a cold load changes every file, and list lookups would make this quadratic.
        applicable_set, held_set, applied_set = set(applicable), set(held), set(applied)
        rejected = tuple(
            sorted(
                {*blocked, *(r for r in changed if r not in applicable_set and r not in held_set)}
            )
        )
        state.accepted = accepted
        served_version = config_version(accepted)
        rlog = log.bind(config_version=served_version)
        self._build = build
        self._last_changed = [item for item in signature if item[0] not in applied_set]
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
                (rlog.error if diagnostic.is_error else rlog.warning)(
                    "config_error" if diagnostic.is_error else "config_warning",
                    **self.shown(diagnostic).to_json(),
                )
        for rel, findings in sorted(blocked.items()):
            for finding in findings:
                if finding.code == TRANSLATION_FAILED:
                    version = current.get(rel) or accepted.get(rel)
                    log.error(
                        "config_translation_failed",
                        file=rel,
                        resources=[r.meta.label for r in version.result.resources[:10]]
                        if version
                        else [],
                        problem=finding.message,
                    )
        if applied or rejected or held:
            rlog.info(
                "config_reloaded",
                applied=len(applied),
                rejected=list(rejected),
                held=list(held),
                services=len(self._mesh.services),
            )
        if restored:
            self._report_stale(restored, accepted, current, blocked, held)
        self._persist(accepted)
        self._last = ReloadResult(
            self._mesh,
            bool(applied),
            applied,
            rejected,
            diagnostics_out,
            tuple(held),
            self._hold_until,
            served_version,
        )
        return self._last

    def _restore(self, current: dict[str, FileVersion]) -> dict[str, FileVersion]:
        """Start from the accepted versions the state directory recorded (at the first reload)."""
        assert self.state is not None
        recorded = self.state.load()
        self._saved = {rel: digest for rel, (digest, _) in recorded.items()}
        baseline: dict[str, FileVersion] = {}
        for rel, (digest, text) in recorded.items():
            version = current.get(rel)
            if version is None or version.digest != digest:
                version = FileVersion(rel, digest, text, read_text(rel, text))
            if not version.result.ok:
                # Recorded by a version of Pilotfish with other rules: it no longer validates.
                log.warning(
                    "config_state_version_invalid", file=rel, state_dir=str(self.state.path)
                )
                continue
            baseline[rel] = version
        if not baseline:
            return {}
        build = self._builder.build(_resources(baseline))
        problem = (
            "; ".join(f.message for f in build.findings if f.is_error)
            if not build.ok
            else self._problem(build.mesh)
        )
        if problem:
            log.error(
                "config_state_unusable",
                state_dir=str(self.state.path),
                reason=f"the recorded versions no longer make a valid model: {problem}",
            )
            return {}
        self._state.accepted = baseline
        self._build = build
        return baseline

    def _report_stale(
        self,
        restored: dict[str, FileVersion],
        accepted: dict[str, FileVersion],
        current: dict[str, FileVersion],
        blocked: dict[str, list[Finding]],
        held: list[str],
    ) -> None:
        assert self.state is not None
        for rel in sorted(accepted):
            version = accepted[rel]
            on_disk = current.get(rel)
            if restored.get(rel) is not version or (
                on_disk is not None and on_disk.digest == version.digest
            ):
                continue
            own = [d.render() for d in self._diagnostics if d.file == rel and d.is_error]
            others = [f"{f.file}: {f.message}" for f in blocked.get(rel, ())]
            if on_disk is not None:
                reason = "; ".join(own or others) or "the version on disk was held back"
            elif rel in held:
                reason = "the file is gone; withdrawing it is held back for the grace period"
            else:
                reason = "the file is gone, but other files need it: " + "; ".join(others)
            log.error(
                "config_stale_served",
                file=rel,
                reason=reason,
                restored_from=str(self.state.path),
                digest=version.digest[:12],
            )

    def _persist(self, accepted: dict[str, FileVersion]) -> None:
        if self.state is None:
            return
        digests = {rel: version.digest for rel, version in accepted.items()}
        if digests == self._saved:
            return
        self._saved = digests
        # The writer decompresses only the versions it has not stored yet.
        self.state.save({rel: (v.digest, v.get_text) for rel, v in accepted.items()})

    def pack_texts(self) -> int:
        """Compress the texts of the file versions held (:meth:`FileVersion.pack`); returns
        how many were packed. Skipped, for the next call, while a reload runs."""
        if not self._lock.acquire(blocking=False):
            return 0
        try:
            state = self._state
            held = {id(v): v for v in (*state.current.values(), *state.accepted.values())}
            return sum(version.pack() for version in held.values())
        finally:
            self._lock.release()

    def _hold_withdrawals(
        self,
        accepted: dict[str, FileVersion],
        current: dict[str, FileVersion],
        applicable: list[str],
    ) -> tuple[list[str], list[str]]:
        """(changes to apply now, files whose withdrawal is held back)."""
        if self._withdraw_grace <= 0:
            return applicable, []
        before: dict[tuple[str, str, str], str] = {}
        after: set[tuple[str, str, str]] = set()
        for rel in applicable:
            old, new = accepted.get(rel), current.get(rel)
            if old is not None:
                before.update((r.meta.key, rel) for r in old.result.resources)
            if new is not None:
                after.update(r.meta.key for r in new.result.resources)
        withdrawn = {key: rel for key, rel in before.items() if key not in after}
        total = sum(len(version.result.resources) for version in accepted.values())
        if not withdrawn or (
            len(withdrawn) < total and len(withdrawn) <= self._max_withdraw_share * total
        ):
            if self._hold_until is not None:
                log.info("config_withdrawal_cancelled")
                self._hold_until = None
            return applicable, []
        files = sorted(set(withdrawn.values()))
        now = self._clock()
        counts = {"withdrawn": len(withdrawn), "resources": total, "files": len(files)}
        if self._hold_until is None:
            self._hold_until = now + self._withdraw_grace
            until = datetime.fromtimestamp(time.time() + self._withdraw_grace, UTC)
            log.warning(
                "config_withdrawal_held",
                **counts,
                max_share=self._max_withdraw_share,
                until=until.isoformat(timespec="seconds"),
                grace_seconds=self._withdraw_grace,
            )
        elif now >= self._hold_until:
            self._hold_until = None
            log.warning("config_withdrawal_applied", **counts)
            return applicable, []
        withdrawing = set(files)
        return [rel for rel in applicable if rel not in withdrawing], files

    def _problem(self, mesh: Mesh) -> str | None:
        """What ``verify`` finds wrong with ``mesh`` (remembering the last mesh it passed)."""
        if self._verify is None or mesh is self._verified:
            return None
        try:
            problem = self._verify(mesh)
        except Exception as exc:  # a bug in the check must not let a model through unseen
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            self._verified = mesh
        return problem

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
                problem = self._problem(result.mesh)
                if problem is None:
                    return candidate, result, blocked
                last = self._build
                if len(pending) == 1 and last is not None and last.mesh is self._verified:
                    blocked[pending[0]] = [_translation_failed(pending[0], problem)]
                    return baseline, last, blocked
                break
            blamed = {f.file for f in errors} & set(pending)
            if not blamed:
                break
            for f in errors:
                if f.file in blamed:
                    blocked.setdefault(f.file, []).append(f)
            pending = [rel for rel in pending if rel not in blamed]
        # An error in a file that did not change, or a model that does not translate:
        # find the changes that keep the model clean.
        accepted = dict(baseline)
        result = self._build or self._builder.build(_resources(accepted))
        # When the last good model itself fails the check, the check cannot tell which
        # change is to blame: it is left out rather than block every change.
        baseline_problem = self._problem(result.mesh)
        verifying = baseline_problem is None
        if not verifying:
            log.error(
                "config_translation_failed",
                file=None,
                problem=baseline_problem,
                consequence="the served model fails too: changes are applied unchecked",
            )
        progress = True
        remaining = list(pending)
        while progress and remaining:
            progress = False
            for rel in list(remaining):
                trial = _apply(accepted, current, [rel])
                trial_result = self._builder.build(_resources(trial), frozenset([rel]))
                trial_errors = [f for f in trial_result.findings if f.is_error]
                if not trial_errors and verifying:
                    problem = self._problem(trial_result.mesh)
                    if problem is not None:
                        trial_errors = [_translation_failed(rel, problem)]
                if trial_errors:
                    blocked[rel] = trial_errors
                    continue
                blocked.pop(rel, None)
                accepted, result = trial, trial_result
                remaining.remove(rel)
                progress = True
        return accepted, result, blocked


def _translation_failed(rel: str, problem: str) -> Finding:
    return Finding(
        TRANSLATION_FAILED,
        rel,
        0,
        (),
        "",
        f"the file's resources could not be translated: {problem}; the last good version is served",
    )


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


def config_version(accepted: dict[str, FileVersion]) -> str:
    """A short digest of the accepted files: the same files give the same version, anywhere."""
    digest = hashlib.sha256()
    for rel in sorted(accepted):
        digest.update(f"{rel}\0{accepted[rel].digest}\0".encode())
    return digest.hexdigest()[:12]


def validate_directory(
    root: Path, limits: ConfigLimits = DEFAULT_LIMITS, *, strict: bool = False
) -> list[Diagnostic]:
    """Every problem in ``root``: each file's own, and those across all files.

    Unlike :meth:`ConfigStore.reload`, nothing is held back: the valid
    documents of every file take part in the cross-resource checks, so one bad
    document does not hide or cause problems elsewhere. ``strict`` makes the
    skipped documents of kinds Pilotfish does not read (``PF122``) errors.
    """
    unlisted: dict[str, OSError] = {}
    paths = list(scan(root, unlisted))
    read = read_files(root, paths, limits, _read, helper=helper_pays())
    versions = [v for v in read.results.values() if v is not None]
    texts = {v.path: v.text for v in versions}
    diagnostics: list[Diagnostic] = [
        Finding(
            "PF105", directory, 0, (), "", f"cannot read the directory: {exc.strerror or exc}"
        ).at(1, 1)
        for directory, exc in unlisted.items()
    ]
    for version in versions:
        result = version.result
        if result.syntax_error is not None:
            diagnostics.extend(f.at(*result.syntax_error) for f in result.findings)
        else:
            diagnostics.extend(resolve_positions(result.findings, texts))
    build = build_mesh(r for v in versions for r in v.result.resources)
    diagnostics.extend(resolve_positions(build.findings, texts))
    if strict:
        diagnostics = [
            replace(d, severity=Severity.ERROR) if d.code == "PF122" else d for d in diagnostics
        ]
    return sorted(set(diagnostics), key=Diagnostic.sort_key)
