"""The storefront's programs: a catalog instance, and a frontend that asks the catalog.

One threaded HTTP/1.1 server, two behaviours:

- a **catalog** instance (no ``--calls``) answers every request with ``200``
  and its name, after ``--delay`` (a slow instance on purpose, for the
  latency-aware balancer to avoid);
- a **frontend** (``--calls HOST:PORT --via ADDRESS``) asks ``HOST:PORT`` for
  each request it gets, over a connection to ``ADDRESS:PORT``: its sidecar
  agent's outbound listener for that service, so the call crosses the mesh
  again and is routed by what the control plane sent that sidecar. It
  answers with the catalog's status and one line naming both hops:
  ``storefront-v1 <- catalog-2``.

Every answer names who gave it in ``x-backend``; a frontend adds the catalog
instance that answered it in ``x-catalog``. These are the names the tour and
the tests count.

``python -m controlplane.demo.storefront --name catalog-1 --port 9211`` runs
one in the foreground until SIGTERM or SIGINT (it handles both, since as a
container's PID 1 it would otherwise ignore SIGTERM).
"""

from __future__ import annotations

import argparse
import http.client
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from controlplane.demo.backends import run_until_signalled

UPSTREAM_TIMEOUT = 10.0
PASSED_ON = ("x-request-id", "x-canary", "user-agent")


@dataclass(frozen=True)
class Upstream:
    """The service a frontend calls (``host:port``) and its sidecar's address."""

    host: str
    port: int
    via: str


@dataclass(frozen=True)
class Behaviour:
    name: str
    delay: float = 0.0
    upstream: Upstream | None = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        behaviour = self.server.behaviour
        if behaviour.delay:
            time.sleep(behaviour.delay)
        headers = {"x-backend": behaviour.name}
        if behaviour.upstream is None:
            status, text = 200, f"{behaviour.name}\n"
        else:
            status, text, catalog = self._ask(behaviour.name, behaviour.upstream)
            if catalog:
                headers["x-catalog"] = catalog
        body = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _ask(self, name: str, upstream: Upstream) -> tuple[int, str, str]:
        sent = {"host": f"{upstream.host}:{upstream.port}"}
        for key in PASSED_ON:
            if self.headers.get(key) is not None:
                sent[key] = self.headers[key]
        connection = http.client.HTTPConnection(
            upstream.via, upstream.port, timeout=UPSTREAM_TIMEOUT
        )
        try:
            connection.request("GET", self.path, headers=sent)
            response = connection.getresponse()
            answer = response.read().decode(errors="replace").strip()
            catalog = response.getheader("x-backend") or ""
        except (OSError, http.client.HTTPException) as exc:
            return 502, f"{name} <- no answer from {upstream.host} via {upstream.via}: {exc}\n", ""
        finally:
            connection.close()
        if response.status == 200 and catalog:
            return 200, f"{name} <- {catalog}\n", catalog
        text = f"{name} <- {upstream.host} answered {response.status}: {answer}\n"
        return response.status, text, ""

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    behaviour: Behaviour


def serve(behaviour: Behaviour, host: str, port: int) -> _Server:
    """Bind ``host:port`` (raises ``OSError``); call ``serve_forever`` on the result."""
    server = _Server((host, port), _Handler)
    server.behaviour = behaviour
    return server


# -- python -m controlplane.demo.storefront -------------------------------------------


def parse_delay(text: str) -> float:
    """``100ms``, ``0.5s`` or ``2s`` in seconds; raises ``ValueError`` otherwise."""
    for suffix, scale in (("ms", 0.001), ("s", 1.0)):
        if text.endswith(suffix):
            number = text[: -len(suffix)]
            if number.replace(".", "", 1).isdigit():
                return float(number) * scale
    raise ValueError(f"{text!r} is not a duration like 100ms or 1.5s")


def _seconds(text: str) -> float:
    try:
        return parse_delay(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _upstream(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m controlplane.demo.storefront",
        description="Serve a catalog instance, or with --calls a storefront frontend.",
    )
    parser.add_argument("--name", required=True, help="the name it answers with (x-backend)")
    parser.add_argument("--port", type=int, required=True, help="the port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument(
        "--delay", type=_seconds, default=0.0, help="wait this long before answering (0s)"
    )
    parser.add_argument(
        "--calls",
        type=_upstream,
        default=None,
        help="HOST:PORT of the service to ask for every request (a frontend)",
    )
    parser.add_argument(
        "--via",
        default="127.0.0.1",
        help="the sidecar address whose listener on PORT carries those calls (127.0.0.1)",
    )
    return parser


def behaviour_of(args: argparse.Namespace) -> Behaviour:
    upstream = None if args.calls is None else Upstream(args.calls[0], args.calls[1], args.via)
    return Behaviour(args.name, args.delay, upstream)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def start() -> tuple[int, Callable[[], None]]:
        server = serve(behaviour_of(args), args.host, args.port)
        threading.Thread(target=server.serve_forever, name=args.name, daemon=True).start()

        def stop() -> None:
            server.shutdown()
            server.server_close()

        return server.server_address[1], stop

    return run_until_signalled(args.name, args.host, args.port, start)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
