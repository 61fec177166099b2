"""A live agent on the bookinfo example routes by every match kind and action the translator emits.

The control plane runs in-process on the bookinfo example (its ports moved to free ones), plus a
VirtualService on productpage exercising what bookinfo itself does not; every backend answers with
its name and echoes what it received.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agents.http_proxy import shadow_host
from tests.agents.live_support import (
    BOOKINFO_WORKLOADS,
    Backend,
    Live,
    backends,
    bookinfo_config,
    free_port,
    live_agent,
)

PRODUCTPAGE_ROUTES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: productpage
  namespace: bookinfo
spec:
  hosts:
  - productpage
  http:
  - name: exact
    match:
    - uri: {exact: /login}
    route:
    - destination: {host: reviews, subset: v1}
  - name: regex
    match:
    - uri: {regex: "/items/[0-9]+"}
    route:
    - destination: {host: reviews, subset: v2}
  - name: query
    match:
    - queryParams:
        debug: {exact: "1"}
    route:
    - destination: {host: reviews, subset: v3}
  - name: method
    match:
    - method: {exact: POST}
    route:
    - destination: {host: ratings}
  - name: header
    match:
    - headers:
        x-canary: {prefix: "yes"}
    route:
    - destination: {host: details}
  - name: rewrite
    match:
    - uri: {prefix: /api/v1/}
    rewrite:
      uri: /v2/
      authority: details.internal
    route:
    - destination: {host: details}
  - name: redirect
    match:
    - uri: {exact: /old}
    redirect:
      uri: /new
      authority: new.example
      redirectCode: 302
  - name: delay
    match:
    - uri: {prefix: /delayed}
    fault:
      delay:
        fixedDelay: 0.3s
        percentage: {value: 100}
    route:
    - destination: {host: productpage}
  - name: headers
    match:
    - uri: {prefix: /headers}
    headers:
      request:
        set: {x-set: set-value}
        add: {x-add: added}
        remove: [x-remove]
      response:
        set: {x-response: from-route}
        remove: [content-type]
    route:
    - destination: {host: productpage}
  - name: retry
    match:
    - uri: {prefix: /retry}
    retries:
      attempts: 2
      retryOn: 5xx
    route:
    - destination: {host: ratings}
  - name: timeout
    match:
    - uri: {prefix: /timeout}
    timeout: 0.2s
    route:
    - destination: {host: details}
  - name: mirror-rewritten
    match:
    - uri: {prefix: /mirror-rewritten}
    rewrite: {uri: /copied, authority: internal.example}
    mirror: {host: reviews, subset: v3}
    route:
    - destination: {host: productpage}
  - name: mirror
    match:
    - uri: {prefix: /mirror}
    mirror: {host: reviews, subset: v3}
    route:
    - destination: {host: productpage}
  - name: static
    match:
    - uri: {prefix: /static}
    route:
    - destination: {host: details}
  - route:
    - destination: {host: productpage}
"""


def productpage() -> str:
    return "productpage.bookinfo.svc.cluster.local"


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[tuple[Live, dict[str, Backend]]]:
    async with backends(*BOOKINFO_WORKLOADS) as running:
        port = free_port()
        config = bookinfo_config(tmp_path, running, port)
        (config / "productpage-routes.yaml").write_text(PRODUCTPAGE_ROUTES)
        async with live_agent(config, port) as live:
            yield live, running


