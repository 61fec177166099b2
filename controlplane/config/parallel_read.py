"""Reading many config files on two cores: this process and one helper process.

A cold start reads every file of the directory: parsing and validating
10,000 files is seconds of CPU, and one Python process uses one core. When a
reload has many files to read (:data:`MIN_FILES`), :func:`read_files` shares
them with one helper process (``python -m controlplane.config.parallel_read``):

* both work on the same list of files, cut into chunks of :data:`CHUNK`
  files: this process reads chunks from the front and the helper from the
  back, so neither waits for the other and they meet wherever their speeds
  put them. The helper needs no requests: it reads chunk after chunk and
  answers each with the ``FileVersion`` objects it made (pickled), exactly
  what this process would have made of the same files (it runs the same
  reader function on the same paths);
* this process takes in and unpickles the answers between its own chunks,
  and never waits: a file the helper has not answered when this process
  gets to it is read here (a late answer is ignored), so a helper slow to
  start costs nothing. Frozen slotted dataclasses are pickled as their slot
  values and a rebuild function made for their class
  (:mod:`~controlplane.config.slot_pickle`): unpickling an answer costs about
  a tenth of reading its files, so this process ends up with somewhat more
  than half of them;
* ``pilotfish serve`` starts its helper before it imports the server
  (:meth:`ReadHelper.ahead`): that helper scans the directory itself, sorts
  the files and reads from the back of that list while the server is still
  importing, and the first reload takes it over (its list, sorted too, is read
  from the front). The directory may change in between, so that helper
  answers each file with the :class:`~controlplane.config.files.FileStamp`
  its scan recorded, and an answer is taken only for a file this process
  wants with the same stamp in its own scan: a file changed since is read
  here, a file added is read here, and the answers for a file gone are
  dropped. The scan comes before the read, so a change after the helper's
  scan always shows as a different stamp;
* a helper is started only when this process may use :data:`MIN_CORES`
  CPUs or more (:func:`helper_pays`: the affinity, capped by a cgroup
  quota), and by the control plane only when it serves alone: on a
  machine whose other core is busy a helper costs time instead of saving
  it.

The helper is an optimisation and nothing else depends on it: if it cannot
start, dies, or answers garbage, every file it has not answered is read here
and the result is the same. It is killed once the read is done, and it exits
when its input closes (it checks between chunks), so it never outlives the
process that started it. The frames on the pipes are a 4-byte length and a
pickle, between this process and a child it started itself; the helper keeps
what the pipe cannot take yet and writes it between chunks, so it reads on
while the server is busy elsewhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import pickle
import select
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from controlplane.config.files import CONFIG_SUFFIXES, FileStamp, scan
from controlplane.config.limits import ConfigLimits
from controlplane.config.slot_pickle import SlotPickler

MIN_FILES = 2000
"""Fewer files to read than this are read here alone: at 1,000 files a helper, which
starts cold, saved about what it cost (``bench/config_scale.py``)."""
CHUNK = 32
"""Files per answer from the helper."""
MIN_CORES = 1.5
"""CPUs this process must be allowed for a helper to pay (see :func:`helper_pays`)."""
PIPE_BYTES = 1 << 20
"""Capacity asked for the answer pipe: about ten chunks' answers."""

T = TypeVar("T")
Reader = Callable[[Path, str, ConfigLimits], T]
_HEADER = struct.Struct("!I")


@dataclass(frozen=True)
class FilesRead(Generic[T]):
    """What :func:`read_files` read: one result per path, and how many the helper read."""

    results: dict[str, T]
    by_helper: int


