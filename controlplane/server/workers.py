"""``pilotfish serve --workers N``: N control planes on one port, and their supervisor.

One Python process pushes on one core. With ``--workers N`` the ``serve``
process becomes a supervisor of N worker processes, each a complete control
plane on the same config directory (the same ``pilotfish serve`` command line
plus ``--worker INDEX --run-dir DIR``). Versions are content hashes, so the
workers hand out the same versions for the same files, and a proxy that
reconnects to another worker resumes without a resend of what it holds.

Ports: gRPC's ``SO_REUSEPORT`` stays off for a lone ``serve``, so a second
server on a busy port fails with one clear line. The supervisor reserves the
xDS port (and the HTTP admin port) with a *guard*: a socket bound with
``SO_REUSEPORT`` alone that never listens. Linux lets only sockets that set
``SO_REUSEPORT`` too, of the same user, bind beside it: the workers (gRPC and
the HTTP admin with ``reuse_port``) join and the kernel spreads new connections over
the listening ones, while an unrelated ``pilotfish serve`` still meets a busy
port (its check binds without ``SO_REUSEPORT``; so does a second supervisor's).
The guard holds the port while every worker is restarting, so nobody else can
take it; connections then are refused until a worker listens again, and
proxies retry. Port 0 is resolved once, by the guard, and handed to the
workers.

Supervision (:class:`Supervisor`): a worker that exits is started again after
a backoff (:class:`Backoff`: doubling from 0.5 s to 30 s, back to 0.5 s once a
worker has lived a minute), except one that exits with code 2 (used wrongly:
it would fail the same way again). SIGTERM and SIGINT are forwarded to every
worker; the supervisor waits for them (SIGKILL after the grace plus ten
seconds) and exits 0, or, when every worker has exited with code 2, with 2.
Workers ask the kernel for SIGTERM when the supervisor dies
(``PR_SET_PDEATHSIG``, :func:`die_with_parent`), so killing the supervisor
with SIGKILL leaves no orphan serving an unguarded port.

The run directory (a fresh temporary directory, removed at exit) holds each
worker's private sockets and its ready file (:class:`~controlplane.server.peers.WorkerSlot`);
the admin answers of every worker are merged through those sockets
(:mod:`~controlplane.server.peers`). Only worker 0 writes the state directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from controlplane.server.grpc_server import AddressInUseError, ServerStartError, split_address
from controlplane.server.peers import WorkerSlot

PARENT_PID = "supervisor.pid"
_PR_SET_PDEATHSIG = 1
USAGE_EXIT = 2
"""A worker exiting with this code was used wrongly and is not started again."""


@dataclass
class Backoff:
    """Delays before restarting a worker: doubling, reset after a long enough life."""

    first: float = 0.5
    most: float = 30.0
    healthy_after: float = 60.0
    _next: float = 0.0

    def after_exit(self, lived: float) -> float:
        """The delay before the next start of a worker that ran ``lived`` seconds."""
        if lived >= self.healthy_after or not self._next:
            self._next = self.first
        delay = self._next
        self._next = min(self.most, self._next * 2)
        return delay


def guard(address: str) -> tuple[list[socket.socket], int]:
    """Reserve ``address`` for workers: sockets bound with ``SO_REUSEPORT`` only, and the port.

    Raises :class:`AddressInUseError` (or :class:`ServerStartError`) like a lone server would.
    """
    host, port = split_address(address)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerStartError(f"cannot listen on {address}: {host}: {exc.strerror}") from exc
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, sockaddr in infos:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind((sockaddr[0], port, *sockaddr[2:]))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise AddressInUseError(host, port) from exc
                raise ServerStartError(f"cannot listen on {address}: {exc.strerror}") from exc
            port = sock.getsockname()[1]
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets, port


def die_with_parent(run_dir: Path) -> int:
    """Have the kernel send SIGTERM when the supervisor dies; exit now if it already has.

    Returns the supervisor's pid."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    try:
        parent = int((run_dir / PARENT_PID).read_text())
    except (OSError, ValueError):
        parent = -1
    if os.getppid() != parent:
        print(
            "pilotfish serve: --worker is for the processes `serve --workers` starts, "
            "and their supervisor is gone",
            file=sys.stderr,
        )
        raise SystemExit(1)
    return parent


