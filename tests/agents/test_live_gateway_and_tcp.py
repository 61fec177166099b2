"""A live gateway agent serves the bookinfo ingress; more match kinds; a TCP service end to end.

The gateway agent is selected by the bookinfo Gateway's labels (``istio: ingressgateway``) and
gets the port the Gateway declares; the sidecar checks cover the Istio match and action variants
the routing tests leave out (case-insensitive URIs, regex rewrites, ``withoutHeaders``, header
regexes, per-destination header operations, scheme and port redirects), and a TCP route with a
weighted split.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from agents.node import NodeIdentity
from tests.agents.live_support import (
    BOOKINFO_WORKLOADS,
    HOST,
    backends,
    bookinfo_config,
    free_port,
    hello_mesh,
    live_agent,
    subsets_rule,
)

VARIANTS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hello, namespace: default}
spec:
  hosts: [hello]
  http:
  - name: nocase
    match:
    - uri: {exact: /Login}
      ignoreUriCase: true
    route:
    - destination: {host: hello, subset: a}
  - name: regex-rewrite
    match:
    - uri: {regex: "/users/([0-9]+)/profile"}
    rewrite: {uri: /profiles/\\1}
    route:
    - destination: {host: hello, subset: b}
  - name: header-regex
    match:
    - headers:
        x-version: {regex: "v[0-9]+"}
    route:
    - destination: {host: hello, subset: b}
      headers:
        request:
          set: {x-picked: b}
        response:
          add: {x-served-by: b}
  - name: without
    match:
    - uri: {prefix: /private}
      withoutHeaders:
        x-token: {}
    redirect:
      scheme: https
      port: 8443
      redirectCode: 307
  - name: split
    match:
    - uri: {prefix: /split}
    route:
    - destination: {host: hello, subset: a}
      weight: 50
      headers:
        request:
          set: {x-picked: a}
    - destination: {host: hello, subset: b}
      weight: 50
      headers:
        request:
          set: {x-picked: b}
  - route:
    - destination: {host: hello, subset: a}
"""

TCP_MESH = """\
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: default}}
spec:
  selector: {{app: db}}
  ports:
  - {{name: tcp, port: {port}, protocol: TCP}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: db-1, namespace: default}}
spec:
  address: 127.0.0.1
  labels: {{app: db, v: one}}
  ports: {{tcp: {one}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: db-2, namespace: default}}
spec:
  address: 127.0.0.1
  labels: {{app: db, v: two}}
  ports: {{tcp: {two}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: db, namespace: default}}
spec:
  host: db
  subsets:
  - {{name: one, labels: {{v: one}}}}
  - {{name: two, labels: {{v: two}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db, namespace: default}}
spec:
  hosts: [db]
  tcp:
  - route:
    - destination: {{host: db, subset: one}}
      weight: 75
    - destination: {{host: db, subset: two}}
      weight: 25
"""


async def test_a_gateway_agent_serves_the_bookinfo_ingress(tmp_path: Path) -> None:
    async with backends(*BOOKINFO_WORKLOADS) as running:
        service_port, gateway_port = free_port(), free_port()
        config = bookinfo_config(tmp_path, running, service_port, gateway_port)
        node = NodeIdentity(
            "ingress", role="gateway", labels={"istio": "ingressgateway"}, bind_address="127.0.0.1"
        )
        async with live_agent(config, gateway_port, node) as live:
            client = live.client("bookinfo.example.com")
            try:
                page = await client.request("/productpage?u=1")
                assert (page.status, page.backend) == (200, "productpage-v1")
                assert page.json()["path"] == "/productpage?u=1"
                assert page.json()["headers"]["host"] == "bookinfo.example.com"

                moved = await client.request("/old-productpage")
                assert moved.status == 301
                assert moved.headers["location"] == "http://bookinfo.example.com/productpage"

                reviews = await client.request("/reviews/7")
                assert (reviews.status, reviews.backend) == (200, "reviews-v1")
                # Envoy's prefix_rewrite replaces exactly the matched "/reviews" with "/"
                assert reviews.json()["path"] == "//7"
            finally:
                await client.close()