def read_files(
    root: Path,
    paths: Sequence[str],
    limits: ConfigLimits,
    read: Reader[T],
    *,
    helper: bool | ReadHelper = True,
    stamps: Mapping[str, FileStamp] | None = None,
    python: str = sys.executable,
) -> FilesRead[T]:
    """``read(root, path, limits)`` for every path, with a helper process when there are many.

    ``read`` must be a module-level function (the helper imports it by name).
    ``helper`` may be a :class:`ReadHelper` started ahead (it is taken over and
    closed): its answers count only for files whose stamp in ``stamps`` (this
    process's scan) is the one it read. The results are in the order of ``paths``.
    """
    early = helper if isinstance(helper, ReadHelper) else None
    if early is not None and not early.reads_for(root, limits, read):
        early.close()
        early = None
    if not helper or len(paths) < MIN_FILES:
        if early is not None:
            early.close()
        return FilesRead({path: read(root, path, limits) for path in paths}, 0)
    if early is not None:
        order = sorted(paths)
        process = early
    else:
        order = list(paths)
        process = ReadHelper(python, root, limits, _reader_name(read), order)
    process.report_failure()
    wanted = set(order)
    results: dict[str, T] = {}
    by_helper = 0
    front, back = 0, len(order)
    try:
        while front < back:
            chunk: list[str] = []
            while front < back and len(chunk) < CHUNK:
                path = order[front]
                front += 1
                if path not in results:
                    chunk.append(path)
            results.update((path, read(root, path, limits)) for path in chunk)
            if process.alive:
                by_helper += process.collect(wanted, stamps or {}, results)
                while back > front and order[back - 1] in results:
                    back -= 1
    finally:
        process.close()
    return FilesRead({path: results[path] for path in paths}, by_helper)


def enough_files(root: Path, count: int | None = None) -> bool:
    """Whether ``root`` holds :data:`MIN_FILES` (or ``count``) config files or more.

    Counted as :func:`~controlplane.config.files.scan` finds them, by name and
    type only (no stat per file), and it stops at ``count``: cheap enough to
    decide whether to start a helper before anything else.
    """
    needed = MIN_FILES if count is None else count
    found = 0
    try:
        top = os.stat(root)
    except OSError:
        return False
    visited = {(top.st_dev, top.st_ino)}
    pending = [os.fspath(root)]
    while pending:
        try:
            with os.scandir(pending.pop()) as listing:
                for entry in listing:
                    if entry.name.startswith("."):
                        continue
                    try:
                        if entry.name.endswith(CONFIG_SUFFIXES) and entry.is_file():
                            found += 1
                            if found >= needed:
                                return True
                        elif entry.is_dir():
                            target = entry.stat()
                            if (target.st_dev, target.st_ino) not in visited:
                                visited.add((target.st_dev, target.st_ino))
                                pending.append(entry.path)
                    except OSError:
                        continue
        except OSError:
            continue
    return False