async def test_every_match_kind_picks_its_destination(
    mesh: tuple[Live, dict[str, Backend]],
) -> None:
    live, _ = mesh
    client = live.client(productpage())
    try:
        cases = [
            ("GET", "/login", {}, "reviews-v1"),
            ("GET", "/login/more", {}, "productpage-v1"),  # exact is exact
            ("GET", "/items/42", {}, "reviews-v2"),
            ("GET", "/items/4x", {}, "productpage-v1"),  # the regex matches the whole path
            ("GET", "/search?debug=1", {}, "reviews-v3"),
            ("GET", "/search?debug=10", {}, "productpage-v1"),
            ("POST", "/anything", {}, "ratings-v1"),
            ("GET", "/anything", {"x-canary": "yes-please"}, "details-v1"),
            ("GET", "/anything", {"x-canary": "no"}, "productpage-v1"),
            ("GET", "/static/app.js", {}, "details-v1"),
            ("GET", "/staticky", {}, "details-v1"),  # an Istio prefix is a string prefix
            ("GET", "/", {}, "productpage-v1"),
        ]
        got = []
        for method, path, headers, _ in cases:
            response = await client.request(path, method, headers)
            assert response.status == 200, (path, response)
            got.append((method, path, headers, response.backend))
            assert response.json()["path"] == path
            assert response.json()["method"] == method
        assert got == cases
        reviews = live.client("reviews.bookinfo.svc.cluster.local")
        jason = await reviews.request("/reviews/1", headers={"end-user": "jason"})
        assert (jason.status, jason.backend) == (200, "reviews-v2")
        await reviews.close()
    finally:
        await client.close()


