"""Sans-IO HTTP/1.1 messages for the proxy: parse strictly, re-serialize, never pass raw bytes on.

:class:`RequestReader` and :class:`ResponseReader` wrap httptools (llhttp, in
its strict mode) and add what llhttp leaves to its user: size limits on the
request line, the header block and trailers; the ``Transfer-Encoding`` and
``Host`` rules of RFC 9112; the framing of responses to HEAD. Both push
events to a sink (the proxy's protocol objects) as bytes arrive, so bodies
stream through in the pieces the socket delivered them and nothing is
buffered whole.

Every message forwarded is serialized again from its parsed parts by the
functions at the bottom (rule 8 of the proxy rules): header names are
lower-cased, hop-by-hop headers (:func:`strip_hop_by_hop`) are dropped, and
the framing is chosen by the proxy, not copied. Paths are normalized the way
Envoy does with ``normalize_path`` (:func:`normalize_path`) before routing,
and the normalized path is what the upstream receives.

Errors the client caused raise :class:`HttpError` with the status to answer
and a short reason code, which the proxy puts in ``x-pilotfish-error``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import httptools
from httptools.parser.errors import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserInvalidMethodError,
    HttpParserInvalidURLError,
    HttpParserUpgrade,
)


@dataclass(frozen=True, slots=True)
class Limits:
    max_request_line: int = 8 * 1024
    max_header_bytes: int = 60 * 1024
    max_headers: int = 100
    max_trailer_bytes: int = 8 * 1024


DEFAULT_LIMITS = Limits()


class HttpError(Exception):
    """A message the proxy refuses: answer ``status`` with ``reason`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


Headers = list[tuple[bytes, bytes]]
"""Lower-case names and values in the order received."""

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_KNOWN_CODINGS = frozenset({b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress", b"br"})
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(slots=True)
class RequestHead:
    method: bytes
    target: bytes
    """As received (origin-form, absolute-form, ``*`` or authority-form)."""
    version: bytes
    """``1.0`` or ``1.1``."""
    headers: Headers
    host: bytes
    """From the absolute-form target when there is one, else the Host header."""
    path: bytes
    """Origin-form path without the query, before normalization."""
    query: bytes
    keep_alive: bool
    chunked: bool
    content_length: int | None
    expect_continue: bool
    upgrade: bytes | None
    """The lower-case Upgrade token of an upgrade request, else None."""

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


class RequestSink(Protocol):
    def on_request_head(self, head: RequestHead) -> None: ...
    def on_request_body(self, data: bytes) -> None: ...
    def on_request_end(self) -> None: ...


class RequestReader:
    """Feeds bytes to llhttp and emits checked requests to ``sink``, one after another.

    :meth:`feed` returns None, or the offset of bytes after an upgrade
    request (they belong to the tunnel, not to HTTP); it raises
    :class:`HttpError` for a request that must be refused.
    """

    __slots__ = (
        "_chunked",
        "_cl",
        "_count",
        "_expect",
        "_head_bytes",
        "_header_total",
        "_headers",
        "_host_count",
        "_in_head",
        "_limits",
        "_parser",
        "_sink",
        "_te_count",
        "_trailer_bytes",
        "_url",
    )

    def __init__(self, sink: RequestSink, limits: Limits = DEFAULT_LIMITS) -> None:
        self._sink = sink
        self._limits = limits
        self._parser = httptools.HttpRequestParser(self)
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: Headers = []
        self._count = 0
        self._head_bytes = 0
        self._header_total = 0
        self._host_count = 0
        self._te_count = 0
        self._cl: int | None = None
        self._chunked = False
        self._expect = False
        self._in_head = True
        self._trailer_bytes = 0

    def feed(self, data: bytes) -> int | None:
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as up:
            return int(up.args[0])
        except HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, HttpError):
                raise cause from None
            raise HttpError(400, "bad_request") from e
        except HttpParserInvalidMethodError as e:
            raise HttpError(400, "bad_method") from e
        except HttpParserInvalidURLError as e:
            raise HttpError(400, "bad_request_target") from e
        except HttpParserError as e:
            raise HttpError(_parser_status(str(e)), _parser_reason(str(e))) from e
        if self._in_head and self._head_bytes > self._limits.max_header_bytes:
            raise HttpError(431, "headers_too_large")
        return None

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._limits.max_request_line:
            raise HttpError(414, "uri_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        raw = value
        if value[-1:] in (b" ", b"\t"):
            value = value.rstrip(b" \t")
        if not self._in_head:
            self._trailer_bytes += len(name) + len(value) + 4
            if self._trailer_bytes > self._limits.max_trailer_bytes:
                raise HttpError(431, "trailers_too_large")
            return
        self._count += 1
        if self._count > self._limits.max_headers:
            raise HttpError(431, "too_many_headers")
        self._header_total += len(name) + len(value) + 4
        if self._header_total > self._limits.max_header_bytes:
            raise HttpError(431, "headers_too_large")
        name = name.lower()
        if name == b"transfer-encoding":
            self._te_count += 1
            if raw != b"chunked" or self._te_count > 1:
                codings = [c.strip().lower() for c in value.split(b",")]
                if self._te_count == 1 and all(c in _KNOWN_CODINGS for c in codings):
                    raise HttpError(501, "unsupported_transfer_encoding")
                raise HttpError(400, "bad_transfer_encoding")
            self._chunked = True
        elif name == b"content-length":
            if self._cl is not None or not value.isdigit() or len(value) > 18:
                raise HttpError(400, "bad_content_length")
            self._cl = int(value)
        elif name == b"host":
            self._host_count += 1
            if self._host_count > 1:
                raise HttpError(400, "duplicate_host")
        elif name == b"expect" and value.lower() == b"100-continue":
            self._expect = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if self._chunked and self._cl is not None:
            raise HttpError(400, "content_length_with_transfer_encoding")
        parser = self._parser
        version = parser.get_http_version().encode()
        method = parser.get_method()
        target = self._url
        host = b""
        for name, value in self._headers:
            if name == b"host":
                host = value
                break
        if version == b"1.1" and self._host_count == 0:
            raise HttpError(400, "missing_host")
        if target[:1] == b"/":
            path, _, query = target.partition(b"?")
            path = path.partition(b"#")[0]
        elif method == b"CONNECT":
            raise HttpError(403, "connect_not_supported")
        elif target == b"*":
            if method != b"OPTIONS":
                raise HttpError(400, "bad_request_target")
            path, query = b"*", b""
        else:
            try:
                url = httptools.parse_url(target)
            except HttpParserInvalidURLError as e:
                raise HttpError(400, "bad_request_target") from e
            if url.schema.lower() not in (b"http", b"https") or not url.host:
                raise HttpError(400, "bad_request_target")
            host = url.host + (b":%d" % url.port if url.port else b"")
            path = url.path or b"/"
            query = url.query or b""
        upgrade: bytes | None = None
        if parser.should_upgrade():
            for name, value in self._headers:
                if name == b"upgrade":
                    upgrade = value.strip().lower()
                    break
        self._sink.on_request_head(
            RequestHead(
                method=method,
                target=target,
                version=version,
                headers=self._headers,
                host=host,
                path=path,
                query=query,
                keep_alive=parser.should_keep_alive(),
                chunked=self._chunked,
                content_length=self._cl,
                expect_continue=self._expect,
                upgrade=upgrade,
            )
        )

    def on_body(self, body: bytes) -> None:
        self._sink.on_request_body(body)

    def on_message_complete(self) -> None:
        self._sink.on_request_end()


def _parser_status(message: str) -> int:
    if "Transfer-Encoding" in message and "invalid" in message.lower():
        return 501 if "Request has invalid" in message else 400
    return 400


def _parser_reason(message: str) -> str:
    m = message.lower()
    if "content-length" in m:
        return "bad_content_length"
    if "transfer-encoding" in m:
        return "bad_transfer_encoding"
    if "chunk" in m:
        return "bad_chunk"
    if "header" in m:
        return "bad_header"
    return "bad_request"


# Responses


class ResponseSink(Protocol):
    def on_response_head(self, status: int, reason: bytes, headers: Headers, framed: bool) -> None:
        """``framed``: the body has a length or is chunked (or there is none)."""

    def on_response_body(self, data: bytes) -> None: ...
    def on_response_end(self, reusable: bool) -> None: ...


class _HeadDone(Exception):
    pass


class ResponseReader:
    """Parses one upstream connection's responses; 1xx other than 101 are skipped.

    ``expect_no_body()`` before a response to HEAD: llhttp cannot be told, so
    the parser is stopped after the head and made anew; the connection is
    reusable only if nothing followed the head.
    """

    __slots__ = (
        "_count",
        "_framed",
        "_head_bytes",
        "_headers",
        "_in_head",
        "_limits",
        "_no_body",
        "_parser",
        "_reason",
        "_sink",
        "_tail",
        "_upgraded",
        "status",
    )

    def __init__(self, sink: ResponseSink, limits: Limits = DEFAULT_LIMITS) -> None:
        self._sink = sink
        self._limits = limits
        self._parser = httptools.HttpResponseParser(self)
        self._no_body = False
        self._tail = b""
        self._upgraded = False
        self._begin()

    def _begin(self) -> None:
        self._reason = b""
        self._headers: Headers = []
        self._count = 0
        self._head_bytes = 0
        self._in_head = True
        self._framed = False
        self.status = 0

    def expect_no_body(self) -> None:
        self._no_body = True

    @property
    def in_head(self) -> bool:
        return self._in_head

    def feed(self, data: bytes) -> int | None:
        """Returns the offset of tunnel bytes after a 101, else None. Raises HttpError (502)."""
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except HttpParserUpgrade as up:
            return int(up.args[0])
        except HttpParserCallbackError as e:
            if isinstance(e.__context__, _HeadDone):
                buf = self._tail + data
                end = buf.find(b"\r\n\r\n")
                self._parser = httptools.HttpResponseParser(self)
                self._no_body = False
                self._sink.on_response_end(end >= 0 and end + 4 == len(buf))
                return None
            if isinstance(e.__context__, HttpError):
                raise e.__context__ from None
            raise HttpError(502, "upstream_bad_response") from e
        except HttpParserError as e:
            raise HttpError(502, "upstream_bad_response") from e
        if self._no_body:
            self._tail = data[-3:]
        if self._in_head and self._head_bytes > self._limits.max_header_bytes:
            raise HttpError(502, "upstream_headers_too_large")
        return None

    def on_message_begin(self) -> None:
        self._begin()

    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return
        self._count += 1
        if self._count > self._limits.max_headers:
            raise HttpError(502, "upstream_too_many_headers")
        name = name.lower()
        if value[-1:] in (b" ", b"\t"):
            value = value.rstrip(b" \t")
        if name == b"transfer-encoding" or name == b"content-length":
            self._framed = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        status = self._parser.get_status_code()
        self.status = status
        if 100 <= status < 200 and status != 101:
            return
        no_body = self._no_body or status in (204, 304)
        self._sink.on_response_head(status, self._reason, self._headers, self._framed or no_body)
        if self._no_body:
            raise _HeadDone

    def on_body(self, body: bytes) -> None:
        self._sink.on_response_body(body)

    def on_message_complete(self) -> None:
        status = self.status
        if 100 <= status < 200 and status != 101:
            return
        self._sink.on_response_end(self._parser.should_keep_alive())


# Serialization


def strip_hop_by_hop(headers: Headers) -> Headers:
    """The end-to-end headers: drops those of HOP_BY_HOP and any named in Connection."""
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            for token in value.split(b","):
                named.add(token.strip().lower())
    if named:
        return [(n, v) for n, v in headers if n not in HOP_BY_HOP and n not in named]
    return [(n, v) for n, v in headers if n not in HOP_BY_HOP]


def connection_tokens(headers: Headers) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            for token in value.split(b","):
                tokens.add(token.strip().lower())
    return tokens


def serialize_head(start_line: bytes, headers: Headers) -> bytes:
    parts = [start_line]
    for name, value in headers:
        parts.append(name + b": " + value)
    parts.append(b"\r\n")
    return b"\r\n".join(parts)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    408: b"Request Timeout",
    413: b"Payload Too Large",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


def reason_phrase(status: int) -> bytes:
    return _REASONS.get(status, b"Status")


def error_response(status: int, reason: str, close: bool, head_only: bool = False) -> bytes:
    """A proxy-generated error: status, ``x-pilotfish-error`` and a text body naming the cause."""
    body = f"{status} {reason}\n".encode()
    headers: Headers = [
        (b"content-type", b"text/plain"),
        (b"content-length", b"%d" % len(body)),
        (b"x-pilotfish-error", reason.encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    head = serialize_head(b"HTTP/1.1 %d %b" % (status, reason_phrase(status)), headers)
    return head if head_only else head + body


# Paths

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def normalize_path(path: bytes, merge_slashes: bool = False) -> bytes | None:
    """RFC 3986 normalization as Envoy's ``normalize_path``; None for a path to refuse.

    Percent-encoded unreserved characters are decoded, other escapes upper-cased,
    ``.`` and ``..`` segments removed (never above the root), and with
    ``merge_slashes`` runs of ``/`` collapsed. A bad escape is refused.
    """
    if path == b"*":
        return path
    if b"%" in path:
        out = bytearray()
        i, n = 0, len(path)
        while i < n:
            c = path[i]
            if c == 0x25:
                if i + 2 >= n:
                    return None
                h1, h2 = path[i + 1], path[i + 2]
                if h1 not in _HEX or h2 not in _HEX:
                    return None
                value = int(path[i + 1 : i + 3], 16)
                if value in _UNRESERVED:
                    out.append(value)
                else:
                    out += b"%" + path[i + 1 : i + 3].upper()
                i += 3
            else:
                out.append(c)
                i += 1
        path = bytes(out)
    if merge_slashes and b"//" in path:
        path = re.sub(rb"/{2,}", b"/", path)
    if b"/." not in path:
        return path
    segments = path.split(b"/")
    stack: list[bytes] = []
    for seg in segments[1:]:
        if seg == b".":
            continue
        if seg == b"..":
            if stack:
                stack.pop()
            continue
        stack.append(seg)
    if segments[-1] in (b".", b".."):
        stack.append(b"")
    return b"/" + b"/".join(stack)