class ReadHelper:
    """A helper process reading files of ``root`` from the back of its list, and its pipes.

    Answers are taken in by this process's reading thread between its own
    chunks, never by a second thread: a thread waking for every pipe read
    would take the interpreter lock from the reading thread hundreds of times
    a second (measured: the read took longer with the helper than without).
    The answer pipe is enlarged so that the helper rarely waits for that.
    """

    def __init__(
        self,
        python: str,
        root: Path,
        limits: ConfigLimits,
        reader: str,
        paths: list[str] | None,
    ) -> None:
        """Start the helper on ``paths``, or (None) on the files its own scan of ``root`` finds."""
        self.root = Path(root)
        self.limits = limits
        self.reader = reader
        self.scans = paths is None
        self.alive = False
        self._failure: str | None = None
        self._buffer = bytearray()
        try:
            process = subprocess.Popen(
                [python, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
                env=_child_environment(),
            )
        except OSError as exc:
            self._failure = str(exc)
            self._process: subprocess.Popen[bytes] | None = None
            return
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        self._stdin = process.stdin
        self._fd = process.stdout.fileno()
        os.set_blocking(self._fd, False)
        if hasattr(fcntl, "F_SETPIPE_SZ"):
            # Over /proc/sys/fs/pipe-max-size: the helper waits for us more often.
            with contextlib.suppress(OSError):
                fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.alive = True
        module, name = reader.split(":")
        self._send((str(self.root), limits, module, name, paths))

    @classmethod
    def ahead(
        cls, root: Path, limits: ConfigLimits, reader: str, *, python: str = sys.executable
    ) -> ReadHelper:
        """A helper that scans ``root`` and reads its files now, for a read that takes it over.

        ``reader`` names the reader function as ``module:name``. A helper that
        could not start says so (``config_read_helper_failed``) when taken over.
        """
        return cls(python, root, limits, reader, None)

    def reads_for(self, root: Path, limits: ConfigLimits, read: Reader[Any]) -> bool:
        """Whether this helper reads what ``read_files(root, ..., limits, read)`` would."""
        return (self.root, self.limits, self.reader) == (Path(root), limits, _reader_name(read))

    def report_failure(self) -> None:
        """Log a failure to start that happened before anybody could log it."""
        if self._failure is not None:
            _log().warning(
                "config_read_helper_failed", error=self._failure, consequence="reading alone"
            )
            self._failure = None

    def collect(
        self, wanted: set[str], stamps: Mapping[str, FileStamp], results: dict[str, Any]
    ) -> int:
        """Take the answers so far for files wanted and not read yet into ``results``.

        A helper that scanned must have read the file as ``stamps`` has it.
        Returns how many files the answers added.
        """
        count = 0
        for answer in self._answers():
            try:
                paths, read_stamps, versions = answer
                if read_stamps is None:
                    read_stamps = [None] * len(paths)
                answered = list(zip(paths, read_stamps, versions, strict=True))
            except (TypeError, ValueError):
                self.fail("an answer that matches no request")
                break
            for path, stamp, version in answered:
                expected = stamps.get(path) if self.scans else None
                if path in wanted and path not in results and stamp == expected:
                    results[path] = version
                    count += 1
        return count

    def fail(self, why: str) -> None:
        if self.alive:
            self.alive = False
            _log().warning("config_read_helper_failed", error=why, consequence="reading alone")
            if self._process is not None:
                self._process.kill()

    def close(self) -> None:
        """Stop the helper (nothing it still has is needed); no-op when done already."""
        self.alive = False
        self._failure = None
        process, self._process = self._process, None
        if process is None:
            return
        # It may be blocked writing an answer nobody will read: stop it rather than wait.
        process.kill()
        process.wait()
        with contextlib.suppress(OSError):
            self._stdin.close()
        if process.stdout is not None:
            process.stdout.close()

    def _answers(self) -> list[Any]:
        """The answers complete so far (a helper never ends its output while it is wanted)."""
        ended = self._drain()
        answers = self._frames()
        if ended:
            self.fail("the helper process ended")
        return answers

    def _send(self, message: object) -> None:
        try:
            _write_frame(self._stdin, message)
        except OSError:
            self.fail("the helper process stopped reading")

    def _drain(self) -> bool:
        """Read what the pipe holds into the buffer; whether the helper's output ended."""
        while True:
            try:
                data = os.read(self._fd, PIPE_BYTES)
            except BlockingIOError:
                return False
            except OSError:
                return True
            if not data:
                return True
            self._buffer += data

    def _frames(self) -> list[Any]:
        frames = []
        buffer = self._buffer
        offset = 0
        while len(buffer) - offset >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, offset)
            if len(buffer) - offset - _HEADER.size < size:
                break
            start = offset + _HEADER.size
            try:
                frames.append(pickle.loads(memoryview(buffer)[start : start + size]))
            except Exception:  # a garbled pipe is a failed helper: read here instead
                self.fail("an answer that does not unpickle")
                break
            offset = start + size
        del buffer[:offset]
        return frames


def _log() -> Any:
    """This module's logger: structlog is imported when needed, not before a helper starts."""
    import structlog

    return structlog.get_logger(__name__)


def _reader_name(read: Reader[Any]) -> str:
    return f"{read.__module__}:{read.__qualname__}"


