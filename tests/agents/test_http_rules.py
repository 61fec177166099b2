"""One test (or a few) per rule of shared/http-proxy-rules.md, by number, with raw bytes on sockets.

Each test runs a real agent listener on 127.0.0.1:0 in front of a small asyncio
backend (tests/agents/http_fakes.py) through a fake forwarding table.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from agents.actions import Forward, RetryPolicy, WeightedCluster
from agents.http1 import normalize_path
from agents.http_proxy import _P_UPSTREAM, Exchange, ProxySettings
from agents.upstream_pool import UpstreamPool
from tests.agents.http_fakes import (
    Backend,
    FakeTable,
    Req,
    cluster,
    exchange,
    forward,
    get,
    parse,
    parse_one,
    proxy,
    request,
    response,
    setup,
)


async def refused(port: int, data: bytes, backend: Backend, status: int, reason: str) -> None:
    """The proxy answers ``status`` with the reason, closes, and forwards nothing."""
    raw = await exchange(port, data)
    r = parse_one(raw)
    assert (r.status, r.header("x-pilotfish-error"), r.header("connection")) == (
        status,
        reason,
        "close",
    )
    assert r.body == f"{status} {reason}\n".encode()
    assert backend.requests == []


# 1-8: framing and smuggling


@pytest.mark.parametrize(
    "headers",
    [
        "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
    ],
)
async def test_rule_01_content_length_with_transfer_encoding_is_400_and_closed(
    headers: str,
) -> None:
    async with setup() as (port, backend, _, _):
        data = f"POST / HTTP/1.1\r\nHost: a\r\n{headers}\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n"
        raw = await exchange(port, data.encode())
        r = parse_one(raw)
        assert r.status == 400 and r.header("connection") == "close"
        assert r.header("x-pilotfish-error") in (
            "content_length_with_transfer_encoding",
            "bad_transfer_encoding",
            "bad_content_length",
        )
        assert backend.requests == []


@pytest.mark.parametrize(
    ("value", "status", "reason"),
    [
        ("gzip", 501, "unsupported_transfer_encoding"),
        ("chunked, gzip", 400, "bad_transfer_encoding"),
        ("chunked, chunked", 400, "bad_transfer_encoding"),
        ("xchunked", 400, "bad_transfer_encoding"),
        ("Chunked", 400, "bad_transfer_encoding"),
        ("chunked ", 400, "bad_transfer_encoding"),
        ("chunked\r\nTransfer-Encoding: chunked", 400, "bad_transfer_encoding"),
    ],
)
async def test_rule_02_transfer_encoding_other_than_exactly_chunked_is_refused(
    value: str, status: int, reason: str
) -> None:
    async with setup() as (port, backend, _, _):
        data = f"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {value}\r\n\r\n0\r\n\r\n"
        await refused(port, data.encode(), backend, status, reason)


@pytest.mark.parametrize(
    "headers",
    [
        "Content-Length: 3\r\nContent-Length: 4\r\n",
        "Content-Length: 3\r\nContent-Length: 3\r\n",
        "Content-Length: 3, 4\r\n",
        "Content-Length: +3\r\n",
        "Content-Length: 0x3\r\n",
    ],
)
async def test_rule_03_repeated_listed_or_non_digit_content_length_is_400(headers: str) -> None:
    async with setup() as (port, backend, _, _):
        data = f"POST / HTTP/1.1\r\nHost: a\r\n{headers}\r\nabcd"
        await refused(port, data.encode(), backend, 400, "bad_content_length")


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nabc\r\n0\r\n\r\n",
        b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        b'3;a="\x01\r\nabc\r\n0\r\n\r\n',
    ],
)
async def test_rule_04_bad_chunk_size_or_extension_is_400_and_closed(body: bytes) -> None:
    async with setup() as (port, backend, _, _):
        head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        raw = await exchange(port, head + body)
        r = parse_one(raw)
        assert (r.status, r.header("x-pilotfish-error"), r.header("connection")) == (
            400,
            "bad_chunk",
            "close",
        )
        # The head may have gone upstream already; no body and no answer from it did.
        assert all(req.body == b"" for req in backend.requests)


async def test_rule_04_trailers_are_parsed_bounded_and_not_forwarded() -> None:
    async with setup() as (port, backend, _, _):
        head = (
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        ok = await request(port, head + b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n")
        assert (ok.status, ok.body) == (200, b"abc")
        assert backend.requests[0].body == b"abc"
        big = b"X-T: " + b"a" * 9000 + b"\r\n"
        raw = await exchange(port, head + b"3\r\nabc\r\n0\r\n" + big + b"\r\n")
        r = parse_one(raw)
        assert (r.status, r.header("x-pilotfish-error")) == (431, "trailers_too_large")


@pytest.mark.parametrize(
    "header",
    [
        "X-Name : v\r\n",
        "X-Fold: a\r\n  b\r\n",
        "X-Cr: a\rb\r\n",
        "X-Nul: a\x00b\r\n",
    ],
)
async def test_rule_05_space_before_colon_folding_bare_cr_and_nul_are_400(header: str) -> None:
    async with setup() as (port, backend, _, _):
        data = f"GET / HTTP/1.1\r\nHost: a\r\n{header}\r\n"
        await refused(port, data.encode(), backend, 400, "bad_header")


async def test_rule_06_http11_without_host_or_with_two_is_400() -> None:
    async with setup() as (port, backend, _, _):
        await refused(port, b"GET / HTTP/1.1\r\n\r\n", backend, 400, "missing_host")
        two = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
        await refused(port, two, backend, 400, "duplicate_host")
        ok = await request(port, b"GET / HTTP/1.0\r\n\r\n")
        assert ok.status == 200


async def test_rule_07_request_line_and_header_limits_give_414_and_431() -> None:
    async with setup() as (port, backend, _, _):
        long_url = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
        await refused(port, long_url, backend, 414, "uri_too_long")
        big = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Big: " + b"b" * 70000 + b"\r\n\r\n"
        await refused(port, big, backend, 431, "headers_too_large")
        many = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101))
        await refused(port, many + b"\r\n", backend, 431, "too_many_headers")
        # A head that never ends is refused once it passes the limit, not buffered.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")
        for _ in range(20):
            writer.write(b"X-Slow: " + b"s" * 4000 + b"\r\n")
        raw = await asyncio.wait_for(reader.read(-1), 5)
        writer.close()
        assert parse_one(raw).status == 431


async def test_rule_08_upstream_gets_a_reserialized_request_not_the_raw_bytes() -> None:
    async with setup() as (port, backend, _, _):
        data = (
            b"GET /x?y=1 HTTP/1.1\r\nhOsT:   svc  \r\nX-Custom:\tvalue \r\n"
            b"X-Request-Id: rid\r\nConnection: close\r\n\r\n"
        )
        assert (await request(port, data)).status == 200
        assert backend.requests[0].raw_head == (
            b"GET /x?y=1 HTTP/1.1\r\nhost: svc\r\nx-custom: value\r\nx-request-id: rid\r\n"
            b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n"
        )


# 9-14: connection management


async def test_rule_09_hop_by_hop_headers_are_removed_both_ways() -> None:
    async def hoppy(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(
            response(
                200,
                b"ok",
                [
                    ("Connection", "X-Resp-Hop"),
                    ("X-Resp-Hop", "1"),
                    ("Keep-Alive", "timeout=5"),
                    ("Proxy-Connection", "keep-alive"),
                    ("Trailer", "X-T"),
                    ("Upgrade", "foo"),
                    ("X-End", "1"),
                ],
            )
        )
        return True

    async with setup(hoppy) as (port, backend, _, _):
        data = (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Hop, close\r\nX-Hop: 1\r\n"
            b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n"
            b"Trailer: X-T\r\nX-End: 1\r\n\r\n"
        )
        r = await request(port, data)
        names = {n.lower() for n, _ in backend.requests[0].headers}
        assert names == {"host", "x-end", "x-forwarded-for", "x-forwarded-proto", "x-request-id"}
        assert {n for n, _ in r.headers} == {"x-end", "content-length", "connection"}
        assert r.header("connection") == "close"


async def test_rule_10_keep_alive_by_default_for_11_and_close_for_10() -> None:
    async with setup() as (port, backend, _, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(3):
            writer.write(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"connection" not in head.lower()
            await reader.readexactly(0)
        writer.write(b"GET /last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(-1), 5)
        assert parse_one(rest).header("connection") == "close"
        writer.close()
        assert backend.connections == 1  # upstream connection reused
        # HTTP/1.0: closed after the response unless keep-alive is asked for.
        r10 = await request(port, b"GET / HTTP/1.0\r\n\r\n")
        assert (r10.status, r10.header("connection")) == (200, "close")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"connection: keep-alive" in head
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        assert parse_one(await asyncio.wait_for(reader.read(-1), 5)).status == 200
        writer.close()


async def test_rule_10_upstream_connection_close_is_honoured_after_the_exchange() -> None:
    async def closing(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(response(200, b"x", [("Connection", "close")]))
        return False

    async with setup(closing) as (port, backend, _, manager):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"connection" not in head.lower()
            assert await reader.readexactly(1) == b"x"
        writer.close()
        assert backend.connections == 2
        assert manager.pool.idle_count() == 0


async def test_rule_11_pipelined_requests_are_answered_in_order() -> None:
    async def slow_first(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if req.target == "/1":
            await asyncio.sleep(0.1)
        w.write(response(200, req.target.encode() + req.body))
        return True

    async with setup(slow_first) as (port, _, _, _):
        data = (
            b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
            b"POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
            b"POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"
            b"GET /4 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        out = parse(await exchange(port, data))
        assert [(r.status, r.body) for r in out] == [
            (200, b"/1"),
            (200, b"/2abc"),
            (200, b"/3de"),
            (200, b"/4"),
        ]


async def test_rule_12_response_read_until_close_is_never_reused() -> None:
    async def unframed(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\n\r\nuntil-close")
        return False

    async def framed(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(response(200, b"framed"))
        return True

    async with setup(unframed) as (port, backend, _, manager):
        for _ in range(2):
            r = await request(port, get())
            assert (r.status, r.body, r.header("transfer-encoding")) == (
                200,
                b"until-close",
                "chunked",
            )
        assert backend.connections == 2 and manager.pool.idle_count() == 0
    async with setup(framed) as (port, backend, _, manager):
        for _ in range(3):
            assert (await request(port, get())).body == b"framed"
        assert backend.connections == 1 and manager.pool.idle_count() == 1


async def test_rule_13_idle_connection_closed_by_server_is_not_reused() -> None:
    async def close_after(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(response(200, b"ok"))
        await w.drain()
        return False  # closes without having said Connection: close

    async with setup(close_after) as (port, backend, _, manager):
        assert (await request(port, get())).status == 200
        for _ in range(50):
            if manager.pool.idle_count() == 0:
                break
            await asyncio.sleep(0.01)
        assert manager.pool.idle_count() == 0
        assert (await request(port, get())).status == 200
        assert backend.connections == 2


async def test_rule_13_idempotent_request_retried_once_on_fresh_connection_after_stale_reuse() -> (
    None
):
    served: list[int] = []

    async def drop_second(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        # Each connection answers its first request and drops the second unanswered,
        # like a server closing an idle connection just as a request arrives.
        conn = id(w)
        served.append(conn)
        if served.count(conn) == 2:
            w.transport.abort()
            return False
        w.write(response(200, req.method.encode()))
        return True

    async with setup(drop_second) as (port, backend, _, _):
        assert (await request(port, get())).status == 200
        r = await request(port, get())
        assert (r.status, r.body) == (200, b"GET")
        assert backend.connections == 2
        # A POST is not idempotent: the same failure is answered with 502.
        post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
        r = await request(port, post)
        assert (r.status, r.header("x-pilotfish-error")) == (502, "upstream_reset_before_headers")


async def test_rule_14_client_disconnect_mid_request_cancels_the_upstream_request() -> None:
    lost = asyncio.Event()

    async def wait_body(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        try:
            await r.readexactly(1000)
        except (asyncio.IncompleteReadError, ConnectionError):
            lost.set()
        return False

    async with setup(wait_body, read_body=False) as (port, backend, table, manager):
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        await writer.drain()
        while not backend.requests:
            await asyncio.sleep(0.01)
        writer.transport.abort()
        await asyncio.wait_for(lost.wait(), 5)
        balancer = table.clusters["backend"].balancer
        assert balancer.outstanding == 0
        assert balancer.finished_calls[-1][1] == 499
        assert manager.pool.idle_count() == 0


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n",
    ],
)
async def test_rule_14_upstream_disconnect_mid_response_is_not_passed_off_as_complete(
    partial: bytes,
) -> None:
    async def cut(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(partial)
        await w.drain()
        w.transport.abort()
        return False

    async with setup(cut) as (port, _, _, _):
        raw = await exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        r = parse_one(raw.replace(b"<reset>", b""))
        assert r.status == 200 and r.body == b"0123456789" and not r.complete


# 15-18: bodies


async def test_rule_15_request_body_streams_with_backpressure() -> None:
    size = 16 * 1024 * 1024
    go = asyncio.Event()
    got = {}

    async def slow_reader(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        await go.wait()
        body = await r.readexactly(size)
        got["ok"] = body == b"z" * size
        w.write(response(200, b"done"))
        return True

    async with setup(slow_reader, read_body=False, rcvbuf=65536) as (port, _, _, manager):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)

        async def send() -> None:
            block = b"z" * 65536
            for _ in range(size // len(block)):
                writer.write(block)
                await writer.drain()

        sender = asyncio.create_task(send())
        # The backend reads nothing: the proxy must stop reading the client.
        for _ in range(300):
            busy = list(manager.pool._busy)
            ex = busy[0].sink if busy else None
            if isinstance(ex, Exchange) and ex.conn.paused & _P_UPSTREAM:
                break
            await asyncio.sleep(0.01)
        assert isinstance(ex, Exchange) and ex.conn.paused & _P_UPSTREAM
        assert ex.conn.transport is not None and not ex.conn.transport.is_reading()
        transport = busy[0].transport
        assert transport is not None and transport.get_write_buffer_size() <= 512 * 1024
        go.set()
        await sender
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and await reader.readexactly(4) == b"done"
        writer.close()
        assert got == {"ok": True}


async def test_rule_15_response_body_streams_with_backpressure() -> None:
    size = 32 * 1024 * 1024
    backend_writer: list[asyncio.StreamWriter] = []

    async def big(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        backend_writer.append(w)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        w.write(b"y" * size)
        return True

    async with setup(big) as (port, _, _, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**16)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        while not backend_writer:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        # The client reads nothing: the proxy must have stopped reading the backend.
        assert backend_writer[0].transport.get_write_buffer_size() > 0
        total = 0
        while total < size:
            total += len(await reader.read(1 << 20))
        assert total == size
        writer.close()


async def test_rule_16_expect_100_continue_is_answered_before_the_body_is_read() -> None:
    async with setup() as (port, backend, _, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and await reader.readexactly(5) == b"hello"
        writer.close()
        assert backend.requests[0].header("expect") is None


async def test_rule_16_expect_100_continue_refused_request_gets_final_status_and_close() -> None:
    async with setup(routes=[("/only", forward())]) as (port, _backend, _, _):
        data = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        r = parse_one(await exchange(port, data))
        assert (r.status, r.header("connection")) == (404, "close")


async def test_rule_17_head_204_304_and_1xx_responses_have_no_body() -> None:
    async def lying(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if req.method == "HEAD":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        elif req.target == "/304":
            w.write(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n")
        elif req.target == "/204":
            w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + response(200, b"after"))
        return True

    async with setup(lying) as (port, backend, _, _manager):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"content-length: 10" in head
        writer.write(b"GET /304 HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 304")
        writer.write(b"GET /204 HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 204") and b"transfer-encoding" not in head
        writer.write(b"GET /1xx HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        rest = await asyncio.wait_for(reader.read(-1), 5)
        assert parse_one(rest).body == b"after"
        writer.close()
        assert backend.connections == 1


async def test_rule_18_content_length_kept_and_until_close_rechunked_or_closed() -> None:
    async def unframed(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if req.target == "/cl":
            w.write(response(200, b"sized"))
            return True
        w.write(b"HTTP/1.1 200 OK\r\n\r\nstreamed")
        return False

    async with setup(unframed) as (port, _, _, _):
        r = await request(port, get("/cl"))
        assert (r.header("content-length"), r.header("transfer-encoding"), r.body) == (
            "5",
            None,
            b"sized",
        )
        raw = await exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert raw.endswith(b"\r\n\r\n8\r\nstreamed\r\n0\r\n\r\n")
        raw10 = await exchange(port, b"GET / HTTP/1.0\r\n\r\n")
        assert raw10.endswith(b"\r\n\r\nstreamed")
        assert b"transfer-encoding" not in raw10 and b"connection: close" in raw10


# 19-25: forwarding semantics


async def test_rule_19_forwarded_for_proto_and_request_id() -> None:
    async with setup() as (port, backend, _, _):
        await request(port, get(extra="X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n"))
        await request(port, get(extra="X-Request-Id: keep-me\r\n"))
        first, second = backend.requests
        assert first.header("x-forwarded-for") == "10.0.0.1, 127.0.0.1"
        assert first.header("x-forwarded-proto") == "http"
        rid = first.header("x-request-id") or ""
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", rid)
        assert second.all("x-request-id") == ["keep-me"]
        assert second.header("x-forwarded-for") == "127.0.0.1"


async def test_rule_20_host_kept_rewritten_and_absolute_form_made_origin_form() -> None:
    routes = [("/rw", forward(host_rewrite="inner.svc")), ("/", forward())]
    async with setup(routes=routes) as (port, backend, table, _):
        await request(port, get("/p", host="Outer.Example:8080"))
        await request(port, get("/rw", host="outer"))
        await request(
            port,
            b"GET http://abs.example:81/a/b?q=1 HTTP/1.1\r\nHost: ignored\r\n"
            b"Connection: close\r\n\r\n",
        )
        hosts = [(r.target, r.header("host")) for r in backend.requests]
        assert hosts == [
            ("/p", "Outer.Example:8080"),
            ("/rw", "inner.svc"),
            ("/a/b?q=1", "abs.example:81"),
        ]
        assert (table.seen[2].host, table.seen[2].path, table.seen[2].query) == (
            "abs.example:81",
            "/a/b",
            "q=1",
        )


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        (b"/public/../admin", b"/admin"),
        (b"/public/%2e%2e/admin", b"/admin"),
        (b"/public/%2E%2E/%61dmin", b"/admin"),
        (b"/a/./b/.", b"/a/b/"),
        (b"/../../x", b"/x"),
        (b"/a%2fb", b"/a%2Fb"),
        (b"/a//b", b"/a//b"),
        (b"/%7euser", b"/~user"),
    ],
)
def test_rule_21_normalize_path_like_envoy(raw: bytes, normalized: bytes) -> None:
    assert normalize_path(raw) == normalized


def test_rule_21_bad_escape_is_refused_and_slashes_merged_when_configured() -> None:
    assert normalize_path(b"/a%zz") is None
    assert normalize_path(b"/a%2") is None
    assert normalize_path(b"/a//b///c", merge_slashes=True) == b"/a/b/c"


async def test_rule_21_crafted_path_cannot_escape_a_prefix_route() -> None:
    from agents.actions import DirectResponse

    routes = [("/admin", DirectResponse(403, b"no")), ("/public", forward())]
    async with setup(routes=routes) as (port, backend, _table, _):
        for path in ("/public/../admin", "/public/%2e%2e/admin/x", "/public/./../%61dmin"):
            r = await request(port, get(path))
            assert (r.status, r.body) == (403, b"no")
        r = await request(port, get("/public/./a/../b"))
        assert r.status == 200 and backend.requests[-1].target == "/public/b"
        await refused(port, get("/public/%zz"), Backend(), 400, "bad_path")


async def test_rule_22_proxy_errors_name_their_cause_and_are_counted() -> None:
    async def garbage(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"NOT HTTP AT ALL\r\n\r\n")
        return False

    bad = await Backend(garbage).start()
    closed = await Backend().start()
    closed_port = closed.port
    await closed.close()
    await asyncio.sleep(0.01)
    table = FakeTable(
        [
            ("/unhealthy", forward("sick")),
            ("/refused", forward("gone")),
            ("/garbage", forward("bad")),
            ("/nocluster", forward("missing")),
        ],
        [
            cluster("sick", 1, healthy=False),
            cluster("gone", closed_port),
            cluster("bad", bad.port),
        ],
    )
    async with proxy(table) as (manager, port):
        expected = {
            "/unhealthy": (503, "no_healthy_upstream"),
            "/refused": (502, "upstream_connect_failure"),
            "/garbage": (502, "upstream_bad_response"),
            "/nocluster": (503, "cluster_not_found"),
            "/unrouted": (404, "route_not_found"),
        }
        for path, (status, reason) in expected.items():
            r = await request(port, get(path))
            assert (r.status, r.header("x-pilotfish-error"), r.body) == (
                status,
                reason,
                f"{status} {reason}\n".encode(),
            )
        assert {reason: manager.stats.errors[reason] for _, reason in expected.values()} == {
            reason: 1 for _, reason in expected.values()
        }
        assert manager.stats.responses[("sick", 503)] == 1
        assert manager.stats.upstream_connect_errors["gone"] == 1
    await bad.close()


async def test_rule_23_route_timeout_gives_504() -> None:
    async def never(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(10)
        return False

    async with setup(never, routes=[("/", forward(timeout=0.2))]) as (port, _, table, manager):
        r = await request(port, get())
        assert (r.status, r.header("x-pilotfish-error")) == (504, "upstream_timeout")
        assert table.clusters["backend"].balancer.outstanding == 0
        assert manager.pool.idle_count() == 0


async def test_rule_23_per_try_timeout_retries_then_succeeds() -> None:
    calls: list[str] = []

    async def first_hangs(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        calls.append(req.target)
        if len(calls) == 1:
            await asyncio.sleep(10)
        w.write(response(200, b"second"))
        return True

    retry = RetryPolicy(frozenset({"5xx"}), num_retries=1, per_try_timeout=0.2, base_interval=0.01)
    async with setup(first_hangs, routes=[("/", forward(retry=retry))]) as (port, _, _table, m):
        r = await request(port, get())
        assert (r.status, r.body) == (200, b"second")
        assert len(calls) == 2 and m.stats.retries["backend"] == 1


async def test_rule_23_stream_idle_timeout_resets_a_silent_response() -> None:
    async def stall(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await asyncio.sleep(10)
        return False

    routes = [("/", forward(idle_timeout=0.2))]
    async with setup(stall, routes=routes) as (port, _, _, manager):
        raw = await exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        r = parse_one(raw.replace(b"<reset>", b""))
        assert (r.body, r.complete) == (b"abc", False)
        assert manager.stats.errors["stream_idle_timeout"] == 1


async def test_rule_23_idle_downstream_and_upstream_connections_are_closed() -> None:
    settings = ProxySettings(idle_timeout=0.2)
    async with setup(settings=settings) as (port, _backend, _, manager):
        manager.pool.idle_timeout = 0.2
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        assert manager.pool.idle_count() == 1
        assert await asyncio.wait_for(reader.read(-1), 5) == b""  # closed by the proxy
        writer.close()
        for _ in range(100):
            if manager.pool.idle_count() == 0:
                break
            await asyncio.sleep(0.02)
        assert manager.pool.idle_count() == 0


async def test_rule_24_retries_replay_only_bounded_bodies() -> None:
    async def unavailable(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(response(503, b"busy"))
        return True

    retry = RetryPolicy(frozenset({"5xx"}), num_retries=2, base_interval=0.001)
    settings = ProxySettings(retry_buffer=1024)
    async with setup(unavailable, routes=[("/", forward(retry=retry))], settings=settings) as (
        port,
        backend,
        _,
        _m,
    ):
        small = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
        r = await request(port, small + b"0123456789")
        assert r.status == 503 and len(backend.requests) == 3
        assert {req.body for req in backend.requests} == {b"0123456789"}
        backend.requests.clear()
        big = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n"
        r = await request(port, big + b"b" * 2000)
        assert r.status == 503 and len(backend.requests) == 1


async def test_rule_24_no_retry_without_a_route_policy() -> None:
    async def unavailable(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(response(503, b"busy"))
        return True

    async with setup(unavailable) as (port, backend, _, _):
        post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
        assert (await request(port, post)).status == 503
        assert len(backend.requests) == 1


async def test_rule_25_websocket_upgrade_tunnelled_when_allowed_else_refused() -> None:
    async def ws(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        while data := await r.read(1024):
            w.write(data.upper())
        return False

    routes = [("/ws", forward(upgrades=frozenset({"websocket"}))), ("/", forward())]
    async with setup(ws, routes=routes) as (port, backend, _, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nearly"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101") and b"upgrade: websocket" in head
        assert await asyncio.wait_for(reader.readexactly(5), 5) == b"EARLY"
        writer.write(b"more bytes")
        assert await asyncio.wait_for(reader.readexactly(10), 5) == b"MORE BYTES"
        writer.close()
        up = backend.requests[0]
        assert (up.header("upgrade"), up.header("connection")) == ("websocket", "upgrade")
        backend.requests.clear()
        data = (
            b"GET /plain HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        )
        await refused(port, data, backend, 403, "upgrade_not_allowed")


async def test_rule_25_h2c_upgrade_offer_is_ignored_and_served_as_http11() -> None:
    async with setup() as (port, backend, _, _):
        data = (
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        )
        out = parse(await exchange(port, data))
        assert [r.status for r in out] == [200, 200]
        assert backend.requests[0].header("upgrade") is None
        assert backend.requests[0].header("http2-settings") is None


def test_pool_defaults_are_bounded() -> None:
    pool = UpstreamPool()
    assert (pool.idle_timeout, pool.max_idle) == (60.0, 128)


def test_weighted_cluster_without_precomputed_weights_is_still_picked() -> None:
    from agents.http_proxy import pick_cluster

    fw = Forward(clusters=(WeightedCluster("a", 1), WeightedCluster("b", 3)))
    assert pick_cluster(fw, lambda: 0.0).name == "a"
    assert pick_cluster(fw, lambda: 0.26).name == "b"


async def test_rule_23_idle_timeout_still_applies_after_a_request_with_a_route_timeout() -> None:
    settings = ProxySettings(idle_timeout=0.3)
    routes = [("/", forward(timeout=0.05))]
    async with setup(settings=settings, routes=routes) as (port, _, _, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        # The connection timer fired for the route deadline mid-way; idle still closes.
        assert await asyncio.wait_for(reader.read(-1), 5) == b""
        writer.close()


async def test_rule_22_refused_request_with_unread_body_still_delivers_the_answer() -> None:
    async with setup() as (port, backend, _, _):
        data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
        raw = await exchange(port, data + b"x" * 200_000)
        r = parse_one(raw.replace(b"<reset>", b""))
        assert (r.status, r.header("x-pilotfish-error")) == (400, "bad_content_length")
        assert backend.requests == []


async def test_rule_14_client_disconnect_mid_response_closes_the_upstream_connection() -> None:
    upstream_gone = asyncio.Event()

    async def endless(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            while True:
                w.write(b"10000\r\n" + b"e" * 0x10000 + b"\r\n")
                await w.drain()
        except ConnectionError:
            upstream_gone.set()
        return False

    async with setup(endless) as (port, _, table, manager):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await reader.readexactly(200_000)
        writer.transport.abort()
        await asyncio.wait_for(upstream_gone.wait(), 5)
        balancer = table.clusters["backend"].balancer
        assert balancer.outstanding == 0 and balancer.finished_calls == [
            (balancer.endpoints[0], 499)
        ]
        assert manager.pool.idle_count() == 0 and not manager.pool._busy


async def test_rule_25_h2c_offer_with_a_body_keeps_the_body() -> None:
    async with setup() as (port, backend, _, _):
        head = (
            b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 5\r\n\r\n"
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + b"he")
        await asyncio.sleep(0.05)
        writer.write(b"llo" + b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        out = parse(await asyncio.wait_for(reader.read(-1), 5))
        writer.close()
        assert [(r.status, r.body) for r in out] == [(200, b"hello"), (200, b"")]
        assert [r.body for r in backend.requests] == [b"hello", b""]
        backend.requests.clear()
        chunked = head.replace(b"Content-Length: 5", b"Transfer-Encoding: chunked")
        await refused(port, chunked + b"0\r\n\r\n", backend, 501, "h2c_upgrade_with_chunked_body")