async def test_more_match_kinds_and_actions(tmp_path: Path) -> None:
    port = free_port()
    async with backends("a", "b") as running:
        config = tmp_path / "config"
        config.mkdir()
        (config / "mesh.yaml").write_text(hello_mesh(port, running))
        (config / "rule.yaml").write_text(subsets_rule(["a", "b"]))
        (config / "routes.yaml").write_text(VARIANTS)
        async with live_agent(config, port) as live:
            client = live.client(HOST)
            try:
                for path in ("/login", "/LOGIN", "/Login"):
                    response = await client.request(path)
                    assert (response.status, response.backend) == (200, "a")
                    assert response.json()["path"] == path

                rewritten = await client.request("/users/42/profile")
                assert (rewritten.status, rewritten.backend) == (200, "b")
                assert rewritten.json()["path"] == "/profiles/42"

                versioned = await client.request("/x", headers={"x-version": "v12"})
                assert (versioned.status, versioned.backend) == (200, "b")
                assert versioned.json()["headers"]["x-picked"] == "b"
                assert versioned.headers["x-served-by"] == "b"
                unversioned = await client.request("/x", headers={"x-version": "v1x"})
                assert unversioned.backend == "a"

                redirect = await client.request("/private/doc?q=1")
                assert redirect.status == 307
                assert redirect.headers["location"] == f"https://{HOST}:8443/private/doc?q=1"
                with_token = await client.request("/private/doc", headers={"x-token": "t"})
                assert (with_token.status, with_token.backend) == (200, "a")

                picked: Counter[tuple[str, str]] = Counter()
                for _ in range(200):
                    response = await client.request("/split")
                    picked[response.backend, response.json()["headers"]["x-picked"]] += 1
                assert set(picked) == {("a", "a"), ("b", "b")}
                # binomial(200, 0.5): 5 sigma is about 35
                assert abs(picked["a", "a"] - 100) <= 35
            finally:
                await client.close()


async def test_a_tcp_service_is_proxied_by_weight(tmp_path: Path) -> None:
    port = free_port()
    greetings: Counter[bytes] = Counter()

    def echo_server(name: bytes) -> object:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = await reader.read(100)
            writer.write(name + b":" + data)
            await writer.drain()
            writer.close()

        return serve

    one = await asyncio.start_server(echo_server(b"one"), "127.0.0.1", 0)  # type: ignore[arg-type]
    two = await asyncio.start_server(echo_server(b"two"), "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        config = tmp_path / "config"
        config.mkdir()
        (config / "db.yaml").write_text(
            TCP_MESH.format(
                port=port,
                one=one.sockets[0].getsockname()[1],
                two=two.sockets[0].getsockname()[1],
            )
        )
        async with live_agent(config, port):
            for _ in range(200):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"ping")
                answer = await reader.read()
                writer.close()
                greetings[answer] += 1
    finally:
        one.close()
        two.close()
    assert set(greetings) == {b"one:ping", b"two:ping"}
    # binomial(200, 0.75): 5 sigma is about 31
    assert abs(greetings[b"one:ping"] - 150) <= 31


STICKY = """\
    loadBalancer:
      consistentHash:
        httpCookie: {name: session, ttl: 60s}
"""


async def test_a_hash_cookie_with_a_ttl_is_made_up_once_and_keeps_the_client_on_one_backend(
    tmp_path: Path,
) -> None:
    port = free_port()
    async with backends("a", "b", "c") as running:
        config = tmp_path / "config"
        config.mkdir()
        (config / "mesh.yaml").write_text(hello_mesh(port, running))
        (config / "rule.yaml").write_text(subsets_rule([], STICKY))
        async with live_agent(config, port) as live:
            client = live.client(HOST)
            try:
                first = await client.request("/")
                assert first.status == 200
                cookie = first.headers["set-cookie"]
                name, _, rest = cookie.partition("=")
                value, _, attributes = rest.partition(";")
                assert name == "session"
                assert value.startswith('"') and value.endswith('"') and len(value) == 18
                assert attributes == " Max-Age=60; HttpOnly"
                for sent in (value, value.strip('"')):  # Envoy reads it quoted or not
                    for _ in range(10):
                        again = await client.request("/", headers={"cookie": f"session={sent}"})
                        assert again.backend == first.backend
                        assert "set-cookie" not in again.headers
                spread = {
                    (await client.request("/", headers={"cookie": f"session=s{i}"})).backend
                    for i in range(60)
                }
                assert spread == {"a", "b", "c"}
            finally:
                await client.close()
