"""Reading many config files on two cores: this process and one helper process.

A cold start reads every file of the directory: parsing and validating
10,000 files is seconds of CPU, and one Python process uses one core. When a
reload has many files to read (:data:`MIN_FILES`), :func:`read_files` starts
one helper process (``python -m controlplane.config.parallel_read``) and the
two share the work:

* the files are cut into chunks of :data:`CHUNK` files; this process takes
  chunks from the front of the list and the helper from the back, so neither
  waits for the other and they meet wherever their speeds put them (this
  process never waits: once the list is empty it reads the chunks the helper
  has not answered yet itself, so a helper slow to start costs nothing);
* the helper is kept :data:`AHEAD` chunks ahead (requests in its pipe) so it
  never idles, and it answers each chunk with the pickled ``FileVersion``
  objects, exactly what this process would have made of the same files (it
  runs the same reader function on the same paths);
* this process takes in and unpickles the answers between its own chunks;
  unpickling costs a quarter to a third of reading (frozen slotted
  dataclasses are pickled as their slot values, which halved it), which is
  why this process ends up with more than half of the chunks;
* a helper is asked for only when this process may use :data:`MIN_CORES`
  CPUs or more (:func:`helper_pays`: the affinity, capped by a cgroup
  quota), and by the control plane only when it serves alone: on a
  machine whose other core is busy a helper costs time instead of saving
  it.

The helper is an optimisation and nothing else depends on it: if it cannot
start, dies, or answers garbage, every chunk it has not answered is read here
and the result is the same. It exits when its input closes, so it never
outlives the read. The frames on the pipes are a 4-byte length and a pickle,
between this process and a child it started itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import pickle
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import structlog

from controlplane.config.limits import ConfigLimits

log = structlog.get_logger(__name__)

MIN_FILES = 2000
"""Fewer files to read than this are read here alone: at 1,000 files a helper, which
starts cold, saved about what it cost (``bench/config_scale.py``)."""
CHUNK = 32
"""Files per request to the helper."""
AHEAD = 2
"""Chunks requested from the helper before it answers the first of them."""
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
    helper: bool = True,
    python: str = sys.executable,
) -> FilesRead[T]:
    """``read(root, path, limits)`` for every path, with a helper process when there are many.

    ``read`` must be a module-level function (the helper imports it by name).
    """
    if not helper or len(paths) < MIN_FILES:
        return FilesRead({path: read(root, path, limits) for path in paths}, 0)
    chunks = deque(list(paths[i : i + CHUNK]) for i in range(0, len(paths), CHUNK))
    results: dict[str, T] = {}
    process = _Helper.start(python, root, limits, read)
    by_helper = 0
    sent: dict[int, list[str]] = {}
    try:
        while chunks or sent:
            if process is not None and process.alive:
                while len(sent) < AHEAD and len(chunks) > 1:
                    chunk = chunks.pop()
                    sent[process.request(chunk)] = chunk
            # With the list empty, the chunk the helper reaches last (or never, if it
            # failed) is read here: that beats waiting for it. A late answer is ignored.
            chunk = chunks.popleft() if chunks else sent.pop(max(sent))
            results.update((path, read(root, path, limits)) for path in chunk)
            if process is not None and process.alive:
                by_helper += _collect(process, sent, results)
    finally:
        if process is not None:
            process.close()
    return FilesRead(results, by_helper)


def _collect(process: _Helper, sent: dict[int, list[str]], results: dict[str, Any]) -> int:
    """Take the helper's answers so far into ``results``; how many files they covered."""
    count = 0
    for number, versions in process.answers():
        chunk = sent.pop(number, None)
        if chunk is None:
            continue  # read here meanwhile
        if not isinstance(versions, list) or len(versions) != len(chunk):
            sent[number] = chunk
            process.fail("an answer that matches no request")
            break
        results.update(zip(chunk, versions, strict=True))
        count += len(chunk)
    return count