async def test_weighted_split_stays_within_five_sigma(
    mesh: tuple[Live, dict[str, Backend]],
) -> None:
    live, _ = mesh
    clients = [live.client("reviews.bookinfo.svc.cluster.local") for _ in range(4)]
    counts: dict[str, int] = {}

    async def send(client: object, n: int) -> None:
        assert hasattr(client, "request")
        for _ in range(n):
            response = await client.request("/reviews/0")
            assert response.status == 200
            counts[response.backend] = counts.get(response.backend, 0) + 1

    n = 1000
    try:
        await asyncio.gather(*(send(c, n // 4) for c in clients))
    finally:
        for c in clients:
            await c.close()
    # 80/20 between v1 and v3: 5 sigma of a binomial(1000, 0.8) is 63
    assert set(counts) == {"reviews-v1", "reviews-v3"}
    assert abs(counts["reviews-v1"] - 800) <= 63
    assert counts["reviews-v1"] + counts["reviews-v3"] == n


async def test_rewrites_redirects_and_header_edits_are_exact(
    mesh: tuple[Live, dict[str, Backend]],
) -> None:
    live, _ = mesh
    client = live.client(productpage())
    try:
        rewritten = await client.request("/api/v1/books/7?x=1")
        echoed = rewritten.json()
        assert (rewritten.status, rewritten.backend) == (200, "details-v1")
        assert (echoed["path"], echoed["headers"]["host"]) == (
            "/v2/books/7?x=1",
            "details.internal",
        )

        redirect = await client.request("/old?keep=1")
        assert redirect.status == 302
        assert redirect.headers["location"] == "http://new.example/new?keep=1"
        assert redirect.backend == ""

        edited = await client.request(
            "/headers", headers={"x-set": "client", "x-add": "client", "x-remove": "gone"}
        )
        seen = edited.json()["headers"]
        assert seen["x-set"] == "set-value"
        assert seen["x-add"] == "client,added"
        assert "x-remove" not in seen
        assert seen["host"] == productpage()
        assert edited.headers["x-response"] == "from-route"
        assert "content-type" not in edited.headers
        assert edited.backend == "productpage-v1"
    finally:
        await client.close()


async def test_faults_delay_and_abort(mesh: tuple[Live, dict[str, Backend]]) -> None:
    live, running = mesh
    client = live.client(productpage())
    ratings = live.client("ratings.bookinfo.svc.cluster.local")
    try:
        started = time.monotonic()
        delayed = await client.request("/delayed")
        assert time.monotonic() - started >= 0.3
        assert (delayed.status, delayed.backend) == (200, "productpage-v1")

        before = len(running["ratings-v1"].seen)
        aborted = await ratings.request("/ratings/1", headers={"x-test-fault": "abort"})
        assert aborted.status == 503
        assert aborted.headers["x-pilotfish-error"] == "fault_abort"
        assert len(running["ratings-v1"].seen) == before
        passed = await ratings.request("/ratings/1")
        assert (passed.status, passed.backend) == (200, "ratings-v1")
    finally:
        await client.close()
        await ratings.close()


async def test_a_retry_on_5xx_hides_a_failed_first_attempt(
    mesh: tuple[Live, dict[str, Backend]],
) -> None:
    live, running = mesh
    ratings = running["ratings-v1"]
    ratings.fail = 1
    client = live.client(productpage())
    try:
        response = await client.request("/retry/once")
        assert (response.status, response.backend) == (200, "ratings-v1")
        assert [s.path for s in ratings.seen] == ["/retry/once", "/retry/once"]
        ratings.fail = 3  # more failures than attempts: the last 503 is the answer
        response = await client.request("/retry/thrice")
        assert (response.status, response.backend) == (503, "ratings-v1")
        assert len(ratings.seen) == 5
    finally:
        await client.close()


async def test_a_slow_backend_past_the_route_timeout_is_a_504(
    mesh: tuple[Live, dict[str, Backend]],
) -> None:
    live, running = mesh
    running["details-v1"].delay = 1.0
    client = live.client(productpage())
    try:
        response = await client.request("/timeout")
        assert response.status == 504
        assert response.headers["x-pilotfish-error"] == "upstream_timeout"
    finally:
        await client.close()
        running["details-v1"].delay = 0.0


async def test_the_mirror_gets_a_copy_and_the_client_the_primary_answer(
    mesh: tuple[Live, dict[str, Backend]],
) -> None:
    live, running = mesh
    client = live.client(productpage())
    try:
        response = await client.request("/mirror/1", "GET", {"x-trace": "t1"})
        assert (response.status, response.backend) == (200, "productpage-v1")
        shadow = running["reviews-v3"]
        await _until(lambda: len(shadow.seen) == 1)
        (copy,) = shadow.seen
        assert (copy.method, copy.path, copy.headers["x-trace"]) == ("GET", "/mirror/1", "t1")
        assert copy.headers["host"] == productpage() + "-shadow"
    finally:
        await client.close()


async def test_a_mirror_copy_has_the_rewritten_request_and_envoys_shadow_host(
    mesh: tuple[Live, dict[str, Backend]],
) -> None:
    live, running = mesh
    shadow = running["reviews-v3"]
    with_port = live.client(f"{productpage()}:{live.port}")
    try:
        response = await with_port.request("/mirror/2")
        assert (response.status, response.backend) == (200, "productpage-v1")
        rewritten = await with_port.request("/mirror-rewritten/3")
        assert (rewritten.status, rewritten.json()["path"]) == (200, "/copied/3")
        assert rewritten.json()["headers"]["host"] == "internal.example"
        await _until(lambda: len(shadow.seen) == 2)
        copies = sorted((s.path, s.headers["host"]) for s in shadow.seen)
        assert copies == [
            ("/copied/3", "internal.example-shadow"),
            ("/mirror/2", f"{productpage()}-shadow:{live.port}"),
        ]
    finally:
        await with_port.close()


async def _until(check: object, timeout: float = 5.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


def test_the_shadow_host_goes_before_the_port_as_in_envoy() -> None:
    assert [shadow_host(h) for h in (b"a", b"a:80", b"[::1]:80", b"[::1]")] == [
        b"a-shadow",
        b"a-shadow:80",
        b"[::1]-shadow:80",
        b"[::1]-shadow",
    ]


async def test_the_backend_sees_forwarding_headers_and_no_hop_by_hop_ones(
    mesh: tuple[Live, dict[str, Backend]],
) -> None:
    live, _ = mesh
    client = live.client(productpage())
    try:
        response = await client.request(
            "/",
            headers={
                "x-forwarded-for": "10.0.0.1",
                "connection": "keep-alive, x-hop",
                "x-hop": "1",
            },
        )
        seen = response.json()["headers"]
        assert seen["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
        assert seen["x-forwarded-proto"] == "http"
        assert re.fullmatch(
            "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
            seen["x-request-id"],
        )
        assert "x-hop" not in seen and "connection" not in seen
        kept = await client.request("/", headers={"x-request-id": "given"})
        assert kept.json()["headers"]["x-request-id"] == "given"
    finally:
        await client.close()
