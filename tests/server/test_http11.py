"""The admin's HTTP/1.1 server and client (controlplane/server/http11.py), on raw sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path

import pytest

from controlplane.server import http11
from controlplane.server.http11 import BodyWriter, HttpServer, Request, Response, Streamed


class App:
    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.stream_ended = asyncio.Event()
        self.stream_saw_close = False

    async def hello(self, request: Request) -> Response:
        self.seen.append(request)
        return Response(b"hello\n", headers=(("X-Test", "1"),))

    async def boom(self, request: Request) -> Response:
        raise RuntimeError("handler bug")

    async def events(self, request: Request) -> Streamed:
        return Streamed(self._produce, content_type="text/event-stream")

    async def _produce(self, body: BodyWriter) -> None:
        try:
            await body.write(b"data: 1\n\n")
            while not body.closed:
                await asyncio.sleep(0.01)
            self.stream_saw_close = True
        finally:
            self.stream_ended.set()

    async def finite(self, request: Request) -> Streamed:
        async def produce(body: BodyWriter) -> None:
            await body.write(b"one")
            await body.write(b"two")

        return Streamed(produce, content_type="text/plain")


@pytest.fixture
async def served() -> AsyncIterator[tuple[App, HttpServer, int]]:
    app = App()
    server = HttpServer(
        {"/": app.hello, "/boom": app.boom, "/events": app.events, "/finite": app.finite}
    )
    port = await server.listen_tcp("127.0.0.1", 0)
    yield app, server, port
    await server.close(grace=0.5)


async def exchange(port: int, data: bytes, *, until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_a_get_is_answered_with_its_length_and_the_headers_and_query_reach_the_handler(
    served,
):
    app, _, port = served
    answer = await exchange(
        port,
        b"GET /?a=1 HTTP/1.1\r\nHost: x\r\nX-Two: a\r\nx-two: b\r\nConnection: close\r\n\r\n",
    )
    assert answer == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 6\r\n"
        b"X-Test: 1\r\nConnection: close\r\n\r\nhello\n"
    )
    (request,) = app.seen
    assert (request.method, request.path, request.query) == ("GET", "/", "a=1")
    assert request.headers == {"host": "x", "x-two": "a, b", "connection": "close"}


async def test_head_sends_the_length_without_the_body(served):
    _, _, port = served
    answer = await exchange(port, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.endswith(b"Content-Length: 6\r\nX-Test: 1\r\nConnection: close\r\n\r\n")


async def test_one_kept_alive_connection_answers_pipelined_requests_in_order(served):
    app, _, port = served
    two = (
        b"GET /?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /?n=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answer = await exchange(port, two)
    assert answer.count(b"HTTP/1.1 200 ") == 2
    assert [r.query for r in app.seen] == ["n=1", "n=2"]


@pytest.mark.parametrize(
    ("request_bytes", "status", "extra"),
    [
        (b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"404", b""),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            b"405",
            b"Allow: GET, HEAD\r\n",
        ),
        (b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"500", b""),
    ],
)
async def test_unknown_paths_other_methods_and_failing_handlers_get_their_status(
    served, request_bytes, status, extra
):
    _, _, port = served
    answer = await exchange(port, request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status + b" ")
    assert b"Connection: close" in answer
    assert extra in answer


async def test_a_head_still_incomplete_past_the_limit_is_answered_431_and_closed(served):
    _, _, port = served
    big = b"X-Big: " + b"a" * 100_000 + b"\r\n"
    answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 %s\r\n" % HTTPStatus(431).phrase.encode())
    assert answer.endswith(b"Connection: close\r\n\r\nbad request\n")


async def test_a_body_over_the_limit_is_answered_413_and_the_connection_closed(served):
    _, _, port = served
    size = http11.MAX_BODY + 1
    head = f"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
    answer = await exchange(port, head + b"a" * size)
    assert answer.startswith(b"HTTP/1.1 413 %s\r\n" % HTTPStatus(413).phrase.encode())
    assert answer.endswith(b"Connection: close\r\n\r\nrequest body too large\n")


async def test_garbage_is_answered_400(served):
    _, _, port = served
    answer = await exchange(port, b"\x00\x01 not http\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")


async def test_a_streamed_body_is_chunked_and_ends_when_produce_returns(served):
    _, _, port = served
    answer = await exchange(port, b"GET /finite HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.endswith(
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"
    )


async def test_head_of_a_streamed_response_sends_its_head_and_never_produces(served):
    app, _, port = served
    answer = await exchange(port, b"HEAD /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n")
    assert answer.endswith(b"\r\n\r\n")
    assert b"data:" not in answer
    assert not app.stream_ended.is_set()


async def test_a_streamed_body_learns_that_its_client_went_away(served):
    app, _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"data: 1\n\n"), 5)
    assert b"Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n" in head
    writer.close()
    await asyncio.wait_for(app.stream_ended.wait(), 5)
    assert app.stream_saw_close


async def test_close_cancels_a_stream_still_open_after_the_grace(served):
    app, server, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"data: 1\n\n"), 5)
    await asyncio.wait_for(server.close(grace=0.1), 5)
    assert app.stream_ended.is_set()
    assert not app.stream_saw_close
    # The end of the chunk under way, then the connection closes without the last chunk.
    assert await asyncio.wait_for(reader.read(), 5) == b"\r\n"
    writer.close()


async def test_an_idle_kept_alive_connection_is_closed_after_the_idle_timeout(served, monkeypatch):
    _, _, port = served
    monkeypatch.setattr(http11, "IDLE_TIMEOUT", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5)  # returns once the server closes
    assert answer.endswith(b"hello\n")
    writer.close()


async def test_a_request_that_never_completes_is_dropped_after_the_request_timeout(
    served, monkeypatch
):
    _, _, port = served
    monkeypatch.setattr(http11, "REQUEST_TIMEOUT", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the headers never end
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_the_client_gets_a_body_over_a_unix_socket_and_an_error_for_other_statuses(
    tmp_path: Path,
):
    app = App()
    server = HttpServer({"/": app.hello, "/boom": app.boom})
    path = str(tmp_path / "admin.sock")
    await server.listen_unix(path)
    try:
        assert await http11.get(path, "/?x=1", [("Pilotfish-Local-Only", "1")]) == b"hello\n"
        assert app.seen[0].headers["pilotfish-local-only"] == "1"
        assert app.seen[0].query == "x=1"
        with pytest.raises(http11.HttpError, match="HTTP 500"):
            await http11.get(path, "/boom")
        with pytest.raises(http11.HttpError, match="HTTP 404"):
            await http11.get(path, "/nowhere")
    finally:
        await server.close()
    with pytest.raises(OSError):
        await http11.get(str(tmp_path / "nobody.sock"), "/")
