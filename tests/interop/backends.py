"""Tiny HTTP backends on loopback, and a client that talks to Envoy listeners.

Each :class:`Backend` listens on a free ``127.0.0.1`` port and answers every
request with its own name as the body, and in response headers its name
(``x-backend``), the path it was asked for (``x-echo-path``) and the Host
header it received (``x-echo-host``), so a test can tell which workload
Envoy picked and what Envoy sent it.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = self.server.name.encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-backend", self.server.name)
        self.send_header("x-echo-path", self.path)
        self.send_header("x-echo-host", self.headers.get("host", ""))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    name: str


class Backend:
    """One named HTTP backend on a free loopback port."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.name = name
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"backend-{name}", daemon=True
        )

    def start(self) -> Backend:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class Backends:
    """A set of backends by name, started together."""

    def __init__(self, names: Iterable[str]) -> None:
        self.by_name = {name: Backend(name) for name in names}

    def __enter__(self) -> Backends:
        for backend in self.by_name.values():
            backend.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for backend in self.by_name.values():
            backend.stop()

    def port(self, name: str) -> int:
        return self.by_name[name].port


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: str

    @property
    def backend(self) -> str | None:
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
