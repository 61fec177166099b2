"""HTTP/1.1 for the admin pages: a small server and a one-request client, on h11.

h11 is the protocol (a sans-IO state machine: bytes in, events out, and the
reverse); this module is the I/O at its edge, asyncio streams on the loop the
gRPC server runs on. It replaced aiohttp, whose import alone (its client, TLS
contexts, multidict, yarl, attrs) was 10.6 MiB of a server's resident memory
for seven GET routes (see docs/performance.md, session 11).

:class:`HttpServer` serves ``{path: handler}``:

* a handler takes a :class:`Request` and returns a :class:`Response` (sent
  with its length) or a :class:`Streamed` response, whose body the handler's
  ``produce`` writes as it goes (server-sent events), chunked for HTTP/1.1;
* ``GET`` and ``HEAD`` only (``HEAD`` runs the handler and sends no body);
  any other method is answered 405 and an unknown path 404. A request with a
  body over :data:`MAX_BODY` is answered 413 and one h11 cannot parse 400
  (431 for a head still incomplete past :data:`MAX_HEADER_BYTES`), and
  either closes the connection. A handler that raises is answered 500 and logged;
* keep-alive: a connection waits up to :data:`IDLE_TIMEOUT` for its next
  request, and a request once begun must arrive whole within
  :data:`REQUEST_TIMEOUT`; slower clients are disconnected;
* a streamed response learns that its client went away from the connection
  itself (end of stream or any byte sent meanwhile: a browser sends nothing
  on an event stream), through :attr:`BodyWriter.closed`;
* :meth:`HttpServer.close` stops listening, lets requests under way finish
  for a grace period, then cancels what is left.

:func:`get` is the client side, for the workers of one server asking each
other over their Unix sockets: one ``GET``, the whole body back, or
:class:`HttpError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus

import h11
import structlog

log = structlog.get_logger("controlplane.http")

MAX_HEADER_BYTES = 16 * 1024
"""The most of a request line and headers kept while they are incomplete (h11's
limit: a head that arrives whole in one read of :data:`_READ` bytes passes)."""
MAX_BODY = 64 * 1024
"""The most body a request may carry (the routes read none); more is answered 413."""
IDLE_TIMEOUT = 75.0
"""Seconds a kept-alive connection may wait for its next request."""
REQUEST_TIMEOUT = 30.0
"""Seconds a request may take to arrive once its first byte has."""
_READ = 64 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    """Names in lower case; a repeated header's values joined with ``, ``."""


@dataclass(frozen=True, slots=True)
class Response:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


class BodyWriter:
    """What a :class:`Streamed` response's ``produce`` writes its body to."""

    def __init__(self, writer: asyncio.StreamWriter, conn: h11.Connection) -> None:
        self._writer = writer
        self._conn = conn
        self.closed = False
        """The client went away (or sent something: nothing is expected until the end)."""

    async def write(self, data: bytes) -> None:
        """Send ``data`` now; :class:`ConnectionError` once the client is gone."""
        if self.closed:
            raise ConnectionResetError("the client went away")
        if not data:
            return
        self._writer.write(self._conn.send(h11.Data(data=data)))
        await self._writer.drain()


@dataclass(frozen=True, slots=True)
class Streamed:
    """A response whose body ``produce`` writes as it is made, until it returns."""

    produce: Callable[[BodyWriter], Awaitable[None]]
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Response | Streamed]]


