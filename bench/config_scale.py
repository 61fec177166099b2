"""Benchmark: load, validate and build the model for a large config directory.

Generates N services (a Service, 10 WorkloadEntries, a VirtualService and a
DestinationRule each, one file per service) in a temporary directory, then
prints:

* the time for a cold ``ConfigStore.reload()`` (scan, parse, validate, build)
  for every N given;
* at the largest N, the time from a one-file edit (one endpoint's weight) to
  the new model, and from a one-file edit with an error to the rejection.

Usage: ``python bench/config_scale.py [--sizes 1000 10000] [--repeat 3]``.
The peer figure printed alongside is PyYAML's own ``yaml.load_all`` with the
C loader over the same files: the floor for anything built on PyYAML.
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import tempfile
import time
from pathlib import Path

import structlog
import yaml

from controlplane.config.store import ConfigStore

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


def generate(root: Path, count: int) -> None:
    for index in range(count):
        (root / f"svc-{index:05d}.yaml").write_text(service_file(index))


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def pyyaml_floor(root: Path) -> float:
    def load() -> int:
        count = 0
        for path in sorted(root.glob("*.yaml")):
            count += sum(1 for _ in yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader))
        return count

    seconds, _ = timed(load)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3, help="edits to time at the largest N")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    for count in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            generate(root, count)
            store = ConfigStore(root)
            seconds, result = timed(store.reload)
            gc.freeze()  # as `pilotfish serve` does after each reload
            assert not result.errors, result.errors[:3]
            assert len(result.mesh.services) == count
            floor = pyyaml_floor(root)
            print(
                f"N={count:>6}: cold load+validate+build {seconds:6.2f} s "
                f"({count * 13} documents); PyYAML CSafeLoader load alone {floor:6.2f} s; "
                f"ratio {seconds / floor:4.2f}x"
            )
            if count != max(args.sizes):
                continue
            edits, rejections = [], []
            target = root / f"svc-{count // 2:05d}.yaml"
            for attempt in range(args.repeat):
                target.write_text(service_file(count // 2, weight=2 + attempt))
                seconds, result = timed(store.reload)
                gc.freeze()
                assert result.applied == (target.name,), result
                edits.append(seconds)
                target.write_text(service_file(count // 2).replace("weight: 90", "weight: 91"))
                seconds, result = timed(store.reload)
                assert result.rejected == (target.name,), result
                rejections.append(seconds)
            edit_ms, reject_ms = (
                [s * 1000 for s in edits],
                [s * 1000 for s in rejections],
            )
            print(
                f"N={count:>6}: one-file edit -> new model      median "
                f"{statistics.median(edit_ms):6.1f} ms "
                f"(max {max(edit_ms):.1f} ms over {len(edits)})"
            )
            print(
                f"N={count:>6}: one-file bad edit -> rejected median "
                f"{statistics.median(reject_ms):6.1f} ms (max {max(reject_ms):.1f} ms)"
            )


if __name__ == "__main__":
    main()
