"""Real clients through the proxy: http.client, an asyncio client and curl; big chunked uploads."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import shutil
from collections.abc import Iterator

import pytest

from tests.agents.http_fakes import Req, response, setup

SIZE = 4 * 1024 * 1024


async def digest(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
    body = hashlib.sha256(req.body).hexdigest().encode() + b" %d" % len(req.body)
    w.write(response(200, body, [("X-Method", req.method)]))
    return True


def blocks(n: int, size: int = 65536) -> Iterator[bytes]:
    for i in range(n // size):
        yield bytes([i % 251]) * size


def expected(n: int) -> bytes:
    return hashlib.sha256(b"".join(blocks(n))).hexdigest().encode() + b" %d" % n


def _http_client_session(port: int) -> list[tuple[int, bytes]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    conn.request("GET", "/a", headers={"Host": "svc"})
    r = conn.getresponse()
    out.append((r.status, r.read()))
    conn.request("POST", "/upload", body=blocks(SIZE), encode_chunked=True)
    r = conn.getresponse()
    out.append((r.status, r.read()))
    conn.request("PUT", "/sized", body=b"".join(blocks(SIZE)))
    r = conn.getresponse()
    out.append((r.status, r.read()))
    conn.close()
    return out


async def test_http_client_keep_alive_and_chunked_upload() -> None:
    async with setup(digest) as (port, backend, _, _):
        out = await asyncio.to_thread(_http_client_session, port)
        assert out == [
            (200, expected(0)),
            (200, expected(SIZE)),
            (200, expected(SIZE)),
        ]
        assert backend.connections == 1
        assert backend.requests[1].header("transfer-encoding") == "chunked"
        assert backend.requests[2].header("content-length") == str(SIZE)


async def test_asyncio_client_pipelines_uploads_and_downloads() -> None:
    async def download(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if req.target == "/big":
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for block in blocks(SIZE):
                w.write(b"%x\r\n%b\r\n" % (len(block), block))
                await w.drain()
            w.write(b"0\r\n\r\n")
            return True
        return await digest(req, r, w)

    async with setup(download) as (port, _, _, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = b"".join(blocks(SIZE))
        writer.write(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % SIZE)
        writer.write(body)
        writer.write(b"GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
        first, _, rest = raw.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 200") and rest.startswith(expected(SIZE))
        second_head = rest[len(expected(SIZE)) :]
        assert second_head.startswith(b"HTTP/1.1 200")
        assert b"transfer-encoding: chunked" in second_head.split(b"\r\n\r\n", 1)[0]
        assert second_head.endswith(b"0\r\n\r\n")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
async def test_curl_chunked_upload_with_expect_100_continue(tmp_path: object) -> None:
    async with setup(digest) as (port, backend, _, _):
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "@-",
            f"http://127.0.0.1:{port}/curl",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate(b"".join(blocks(SIZE)))
        assert (proc.returncode, out) == (0, expected(SIZE))
        assert backend.requests[0].header("expect") is None


async def _uvloop_scenario() -> list[object]:
    from agents.actions import Forward, WeightedCluster
    from agents.listeners import ListenerManager
    from tests.agents.http_fakes import FakeListener, FakeTable, cluster, forward, parse

    out: list[object] = []
    async with setup(digest) as (port, _, _, _):
        body = b"".join(blocks(1 << 20))
        data = (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%b"
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % (len(body), body)
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        raw = await asyncio.wait_for(reader.read(-1), 10)
        writer.close()
        out.append([(r.status, r.body) for r in parse(raw)])
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    echo_port = echo.sockets[0].getsockname()[1]
    tcp = FakeListener("t", kind="tcp", route_config=None, tcp=Forward((WeightedCluster("e"),)))
    manager = ListenerManager()
    await manager.apply(FakeTable([("/", forward())], [cluster("e", echo_port)], (tcp,)))
    reader, writer = await asyncio.open_connection("127.0.0.1", manager.port("t"))
    writer.write(b"ping")
    out.append(await asyncio.wait_for(reader.readexactly(4), 5))
    writer.close()
    await manager.close()
    echo.close()
    return out


async def _echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    while data := await r.read(1024):
        w.write(data)
    w.close()


async def test_the_proxy_runs_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    out = await asyncio.to_thread(uvloop.run, _uvloop_scenario())
    assert out == [[(200, expected(1 << 20)), (200, expected(0))], b"ping"]
