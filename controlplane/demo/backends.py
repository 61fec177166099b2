"""Tiny named HTTP backends, and a client that tells which one answered.

A :class:`Backend` is a threaded HTTP/1.1 server that answers every request
(any method, any path) with ``200`` and the body ``hello from <name>``, and
says in response headers who it is (``x-backend``), the path it was asked for
(``x-echo-path``) and the Host header it received (``x-echo-host``). Behind
Envoy that shows which workload the load balancer picked and what Envoy sent
it. Port 0 picks a free port; :attr:`Backend.port` is the one bound.

:class:`Client` is the other end: GETs over one kept-alive connection (Envoy
balances per request, so one connection sees the balancing), never through
an HTTP proxy from the environment, and :meth:`Client.backends` counts who
answered.

``python -m controlplane.demo.backends --name hello-1 --port 9080`` runs one
backend in the foreground until SIGTERM or SIGINT (it handles both itself,
since as a container's PID 1 it would otherwise ignore SIGTERM).
"""

from __future__ import annotations

import argparse
import http.client
import signal
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


def body_of(name: str) -> str:
    """What the backend called ``name`` answers."""
    return f"hello from {name}\n"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together, so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now.

    ``SO_REUSEADDR`` is set, as servers (and Envoy) set it, so that a port
    whose last connections linger in TIME_WAIT counts as free; a listener on
    the port, or on the wildcard address, still makes it taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError:
            return False
    return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = body_of(self.server.name).encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-backend", self.server.name)
        self.send_header("x-echo-path", self.path)
        self.send_header("x-echo-host", self.headers.get("host", ""))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    name: str


class Backend:
    """One named HTTP backend on ``host:port`` (port 0: a free one); :meth:`start`, :meth:`stop`."""

    def __init__(self, name: str, port: int = 0, host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        self._server = _Server((host, port), _Handler)
        self._server.name = name
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"backend-{name}", daemon=True
        )

    def start(self) -> Backend:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop serving and close the listening socket (safe to call twice, or before start)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(5)
        self._server.server_close()

    def __enter__(self) -> Backend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Backends:
    """A set of backends by name (free ports unless given), started and stopped together."""

    def __init__(self, names: Iterable[str], ports: Mapping[str, int] | None = None) -> None:
        ports = ports or {}
        self.by_name: dict[str, Backend] = {}
        try:
            for name in names:
                self.by_name[name] = Backend(name, ports.get(name, 0))
        except BaseException:
            self.stop()
            raise

    def start(self) -> Backends:
        for backend in self.by_name.values():
            backend.start()
        return self

    def stop(self) -> None:
        for backend in self.by_name.values():
            backend.stop()

    def __enter__(self) -> Backends:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def port(self, name: str) -> int:
        return self.by_name[name].port


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: str

    @property
    def backend(self) -> str | None:
        """The name of the backend that answered (``None``: Envoy answered itself)."""
        return self.headers.get("x-backend")


class Client:
    """HTTP/1.1 to one ``127.0.0.1`` port over a kept-alive connection (reopened as needed)."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.port = port
        self.timeout = timeout
        self._connection: http.client.HTTPConnection | None = None

    def get(self, path: str = "/", host: str | None = None, **headers: str) -> Response:
        """GET ``path``; ``host`` sets the Host header, ``headers`` use ``_`` for ``-``."""
        sent = {key.replace("_", "-"): value for key, value in headers.items()}
        if host is not None:
            sent["host"] = host
        for attempt in (1, 2):
            connection = self._connect()
            try:
                connection.request("GET", path, headers=sent)
                response = connection.getresponse()
                body = response.read().decode()
            except (ConnectionError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                continue
            result = Response(
                response.status, {k.lower(): v for k, v in response.getheaders()}, body
            )
            if response.will_close:
                self.close()
            return result
        raise AssertionError("unreachable")

    def backends(
        self, count: int, path: str = "/", host: str | None = None, **headers: str
    ) -> Counter[str | None]:
        """How many of ``count`` GETs each backend answered (``None``: not a backend)."""
        return Counter(self.get(path, host, **headers).backend for _ in range(count))

    def sequence(self, count: int, path: str = "/") -> list[str | None]:
        """The backends that answered ``count`` GETs, in order."""
        return [self.get(path).backend for _ in range(count)]

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=self.timeout
            )
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- python -m controlplane.demo.backends ------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.demo.backends",
        description="Serve one HTTP backend that answers 'hello from NAME'.",
    )
    parser.add_argument("--name", required=True, help="the name the backend answers with")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    return parser


def run_until_signalled(
    name: str, host: str, port: int, start: Callable[[], tuple[int, Callable[[], None]]]
) -> int:
    """A demo program's life: ``start()`` a server (its bound port and how to stop it), say
    where it listens, stop it on SIGTERM or SIGINT. A port it cannot bind is one line, exit 2."""
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        bound, stop = start()
    except OSError as exc:
        print(f"{name}: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 2
    print(f"{name} listening on {host}:{bound}", file=sys.stderr, flush=True)
    stopping.wait()
    stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def start() -> tuple[int, Callable[[], None]]:
        backend = Backend(args.name, args.port, args.host).start()
        return backend.port, backend.stop

    return run_until_signalled(args.name, args.host, args.port, start)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
