"""``pilotfish demo`` as a real subprocess on free ports, for the end-to-end and tour tests.

:func:`start_demo` writes the storefront example into a directory with every
port moved to a free one, runs ``pilotfish demo --config-dir`` on it, and
returns once the demo printed its guide (the gateway has answered by then).
:class:`LiveDemo` reads the demo's output as it comes, sends requests
through the gateway, edits the config files, and stops the demo, checking by
PID that every process it started is gone.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlplane.demo.mesh import write_example
from controlplane.demo.storefront import UPSTREAM_TIMEOUT
from tests.agents.live_support import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0
EDIT_TIMEOUT = 20.0
EXAMPLE_PORTS = (8080, 8000, 8100, 9201, 9202, 9211, 9212, 9213)


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    backend: str
    catalog: str

    @property
    def line(self) -> str:
        return self.body.strip()


@dataclass
class LiveDemo:
    process: subprocess.Popen[str]
    config_dir: Path
    gateway_port: int
    xds_port: int
    admin_port: int
    lines: list[str] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    pids: dict[str, int] = field(default_factory=dict)

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def wait_line(self, pattern: str, after: int = 0, timeout: float = EDIT_TIMEOUT) -> str:
        """The first output line from index ``after`` on that matches ``pattern`` (a regex)."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        with self.changed:
            while True:
                for line in self.lines[after:]:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.process.poll() is not None:
                    output = "\n".join(self.lines)
                    raise AssertionError(f"no line matching {pattern!r}; output:\n{output}")
                self.changed.wait(min(left, 0.5))

    def mark(self) -> int:
        with self.changed:
            return len(self.lines)

    def get(self, **headers: str) -> Answer:
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.gateway_port, timeout=UPSTREAM_TIMEOUT + 5
        )
        try:
            connection.request("GET", "/", headers=headers)
            response = connection.getresponse()
            body = response.read().decode()
            return Answer(
                response.status,
                body,
                response.getheader("x-backend") or "",
                response.getheader("x-catalog") or "",
            )
        finally:
            connection.close()

    def admin_json(self, path: str) -> Any:
        """A JSON page of the control plane's HTTP admin (the dashboard's port)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            assert response.status == 200, (path, response.status, body[:200])
            return json.loads(body)
        finally:
            connection.close()

    def answers(self, count: int, **headers: str) -> Counter[str]:
        """How often each answer line came back in ``count`` requests."""
        return Counter(self.get(**headers).line for _ in range(count))

    def replace_resource(self, file: str, block: str) -> int:
        """Replace the document of ``block``'s kind and name in ``file``; the output mark before."""
        mark = self.mark()
        path = self.config_dir / file
        path.write_text(replace_document(path.read_text(), block))
        return mark

    def eventually(self, check: Callable[[], bool], timeout: float = EDIT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, "condition not reached in time"
            time.sleep(0.1)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            kill_all(self.pids.values())
            raise


def _key(document: str) -> tuple[str, str]:
    kind = re.search(r"^kind:\s*(\S+)", document, re.M)
    name = re.search(r"^  name:\s*(\S+)", document, re.M)
    return (kind.group(1) if kind else "", name.group(1) if name else "")


def replace_document(text: str, block: str) -> str:
    """``text`` (YAML documents separated by ``---``) with the one like ``block`` replaced."""
    documents = re.split(r"^---\s*$", text, flags=re.M)
    wanted = _key(block)
    for index, document in enumerate(documents):
        if _key(document) == wanted:
            prefix = "\n" if index else ""
            documents[index] = prefix + block.strip() + "\n"
            return "---".join(documents)
    raise AssertionError(f"no {wanted[0]} {wanted[1]} in the file")


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("http_proxy", None)
    env.pop("HTTP_PROXY", None)
    return env


def move_ports(directory: Path, ports: dict[int, int]) -> None:
    """Rewrite every port number of ``ports`` in the YAML files of ``directory``."""
    pattern = re.compile(r"(?<![\d.])(" + "|".join(map(str, ports)) + r")(?![\d.])")
    for path in directory.glob("*.yaml"):
        path.write_text(pattern.sub(lambda m: str(ports[int(m.group(1))]), path.read_text()))


def start_demo(config_dir: Path, *flags: str, gateway_port: int | None = None) -> LiveDemo:
    """``pilotfish demo`` on ``config_dir``: the storefront on free ports unless it holds a mesh."""
    if gateway_port is None:
        ports = {old: free_port() for old in EXAMPLE_PORTS}
        write_example(config_dir, ports)
        gateway_port = ports[8080]
    xds, admin = free_port(), free_port()
    command = [sys.executable, "-m", "controlplane", "demo", "--config-dir", str(config_dir)]
    command += ["--xds-port", str(xds), "--admin-port", str(admin), *flags]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=child_env(),
        cwd=ROOT,
    )
    demo = LiveDemo(process, config_dir, gateway_port, xds, admin)
    threading.Thread(target=demo.read, daemon=True).start()
    try:
        line = demo.wait_line(r"^processes: ", timeout=START_TIMEOUT)
    except BaseException:
        demo.stop(signal.SIGKILL)
        raise
    demo.pids = {
        name: int(pid) for name, pid in (item.split("=") for item in line.split(": ", 1)[1].split())
    }
    return demo
