"""The proxy carries out each route action: weights, rewrites, redirects, faults, edits, mirrors."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

from agents.actions import (
    DirectResponse,
    Fault,
    FaultAbort,
    FaultDelay,
    Forward,
    HashPolicy,
    HeaderEdits,
    HeaderValue,
    Mirror,
    Redirect,
    RetryPolicy,
    WeightedCluster,
)
from agents.http_proxy import pick_cluster
from tests.agents.http_fakes import (
    Backend,
    FakeTable,
    Req,
    cluster,
    forward,
    get,
    proxy,
    request,
    response,
    setup,
)


def test_weighted_pick_uses_cumulative_weights_by_bisect() -> None:
    fw = Forward(
        clusters=(WeightedCluster("a", 10), WeightedCluster("b", 30), WeightedCluster("c", 60)),
        cumulative_weights=(10, 40, 100),
    )
    picks = [pick_cluster(fw, lambda v=v: v / 100).name for v in (0, 9.9, 10, 39.9, 40, 99.9)]
    assert picks == ["a", "a", "b", "b", "c", "c"]


async def test_weighted_clusters_split_traffic_by_weight() -> None:
    a, b = await Backend().start(), await Backend().start()
    fw = Forward(
        clusters=(WeightedCluster("a", 1), WeightedCluster("b", 3)),
        cumulative_weights=(1, 4),
    )
    table = FakeTable([("/", fw)], [cluster("a", a.port), cluster("b", b.port)])
    async with proxy(table) as (_, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(400):
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
        writer.close()
    share = len(b.requests) / 400
    assert len(a.requests) + len(b.requests) == 400
    assert 0.65 < share < 0.85  # 0.75 expected; bounds are > 5 sigma
    await a.close()
    await b.close()


async def test_direct_response_and_redirects() -> None:
    routes = [
        ("/direct", DirectResponse(418, b"teapot", HeaderEdits(add=(HeaderValue("x-d", "1"),)))),
        (
            "/old",
            Redirect(status=302, host="new.example", prefix_rewrite="/new", matched_prefix="/old"),
        ),
        ("/moved", Redirect(path="/elsewhere", scheme="https", port=8443, strip_query=True)),
    ]
    async with setup(routes=routes) as (port, backend, _, _):
        r = await request(port, get("/direct"))
        assert (r.status, r.body, r.header("x-d"), r.header("content-type")) == (
            418,
            b"teapot",
            "1",
            "text/plain",
        )
        r = await request(port, get("/old/x?q=1", host="svc:8080"))
        assert (r.status, r.header("location")) == (302, "http://new.example/new/x?q=1")
        r = await request(port, get("/moved?q=1", host="svc"))
        assert (r.status, r.header("location")) == (301, "https://svc:8443/elsewhere")
        assert backend.requests == []


async def test_prefix_and_regex_rewrite() -> None:
    routes = [
        ("/regex", forward(regex_rewrite=(re.compile(r"^/regex/(\d+)$"), r"/items/\1"))),
        (
            "/api",
            Forward(
                clusters=(WeightedCluster("backend"),), prefix_rewrite="/v2", matched_prefix="/api"
            ),
        ),
    ]
    # A case-insensitive route matches /API too: the matched characters are replaced.
    async with setup(routes=routes) as (port, backend, _, _):
        await request(port, get("/regex/42?x=1"))
        await request(port, get("/api/things"))
        await request(port, get("/API/Other"))
        assert [r.target for r in backend.requests] == [
            "/items/42?x=1",
            "/v2/things",
            "/v2/Other",
        ]


async def test_header_edits_on_request_and_response_route_then_weighted_cluster() -> None:
    fw = Forward(
        clusters=(
            WeightedCluster(
                "backend",
                request_headers=HeaderEdits(add=(HeaderValue("x-wc", "w"),)),
                response_headers=HeaderEdits(add=(HeaderValue("x-wc-resp", "w"),)),
            ),
        ),
        request_headers=HeaderEdits(
            add=(HeaderValue("x-add", "1"), HeaderValue("x-replace", "new", append=False)),
            remove=("x-drop",),
        ),
        response_headers=HeaderEdits(add=(HeaderValue("x-resp", "r"),), remove=("x-seen-target",)),
    )
    async with setup(routes=[("/", fw)]) as (port, backend, _, _):
        r = await request(port, get(extra="X-Drop: 1\r\nX-Replace: old\r\nX-Add: 0\r\n"))
        req = backend.requests[0]
        assert req.header("x-drop") is None
        assert req.all("x-replace") == ["new"]
        assert req.all("x-add") == ["0", "1"]
        assert req.header("x-wc") == "w"
        assert (r.header("x-resp"), r.header("x-wc-resp"), r.header("x-seen-target")) == (
            "r",
            "w",
            None,
        )


async def test_fault_abort_and_delay() -> None:
    routes = [
        ("/abort", forward(fault=Fault(abort=FaultAbort(status=429, percent=100)))),
        ("/never", forward(fault=Fault(abort=FaultAbort(status=500, percent=0)))),
        ("/delay", forward(fault=Fault(delay=FaultDelay(seconds=0.1, percent=100)))),
    ]
    async with setup(routes=routes) as (port, backend, _, _):
        r = await request(port, get("/abort"))
        assert (r.status, r.header("x-pilotfish-error")) == (429, "fault_abort")
        assert backend.requests == []
        assert (await request(port, get("/never"))).status == 200
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        r = await request(port, get("/delay"))
        assert r.status == 200 and loop.time() - t0 >= 0.1
        assert [q.target for q in backend.requests] == ["/never", "/delay"]


async def test_mirror_sends_a_copy_with_shadow_host_and_ignores_its_answer() -> None:
    async def failing(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(response(500, b"mirror broke"))
        return True

    main = await Backend().start()
    shadow = await Backend(failing).start()
    fw = forward("main", mirrors=(Mirror("shadow"),))
    table = FakeTable([("/", fw)], [cluster("main", main.port), cluster("shadow", shadow.port)])
    async with proxy(table) as (_, port):
        post = b"POST /m HTTP/1.1\r\nHost: svc:80\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
        r = await request(port, post + b"body")
        assert (r.status, r.body) == (200, b"body")
        for _ in range(100):
            if shadow.requests:
                break
            await asyncio.sleep(0.01)
        copy = shadow.requests[0]
        assert (copy.method, copy.target, copy.header("host"), copy.body) == (
            "POST",
            "/m",
            "svc-shadow:80",  # Envoy keeps the port after the -shadow suffix
            b"body",
        )
        assert main.requests[0].header("host") == "svc:80"
    await main.close()
    await shadow.close()


async def test_hash_policy_gives_the_balancer_a_stable_key() -> None:
    fw = forward(hash_policies=(HashPolicy("header", "x-user"),))
    async with setup(routes=[("/", fw)]) as (port, _, table, _):
        for user in ("alice", "bob", "alice"):
            await request(port, get(extra=f"X-User: {user}\r\n"))
        await request(port, get())
        keys = table.clusters["backend"].balancer.hash_keys
        assert keys[0] == keys[2] and keys[0] != keys[1]
        assert all(isinstance(k, int) for k in keys[:3]) and keys[3] is None


async def test_retry_on_connect_failure_moves_to_another_endpoint() -> None:
    good = await Backend().start()
    dead = await Backend().start()
    dead_port = dead.port
    await dead.close()
    retry = RetryPolicy(frozenset({"connect-failure"}), num_retries=1, base_interval=0.001)
    table = FakeTable([("/", forward(retry=retry))], [cluster("backend", dead_port, good.port)])
    async with proxy(table) as (manager, port):
        r = await request(port, get())
        assert r.status == 200 and len(good.requests) == 1
        statuses = [s for _, s in table.clusters["backend"].balancer.finished_calls]
        assert statuses == [None, 200]
        assert manager.stats.retries["backend"] == 1
        assert table.clusters["backend"].balancer.outstanding == 0
    await good.close()


async def test_retriable_status_codes_and_gateway_error() -> None:
    codes: Counter[str] = Counter()

    async def flaky(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        codes[req.target] += 1
        status = 409 if req.target == "/conflict" else 502
        w.write(response(status if codes[req.target] == 1 else 200, b"x"))
        return True

    routes = [
        (
            "/conflict",
            forward(
                retry=RetryPolicy(
                    frozenset({"retriable-status-codes"}),
                    retriable_status_codes=frozenset({409}),
                    base_interval=0.001,
                )
            ),
        ),
        ("/gw", forward(retry=RetryPolicy(frozenset({"gateway-error"}), base_interval=0.001))),
        ("/none", forward(retry=RetryPolicy(frozenset({"reset"}), base_interval=0.001))),
    ]
    async with setup(flaky, routes=routes) as (port, _, _, _):
        assert (await request(port, get("/conflict"))).status == 200
        assert (await request(port, get("/gw"))).status == 200
        assert (await request(port, get("/none"))).status == 502
        assert codes == Counter({"/conflict": 2, "/gw": 2, "/none": 1})


async def test_in_flight_request_keeps_the_table_it_started_with() -> None:
    release = asyncio.Event()

    async def slow(req: Req, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        await release.wait()
        w.write(response(200, b"old"))
        return True

    old_backend = await Backend(slow).start()
    new_backend = await Backend().start()
    old = FakeTable([("/", forward())], [cluster("backend", old_backend.port)])
    new = FakeTable([("/", forward())], [cluster("backend", new_backend.port)])
    async with proxy(old) as (manager, port):
        pending = asyncio.create_task(request(port, get("/slow")))
        while not old_backend.requests:
            await asyncio.sleep(0.01)
        await manager.apply(new)
        assert (await request(port, get("/fresh"))).status == 200
        release.set()
        assert (await pending).body == b"old"
        assert [r.target for r in new_backend.requests] == ["/fresh"]
    await old_backend.close()
    await new_backend.close()
