"""Benchmark: cold start and edits of a large config directory.

Generates N services in a temporary directory, one file per service, in one
of two shapes (``--shape``, both by default):

* ``bench``: a Service, 10 WorkloadEntries, a VirtualService (header match,
  90/10 split, timeout) and a DestinationRule (two subsets): 13 documents;
* ``six``: a Service, 3 WorkloadEntries, a VirtualService (two header
  matches, a 70/20/10 split over three subsets, retries) and a
  DestinationRule (three subsets, connection pool): 6 documents;

then prints for every N:

* the cold path stage by stage, in this process: scan (list, read and hash
  the files), parse (the fast path, with the exact libyaml path and PyYAML's
  ``CSafeLoader`` over the same texts beside it), validate (every document),
  both again as ``pilotfish serve`` runs them, on two cores (a read helper
  process, :mod:`controlplane.config.parallel_read`), build (the mesh),
  translate+encode (a sidecar's resources, serialized as the server's
  translator does as it builds them) and its snapshot (versions); the sum
  is of the stages ``serve`` runs;
* the same path as ``ConfigStore.reload()`` runs it in ``serve`` (one
  figure, with the read helper);
* ``pilotfish serve`` started as a process, to the first complete CDS
  response (every cluster) and LDS response on a sidecar's ADS stream: the
  cold start a proxy sees (``--no-serve`` skips it). It runs as an installed
  package does, from byte-compiled modules: ``pip install`` compiles them,
  and Python writes them at the first import, except where
  ``PYTHONDONTWRITEBYTECODE`` is set, as on the project's machine, where a
  checkout would compile every module at every start. So the bench compiles
  the package first (into its ``__pycache__`` directories, which git ignores)
  and prints what that compilation cost, which such a checkout pays on top;
* at the largest N, the time from a one-file edit (one endpoint's weight) to
  the new model, and from a one-file edit with an error to the rejection.

Usage: ``python bench/config_scale.py [--sizes 1000 10000] [--repeat 3]``.
Times are wall clock; CPU time of this process is given beside the stages.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import gc
import hashlib
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import structlog
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controlplane import collector
from controlplane.config.build import MeshBuilder
from controlplane.config.document import read_document
from controlplane.config.files import scan
from controlplane.config.limits import DEFAULT_LIMITS
from controlplane.config.parallel_read import read_files
from controlplane.config.resources import Resource
from controlplane.config.store import ConfigStore
from controlplane.config.store import _read as store_read
from controlplane.config.yamlsource import Document, parse, parse_exact
from controlplane.translate import ProxyClass
from controlplane.translate.translator import Translator
from controlplane.xds.snapshot import Resource as XdsResource
from controlplane.xds.snapshot import Snapshot

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: bench
spec:
  selector:
    app: {name}
  ports:
  - name: http
    port: 8080
    targetPort: 9080
"""
WORKLOAD = """\
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: {name}-{j}
  namespace: bench
spec:
  address: 10.{a}.{b}.{j}
  weight: {weight}
  labels:
    app: {name}
    version: v{v}
  ports:
    http: 9080
"""
ROUTING = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
  namespace: bench
spec:
  hosts:
  - {name}
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination:
        host: {name}
        subset: v2
  - route:
    - destination:
        host: {name}
        subset: v1
      weight: 90
    - destination:
        host: {name}
        subset: v2
      weight: 10
    timeout: 2s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}
  namespace: bench
spec:
  host: {name}
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
"""


SIX_WORKLOAD = WORKLOAD.replace("version: v{v}", "version: v{v}\n    zone: z{z}")
SIX_ROUTING = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
  namespace: bench
spec:
  hosts:
  - {name}
  http:
  - match:
    - headers:
        x-canary:
          exact: "true"
    - headers:
        end-user:
          prefix: test-
    route:
    - destination:
        host: {name}
        subset: v3
  - route:
    - destination:
        host: {name}
        subset: v1
      weight: 70
    - destination:
        host: {name}
        subset: v2
      weight: 20
    - destination:
        host: {name}
        subset: v3
      weight: 10
    retries:
      attempts: 3
      perTryTimeout: 500ms
    timeout: 2s
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}
  namespace: bench
spec:
  host: {name}
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 100
    loadBalancer:
      simple: ROUND_ROBIN
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
  - name: v3
    labels:
      version: v3
"""


def six_file(index: int, weight: int = 1) -> str:
    """The ``six`` shape: six documents per service."""
    name = f"svc-{index:05d}"
    docs = [SERVICE.format(name=name)]
    docs += [
        SIX_WORKLOAD.format(
            name=name,
            j=j,
            a=index // 250,
            b=index % 250,
            v=j + 1,
            z=j % 2,
            weight=weight if j == 0 else 1,
        )
        for j in range(3)
    ]
    docs.append(SIX_ROUTING.format(name=name))
    return "---\n".join(docs)


