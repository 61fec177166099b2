"""gRPC backends that say who they are, and a proxyless xDS client to call them.

:class:`EchoBackend` is a real ``grpc.server`` on a free loopback port with
one generic unary method (:data:`METHOD`, raw bytes in and out, no protobuf
needed) that answers a JSON object naming the backend and listing the
metadata the call arrived with, so a test sees both where a call went and
what the client sent. A call carrying ``x-sleep: <seconds>`` is answered
that much later, for timeout tests.

The client runs in a child process (``python grpc_backends.py client
<target>``), because gRPC's C core reads ``GRPC_XDS_BOOTSTRAP`` once per
process and keeps its xDS client (and the resources it cached) for the
process's life: a process per scenario keeps scenarios apart.
:class:`XdsClient` starts it with a bootstrap naming the control plane and
talks to it over pipes: each request line (JSON: ``calls``, ``metadata``,
``timeout``) makes that many calls on one ``xds:///<target>`` channel and
answers one JSON line with the backend of every successful call, the status
code of every failed one, and the metadata the last success arrived with.
The channel stays open between requests, so a test can poll the same
client while the configuration changes under it.

``python grpc_backends.py probe <target>...`` opens a channel to every
target, makes one call on each (all at once) and prints each target's
outcome: enough to make gRPC fetch, and validate, every listener, route
configuration, cluster and load assignment those targets reach.

Both modes run with ``GRPC_TRACE=xds_client``: gRPC then logs every request
it sends, and a NACK is a request whose ``error=`` is not ``OK``
(:func:`nacks` finds them), which is how a test proves gRPC accepted every
resource it was sent.

This file imports nothing from the project, so that the child process needs
no ``sys.path`` set up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc

SERVICE = "pilotfish.test.Echo"
METHOD = f"/{SERVICE}/Call"
TRACE_ENV = {"GRPC_TRACE": "xds_client", "GRPC_VERBOSITY": "debug"}
NACK_MARK = "sending ADS request"


class EchoBackend:
    """A gRPC server on ``127.0.0.1`` answering :data:`METHOD` with its name and the metadata."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self._server: grpc.Server | None = None

    def start(self) -> EchoBackend:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.unary_unary_rpc_method_handler(self._call)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Call": handler}),)
        )
        self.port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def _call(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = {key: value for key, value in context.invocation_metadata()}
        delay = metadata.get("x-sleep")
        if delay is not None:
            time.sleep(float(str(delay)))
        return json.dumps({"backend": self.name, "metadata": metadata}, default=str).encode()


@dataclass
class Calls:
    """The outcome of one round of calls."""

    backends: list[str]
    errors: list[str]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def counts(self) -> Counter[str]:
        return Counter(self.backends)


def nacks(log: str) -> list[str]:
    """The requests in a gRPC ``xds_client`` trace that reject a response."""
    return [
        line
        for line in log.splitlines()
        if NACK_MARK in line and "error=" in line and "error=OK" not in line
    ]


def client_env(bootstrap_path: Path) -> dict[str, str]:
    return dict(os.environ, GRPC_XDS_BOOTSTRAP=str(bootstrap_path), **TRACE_ENV)


def probe(xds_port: int, targets: Sequence[str], workdir: Path, timeout: float = 3.0) -> Probe:
    """One call to each ``xds:///`` target from a fresh child process."""
    path = workdir / "grpc-probe-bootstrap.json"
    path.write_text(json.dumps(bootstrap(xds_port, "grpc-probe")))
    done = subprocess.run(
        [sys.executable, __file__, "probe", str(timeout), *targets],
        env=client_env(path),
        capture_output=True,
        text=True,
        timeout=timeout * 10 + 30,
        check=True,
    )
    return Probe(json.loads(done.stdout), done.stderr)


@dataclass
class Probe:
    """Each probed target's outcome (``OK`` or a status code name) and gRPC's trace."""

    outcomes: dict[str, str]
    log: str

    @property
    def nacks(self) -> list[str]:
        return nacks(self.log)


def bootstrap(xds_port: int, node_id: str) -> dict[str, Any]:
    """A gRPC xDS bootstrap for the control plane on ``127.0.0.1:<xds_port>``."""
    return {
        "xds_servers": [
            {
                "server_uri": f"127.0.0.1:{xds_port}",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node_id, "cluster": "grpc-clients", "locality": {"zone": "local"}},
    }


class XdsClient:
    """A child process holding one ``xds:///<target>`` channel; :meth:`call` runs a round."""

    def __init__(self, xds_port: int, target: str, workdir: Path) -> None:
        self.target = target
        slug = "".join(c if c.isalnum() else "-" for c in target)
        self.bootstrap_path = workdir / f"grpc-bootstrap-{slug}.json"
        self.log_path = workdir / f"grpc-client-{slug}.log"
        self.bootstrap_path.write_text(json.dumps(bootstrap(xds_port, f"grpc-client-{slug}")))
        self._process: subprocess.Popen[str] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> XdsClient:
        env = client_env(self.bootstrap_path)
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            [sys.executable, __file__, "client", self.target],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        return self

    def call(
        self, calls: int, metadata: Mapping[str, str] | None = None, *, timeout: float = 5.0
    ) -> Calls:
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        request = {"calls": calls, "metadata": dict(metadata or {}), "timeout": timeout}
        process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"gRPC client exited ({process.wait()}):\n{self.log()}")
        answer = json.loads(line)
        return Calls(answer["backends"], answer["errors"], answer["metadata"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def nacks(self) -> list[str]:
        return nacks(self.log())

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            if process.stdout is not None:
                process.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> XdsClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the child process ---------------------------------------------------------------


def _run_client(target: str) -> int:
    channel = grpc.insecure_channel(f"xds:///{target}")
    call = channel.unary_unary(METHOD)
    for line in sys.stdin:
        request = json.loads(line)
        metadata = tuple(request["metadata"].items())
        backends: list[str] = []
        errors: list[str] = []
        last: dict[str, str] = {}
        for _ in range(int(request["calls"])):
            try:
                answer = json.loads(call(b"", timeout=request["timeout"], metadata=metadata))
            except grpc.RpcError as error:
                errors.append(error.code().name)
                continue
            backends.append(answer["backend"])
            last = answer["metadata"]
        sys.stdout.write(json.dumps({"backends": backends, "errors": errors, "metadata": last}))
        sys.stdout.write("\n")
        sys.stdout.flush()
    channel.close()
    return 0


def _run_probe(timeout: float, targets: Sequence[str]) -> int:
    channels = [grpc.insecure_channel(f"xds:///{target}") for target in targets]
    pending = [channel.unary_unary(METHOD).future(b"", timeout=timeout) for channel in channels]
    outcomes = {}
    for target, future in zip(targets, pending, strict=True):
        try:
            future.result()
            outcomes[target] = "OK"
        except grpc.RpcError as error:
            outcomes[target] = error.code().name
    for channel in channels:
        channel.close()
    sys.stdout.write(json.dumps(outcomes) + "\n")
    return 0


def main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "client":
        return _run_client(argv[1])
    if len(argv) >= 2 and argv[0] == "probe":
        return _run_probe(float(argv[1]), argv[2:])
    sys.stderr.write("usage: grpc_backends.py client <target> | probe <timeout> <target>...\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