def announce_ready(slot: WorkerSlot) -> None:
    """Tell the supervisor this worker serves (its ready file, written atomically)."""
    path = slot.ready_path(slot.index)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(str(os.getpid()))
    os.replace(temporary, path)


def leave(slot: WorkerSlot, parent: int) -> None:
    """A worker stops: remove its files; the last to leave a dead supervisor removes the rest.

    The supervisor's pid file is the lock that makes "remove mine, see whether any
    other is left" one step, so two workers stopping at once cannot both leave
    the directory behind."""
    try:
        lock = open(slot.run_dir / PARENT_PID)  # noqa: SIM115 - closed below
    except OSError:
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for path in (
            slot.ready_path(slot.index),
            slot.grpc_path(slot.index),
            slot.http_path(slot.index),
        ):
            with contextlib.suppress(OSError):
                path.unlink()
        if os.getppid() == parent:
            return  # the supervisor removes the run directory
        if not any(slot.ready_path(i).exists() for i in range(slot.count)):
            with contextlib.suppress(OSError):
                (slot.run_dir / PARENT_PID).unlink()
                slot.run_dir.rmdir()


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None
    exit_code: int | None = None
    backoff: Backoff | None = None


class Supervisor:
    """Starts ``count`` workers with ``command(index, run_dir)``, keeps them running, stops them."""

    def __init__(
        self,
        count: int,
        command: Callable[[int, Path], Sequence[str]],
        *,
        grace: float,
        address: str,
        tell: Callable[[str], None],
        environ: Mapping[str, str] | None = None,
        backoff: Callable[[], Backoff] = Backoff,
    ) -> None:
        self.environ = environ
        self.count = count
        self.command = command
        self.grace = grace
        self.address = address
        self.tell = tell
        self._backoff = backoff
        self.run_dir = Path(tempfile.mkdtemp(prefix="pilotfish-"))
        self.slot = WorkerSlot(0, count, self.run_dir)
        self._workers = [_Worker(i, backoff=backoff()) for i in range(count)]
        self._stopping = False

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        previous = {
            signum: signal.signal(signum, self._signalled)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            (self.run_dir / PARENT_PID).write_text(str(os.getpid()))
            for worker in self._workers:
                self._start(worker)
            return self._supervise()
        finally:
            self._stop_all()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _start(self, worker: _Worker) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.slot.ready_path(worker.index).unlink()
        for path in (self.slot.grpc_path(worker.index), self.slot.http_path(worker.index)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a killed worker leaves its socket files behind
        worker.process = subprocess.Popen(
            list(self.command(worker.index, self.run_dir)), env=self.environ
        )
        worker.started = time.monotonic()
        worker.restart_at = None

    def _supervise(self) -> int:
        announced = False
        while not self._stopping:
            now = time.monotonic()
            for worker in self._workers:
                self._check(worker, now)
            if all(w.exit_code == USAGE_EXIT for w in self._workers):
                return USAGE_EXIT
            if not announced and all(self.slot.ready_path(w.index).exists() for w in self._workers):
                pids = ", ".join(str(w.process.pid) for w in self._workers if w.process)
                self.tell(
                    f"pilotfish: serving xDS on {self.address} with {self.count} workers "
                    f"(pids {pids}; run directory {self.run_dir})"
                )
                announced = True
            # Quick while workers start; then a poll that costs the serving cores nothing.
            time.sleep(0.25 if announced else 0.05)
        return 0

    def _check(self, worker: _Worker, now: float) -> None:
        process = worker.process
        if process is None:
            if worker.restart_at is not None and now >= worker.restart_at:
                self._start(worker)
            return
        code = process.poll()
        if code is None:
            return
        worker.process = None
        worker.exit_code = code
        if code == USAGE_EXIT:
            self.tell(f"pilotfish: worker {worker.index} exited with code 2; not restarting it")
            return
        assert worker.backoff is not None
        delay = worker.backoff.after_exit(now - worker.started)
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        self.tell(
            f"pilotfish: worker {worker.index} (pid {process.pid}) {how}; "
            f"restarting it in {delay:g}s"
        )
        worker.restart_at = now + delay

    def _stop_all(self) -> None:
        live = [w.process for w in self._workers if w.process is not None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + 10.0
        for process in live:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