class _Helper:
    """The helper process and its pipes.

    Answers are taken in by this process's reading thread between its own
    chunks, never by a second thread: a thread waking for every pipe read
    would take the interpreter lock from the reading thread hundreds of times
    a second (measured: the read took longer with the helper than without).
    The answer pipe is enlarged so that the helper rarely waits for that.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        self._stdin = process.stdin
        self._fd = process.stdout.fileno()
        os.set_blocking(self._fd, False)
        if hasattr(fcntl, "F_SETPIPE_SZ"):
            # Over /proc/sys/fs/pipe-max-size: the helper waits for us more often.
            with contextlib.suppress(OSError):
                fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._buffer = bytearray()
        self._next = 0
        self.alive = True

    @classmethod
    def start(
        cls, python: str, root: Path, limits: ConfigLimits, read: Reader[Any]
    ) -> _Helper | None:
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
            log.warning("config_read_helper_failed", error=str(exc), consequence="reading alone")
            return None
        helper = cls(process)
        helper._send((str(root), limits, read.__module__, read.__qualname__))
        return helper

    def request(self, chunk: list[str]) -> int:
        number = self._next
        self._next += 1
        self._send((number, chunk))
        return number

    def answers(self) -> list[tuple[int, Any]]:
        """The answers complete so far."""
        ended = self._drain()
        answers = self._frames()
        if ended and not answers:
            self.fail("the helper process ended")
        return answers

    def fail(self, why: str) -> None:
        if self.alive:
            self.alive = False
            log.warning("config_read_helper_failed", error=why, consequence="reading alone")
            self._process.kill()

    def close(self) -> None:
        # Nothing it still has is needed, and it may be blocked writing an answer
        # nobody will read: stop it rather than wait for it.
        self.alive = False
        self._process.kill()
        self._process.wait()
        with contextlib.suppress(OSError):
            self._stdin.close()
        if self._process.stdout is not None:
            self._process.stdout.close()

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

    def _frames(self) -> list[tuple[int, Any]]:
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
    _SlotPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(message)
    data = buffer.getbuffer()
    _HEADER.pack_into(data, 0, len(data) - _HEADER.size)
    stream.write(data)
    stream.flush()


class _SlotPickler(pickle.Pickler):
    """Pickles frozen, slotted dataclasses as their class and slot values.

    The dataclass's own ``__setstate__`` looks up its fields again for every
    object; :func:`_rebuild` sets the slots through their descriptors, which
    halves the unpickling that this process pays for every answer.
    """

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        if "__dataclass_fields__" in cls.__dict__ and "__slots__" in cls.__dict__:
            names, _ = _slots(cls)
            return _rebuild, (cls, tuple([getattr(obj, name) for name in names]))
        return NotImplemented


_SLOTS: dict[type, tuple[tuple[str, ...], tuple[Callable[[Any, Any], None], ...]]] = {}


def _slots(cls: type) -> tuple[tuple[str, ...], tuple[Callable[[Any, Any], None], ...]]:
    """The slot names of ``cls`` (with its bases') and their descriptors' setters."""
    known = _SLOTS.get(cls)
    if known is None:
        names = tuple(
            name
            for base in reversed(cls.__mro__)
            for name in base.__dict__.get("__slots__", ())
            if name not in ("__weakref__", "__dict__")
        )
        setters = tuple(getattr(cls, name).__set__ for name in names)
        known = _SLOTS[cls] = (names, setters)
    return known


def _rebuild(cls: type, values: tuple[Any, ...]) -> Any:
    obj: Any = object.__new__(cls)
    for setter, value in zip(_slots(cls)[1], values, strict=True):
        setter(obj, value)
    return obj


def _read_frame(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def _serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """The helper's side: read each requested chunk and answer it, until the input ends."""
    setup = _read_frame(requests)
    if setup is None:
        return
    root, limits, module, name = setup
    read = getattr(__import__(module, fromlist=[name]), name)
    while (message := _read_frame(requests)) is not None:
        number, chunk = message
        _write_frame(answers, (number, [read(Path(root), path, limits) for path in chunk]))


def main() -> None:
    """The helper process: answer requests on stdin until it closes."""
    import gc

    # Everything it builds is answered and dropped; no cycles to collect.
    gc.disable()
    # Answers go to the original stdout; anything printed (a log line) goes to stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        _serve(sys.stdin.buffer, answers)
    os._exit(0)


if __name__ == "__main__":
    # Run under this module's own name, so that what it pickles names
    # controlplane.config.parallel_read (not __main__) for the reading process.
    from controlplane.config import parallel_read

    parallel_read.main()