class HttpError(Exception):
    """A request by :func:`get` failed: no answer, a bad answer, or a status other than 200."""


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class HttpServer:
    """Serves ``routes`` on the listeners :meth:`listen_tcp` and :meth:`listen_unix` open."""

    def __init__(self, routes: Mapping[str, Handler]) -> None:
        self.routes = dict(routes)
        self._servers: list[asyncio.AbstractServer] = []
        self._connections: set[asyncio.Task[None]] = set()

    async def listen_tcp(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on ``host:port`` (port 0: any); the port bound."""
        server = await asyncio.start_server(
            self._connection, host or None, port, reuse_port=reuse_port or None, limit=_READ
        )
        self._servers.append(server)
        for sock in server.sockets:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                return int(sock.getsockname()[1])
        return port

    async def listen_unix(self, path: str) -> None:
        self._servers.append(await asyncio.start_unix_server(self._connection, path, limit=_READ))

    async def close(self, grace: float = 2.0) -> None:
        """Stop listening; cancel the connections still open after ``grace`` seconds."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()
        if self._connections:
            await asyncio.wait(set(self._connections), timeout=grace)
        left = set(self._connections)
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        try:
            while await self._exchange(conn, reader, writer):
                conn.start_next_cycle()
        except (ConnectionError, TimeoutError, h11.LocalProtocolError):
            pass  # the client went away, too slow or mid-response: nothing to answer
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _exchange(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read one request and answer it; whether the connection may carry another."""
        try:
            event = await _next_event(conn, reader, IDLE_TIMEOUT)
            if isinstance(event, h11.ConnectionClosed):
                return False
            assert isinstance(event, h11.Request)
            request = _request(event)
            await _read_body(conn, reader)
        except TimeoutError:
            return False
        except h11.RemoteProtocolError as exc:
            await _refuse(conn, writer, exc.error_status_hint, "bad request")
            return False
        except _Refused as exc:
            await _refuse(conn, writer, exc.status, str(exc))
            return False
        answer = await self._answer(request)
        head = request.method == "HEAD"
        if isinstance(answer, Response):
            headers = [
                ("Content-Type", answer.content_type),
                ("Content-Length", str(len(answer.body))),
                *answer.headers,
            ]
            writer.write(conn.send(_head(answer.status, headers)))
            if not head and answer.body:
                writer.write(conn.send(h11.Data(data=answer.body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        else:
            headers = [("Content-Type", answer.content_type), *answer.headers]
            writer.write(conn.send(_head(200, headers)))
            await writer.drain()
            if not head and not await _produce(answer, conn, reader, writer):
                return False
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        return conn.our_state is h11.DONE and conn.their_state is h11.DONE

    async def _answer(self, request: Request) -> Response | Streamed:
        handler = self.routes.get(request.path)
        if handler is None:
            return Response(b"not found\n", status=404)
        if request.method not in ("GET", "HEAD"):
            return Response(b"method not allowed\n", status=405, headers=(("Allow", "GET, HEAD"),))
        try:
            return await handler(request)
        except Exception:
            log.exception("http_admin_handler_failed", path=request.path)
            return Response(b"internal error\n", status=500)


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader, wait: float) -> object:
    """h11's next event, reading as needed: the first read waits ``wait`` seconds at
    most, the rest of the request :data:`REQUEST_TIMEOUT` together."""
    deadline: float | None = None
    loop = asyncio.get_running_loop()
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        timeout = wait if deadline is None else max(0.0, deadline - loop.time())
        data = await asyncio.wait_for(reader.read(_READ), timeout)
        if deadline is None:
            deadline = loop.time() + REQUEST_TIMEOUT
            wait = REQUEST_TIMEOUT
        conn.receive_data(data)


async def _read_body(conn: h11.Connection, reader: asyncio.StreamReader) -> None:
    size = 0
    while True:
        event = await _next_event(conn, reader, REQUEST_TIMEOUT)
        if isinstance(event, h11.EndOfMessage):
            return
        if isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_BODY:
                raise _Refused(413, "request body too large")
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionResetError("the client closed mid-request")


def _head(status: int, headers: list[tuple[str, str]]) -> h11.Response:
    return h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase)


def _request(event: h11.Request) -> Request:
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key, text = name.decode("ascii"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    path, _, query = event.target.decode("ascii", "replace").partition("?")
    return Request(event.method.decode("ascii"), path, query, headers)


async def _refuse(
    conn: h11.Connection, writer: asyncio.StreamWriter, status: int, reason: str
) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = f"{reason}\n".encode()
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    writer.write(conn.send(_head(status, headers)))
    writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()


async def _produce(
    answer: Streamed,
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> bool:
    """Run ``answer.produce``; whether the client is still there at its end."""
    body = BodyWriter(writer, conn)

    async def watch() -> None:
        await reader.read(1)
        body.closed = True

    watcher = asyncio.ensure_future(watch())
    try:
        await answer.produce(body)
    except ConnectionError:
        body.closed = True
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await watcher
    return not body.closed


async def get(unix_path: str, target: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """``GET target`` from the server on the Unix socket ``unix_path``: the body of a
    200 answer; :class:`HttpError` otherwise (``OSError`` if nothing listens there)."""
    reader, writer = await asyncio.open_unix_connection(unix_path, limit=_READ)
    try:
        conn = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET",
            target=target,
            headers=[("Host", "localhost"), ("Connection", "close"), *headers],
        )
        writer.write(conn.send(request))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        status = 0
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(_READ))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise HttpError("the server closed the connection before answering")
    except h11.ProtocolError as exc:
        raise HttpError(f"bad answer: {exc}") from exc
    finally:
        writer.close()
    if status != 200:
        raise HttpError(f"HTTP {status}")
    return bytes(body)