def helper_pays() -> bool:
    """Whether this process may use enough CPUs for a helper to save time."""
    return cores_available() >= MIN_CORES


def cores_available(root: Path = Path("/")) -> float:
    """The CPUs this process may use: its affinity, capped by a cgroup CPU quota (Linux)."""
    try:
        cores = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cores = float(os.cpu_count() or 1)
    quota = _cgroup_quota(root)
    return cores if quota is None else min(cores, quota)


def _cgroup_quota(root: Path) -> float | None:
    """CPUs allowed by this process's cgroup quota (v2 ``cpu.max`` or v1 CFS), or None."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        where = path.lstrip("/")
        try:
            if controllers == "":
                quota, period = (root / "sys/fs/cgroup" / where / "cpu.max").read_text().split()
                if quota != "max":
                    return int(quota) / int(period)
            elif "cpu" in controllers.split(","):
                base = root / "sys/fs/cgroup" / controllers / where
                quota = (base / "cpu.cfs_quota_us").read_text().strip()
                if int(quota) > 0:
                    return int(quota) / int((base / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
    return None


def _child_environment() -> dict[str, str]:
    """This environment, with the directory this package was imported from on the path."""
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}


def _write_frame(stream: IO[bytes], message: object) -> None:
    buffer = io.BytesIO()
    buffer.write(_HEADER.pack(0))
    SlotPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(message)
    data = buffer.getbuffer()
    _HEADER.pack_into(data, 0, len(data) - _HEADER.size)
    stream.write(data)
    stream.flush()


def _read_frame(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def _frame(message: object) -> bytes:
    buffer = io.BytesIO()
    _write_frame(buffer, message)
    return buffer.getvalue()


class _Answers:
    """The helper's answer pipe, never blocking the reading: what it cannot take yet waits here."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = bytearray()
        os.set_blocking(fd, False)

    def send(self, message: object) -> None:
        self._pending += _frame(message)
        self.flush()

    def flush(self) -> None:
        while self._pending:
            try:
                written = os.write(self._fd, self._pending)
            except BlockingIOError:
                return
            del self._pending[:written]

    @property
    def waiting(self) -> bool:
        return bool(self._pending)


def _serve(requests: IO[bytes], answers_fd: int) -> None:
    """The helper's side: read the files from the back of the list, answer each chunk.

    It stops when its input ends (checked between chunks), and once every file
    is answered waits for that.
    """
    setup = _read_frame(requests)
    if setup is None:
        return
    root_text, limits, module, name, paths = setup
    root = Path(root_text)
    stamps = None
    if paths is None:
        stamps = scan(root)
        paths = sorted(stamps)
    read = getattr(__import__(module, fromlist=[name]), name)
    answers = _Answers(answers_fd)
    stdin = requests.fileno()
    end = len(paths)
    while end > 0 and not select.select([stdin], [], [], 0)[0]:
        # Cut as the reading process counts chunks: from the front, the last one short.
        start = (end - 1) // CHUNK * CHUNK
        chunk = paths[start:end]
        versions = [read(root, path, limits) for path in chunk]
        answers.send((chunk, None if stamps is None else [stamps[p] for p in chunk], versions))
        end = start
    while True:
        ready, writable, _ = select.select([stdin], [answers_fd] if answers.waiting else [], [])
        if ready:
            return
        if writable:
            answers.flush()


def main() -> None:
    """The helper process: answer on stdout until stdin closes."""
    import gc

    # Everything it builds is answered and dropped; no cycles to collect.
    gc.disable()
    # Answers go to the original stdout; anything printed (a log line) goes to stderr.
    answers = os.dup(1)
    os.dup2(2, 1)
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        _serve(sys.stdin.buffer, answers)
    os._exit(0)


if __name__ == "__main__":
    # Run under this module's own name, so that what it pickles names
    # controlplane.config.parallel_read (not __main__) for the reading process.
    from controlplane.config import parallel_read

    parallel_read.main()