def service_file(index: int, weight: int = 1) -> str:
    name = f"svc-{index:05d}"
    docs = [SERVICE.format(name=name)]
    docs += [
        WORKLOAD.format(
            name=name,
            j=j,
            a=index // 250,
            b=index % 250,
            v=j % 2 + 1,
            weight=weight if j == 0 else 1,
        )
        for j in range(10)
    ]
    docs.append(ROUTING.format(name=name))
    return "---\n".join(docs)


SHAPES: dict[str, tuple[Callable[[int, int], str], int]] = {
    "bench": (service_file, 13),
    "six": (six_file, 6),
}


def generate(root: Path, count: int, shape: str = "bench") -> None:
    make = SHAPES[shape][0]
    for index in range(count):
        (root / f"svc-{index:05d}.yaml").write_text(make(index, 1))


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


class Stages:
    """Wall and CPU seconds per named stage, printed as one table row each."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []
        self.notes: dict[int, str] = {}

    def note(self, text: str) -> None:
        """Printed under the last row."""
        self.notes[len(self.rows) - 1] = text

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        self.rows.append((name, time.perf_counter() - wall, time.process_time() - cpu))
        return result


def pyyaml_floor(texts: list[str]) -> int:
    return sum(sum(1 for _ in yaml.load_all(text, Loader=yaml.CSafeLoader)) for text in texts)


def cold_stages(root: Path, count: int) -> Stages:
    """The cold path of ``ConfigStore.reload`` taken apart, stage by stage."""
    stages = Stages()
    with collector.paused():

        def read() -> dict[str, str]:
            texts = {}
            for rel in scan(root):
                raw = (root / rel).read_bytes()
                hashlib.sha256(raw).hexdigest()
                texts[rel] = raw.decode()
            return texts

        texts = stages.run("scan: list, read, hash", read)
        parsed: dict[str, list[Document]] = stages.run(
            "parse: fast path (yaml_rs)", lambda: {rel: parse(t) for rel, t in texts.items()}
        )
        stages.run("  peer: exact path (libyaml)", lambda: [parse_exact(t) for t in texts.values()])
        stages.run("  peer: PyYAML CSafeLoader", lambda: pyyaml_floor(list(texts.values())))

        def validate() -> dict[str, tuple[Resource, ...]]:
            out: dict[str, tuple[Resource, ...]] = {}
            for rel, documents in parsed.items():
                findings: list[Any] = []
                resources = [read_document(rel, d, findings) for d in documents]
                assert not findings, findings[:3]
                out[rel] = tuple(r for r in resources if r is not None)
            return out

        resources = stages.run("validate: every document", validate)

        def read_on_two_cores() -> int:
            read = read_files(root, list(texts), DEFAULT_LIMITS, store_read)
            return read.by_helper

        by_helper = stages.run("parse+validate on two cores", read_on_two_cores)
        stages.note(f"(a read helper process took {by_helper:,} of {len(texts):,} files)")
        build = stages.run("build: the mesh", lambda: MeshBuilder().build(resources))
        assert build.ok and len(build.mesh.services) == count
        translated = stages.run(
            "translate+encode: a sidecar",
            lambda: Translator(encode=XdsResource.from_message).translate(build.mesh, ProxyClass()),
        )
        stages.run("snapshot: its versions", lambda: Snapshot(translated))
    return stages


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def first_responses(address: str, clusters: int, deadline: float) -> tuple[float, float]:
    """Seconds (perf_counter) at which a sidecar got every cluster, then its listeners."""
    node = base_pb2.Node(id="bench-sidecar", cluster="bench")
    while True:
        try:
            # gRPC waits 1 s (with jitter) before its first reconnect: a client that
            # came too early would add that wait to the server's start-up time.
            options = [
                ("grpc.max_receive_message_length", -1),
                ("grpc.initial_reconnect_backoff_ms", 50),
                ("grpc.min_reconnect_backoff_ms", 50),
                ("grpc.max_reconnect_backoff_ms", 50),
            ]
            async with grpc.aio.insecure_channel(address, options=options) as channel:
                await asyncio.wait_for(channel.channel_ready(), 1.0)
                stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
                call = stub.StreamAggregatedResources()
                await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url=CLUSTER))
                response = await asyncio.wait_for(call.read(), deadline - time.perf_counter())
                assert response.type_url == CLUSTER, response.type_url
                assert len(response.resources) > clusters, len(response.resources)
                got_clusters = time.perf_counter()
                await call.write(
                    discovery_pb2.DiscoveryRequest(
                        type_url=CLUSTER,
                        version_info=response.version_info,
                        response_nonce=response.nonce,
                    )
                )
                await call.write(discovery_pb2.DiscoveryRequest(type_url=LISTENER))
                while response.type_url != LISTENER:
                    response = await asyncio.wait_for(call.read(), deadline - time.perf_counter())
                call.cancel()
                return got_clusters, time.perf_counter()
        except (TimeoutError, grpc.aio.AioRpcError) as exc:
            unavailable = not isinstance(exc, grpc.aio.AioRpcError) or (
                exc.code() is grpc.StatusCode.UNAVAILABLE
            )
            if not unavailable or time.perf_counter() > deadline:
                raise
            await asyncio.sleep(0.05)


def serve_cold(root: Path, count: int) -> tuple[float, float, float]:
    """From starting ``pilotfish serve`` to a sidecar's first CDS and LDS responses."""
    address = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as state:
        argv = [sys.executable, "-m", "controlplane", "serve", "--config-dir", str(root)]
        argv += ["--xds-address", address, "--admin-address", "127.0.0.1:0"]
        argv += ["--state-dir", state, "--log-level", "warning"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        started = time.perf_counter()
        log = Path(state) / "serve.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            clusters, listeners = asyncio.run(first_responses(address, count, started + 900))
            cpu = process_cpu(process.pid)
        except BaseException:
            print(log.read_text()[-2000:], file=sys.stderr)
            raise
        finally:
            process.terminate()
            process.wait(30)
    return clusters - started, listeners - started, cpu


def process_cpu(pid: int) -> float:
    """CPU seconds (user and system) a process has used so far (Linux), or NaN."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--shape", choices=sorted(SHAPES), nargs="+", default=["bench", "six"])
    parser.add_argument("--repeat", type=int, default=3, help="edits to time at the largest N")
    parser.add_argument("--no-serve", action="store_true", help="skip the pilotfish serve run")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    if not args.no_serve:
        compiled = compile_package()
        print(
            f"byte-compiling the package: {compiled:.2f} s cpu (serve runs compiled, as "
            "installed; a checkout under PYTHONDONTWRITEBYTECODE pays part of it at each start)"
        )
    for shape in args.shape:
        for count in args.sizes:
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                generate(root, count, shape)
                documents = count * SHAPES[shape][1]
                print(f"\n{shape} shape, N={count:,} services, {documents:,} documents")
                stages = cold_stages(root, count)
                for index, (name, wall, cpu) in enumerate(stages.rows):
                    print(f"  {name:32s} {wall:7.2f} s  (cpu {cpu:6.2f} s)")
                    if index in stages.notes:
                        print(f"    {stages.notes[index]}")
                served = ("scan", "parse+validate on two cores", "build", "translate", "snapshot")
                total = sum(wall for name, wall, _ in stages.rows if name.startswith(served))
                print(f"  {'stages in sum (as serve runs)':32s} {total:7.2f} s")
                store = ConfigStore(root, read_helper=True)
                seconds, result = timed(store.reload)
                gc.freeze()  # as `pilotfish serve` does after each reload
                assert not result.errors, result.errors[:3]
                assert len(result.mesh.services) == count
                print(f"  {'ConfigStore.reload(), cold':32s} {seconds:7.2f} s")
                if not args.no_serve:
                    clusters, listeners, cpu = serve_cold(root, count)
                    print(f"  {'serve start -> every cluster':32s} {clusters:7.2f} s (CDS)")
                    print(
                        f"  {'serve start -> listeners':32s} {listeners:7.2f} s (LDS; "
                        f"server cpu {cpu:.2f} s)"
                    )
                if count == max(args.sizes):
                    edits(root, store, count, shape, args.repeat)
                gc.unfreeze()


def compile_package() -> float:
    """Byte-compile the ``controlplane`` package as ``pip install`` would; its CPU seconds."""
    package = Path(__file__).resolve().parent.parent / "controlplane"
    started = time.process_time()
    if not compileall.compile_dir(package, quiet=1, force=True):
        raise SystemExit(f"config_scale: could not byte-compile {package}")
    return time.process_time() - started


def edits(root: Path, store: ConfigStore, count: int, shape: str, repeat: int) -> None:
    make = SHAPES[shape][0]
    edit_ms, reject_ms = [], []
    target = root / f"svc-{count // 2:05d}.yaml"
    for attempt in range(repeat):
        target.write_text(make(count // 2, 2 + attempt))
        seconds, result = timed(store.reload)
        gc.freeze()
        assert result.applied == (target.name,), result.applied
        edit_ms.append(seconds * 1000)
        target.write_text(make(count // 2, 1).replace("targetPort: 9080", "targetPort: 99999"))
        seconds, result = timed(store.reload)
        assert result.rejected == (target.name,), result.rejected
        reject_ms.append(seconds * 1000)
    print(
        f"  one-file edit -> new model       median {statistics.median(edit_ms):6.1f} ms "
        f"(max {max(edit_ms):.1f} ms over {len(edit_ms)})"
    )
    print(
        f"  one-file bad edit -> rejected    median {statistics.median(reject_ms):6.1f} ms "
        f"(max {max(reject_ms):.1f} ms)"
    )


if __name__ == "__main__":
    main()
