"""Benchmark: the cost of an edit with many proxy classes whose proxies are gone.

Serves the hello-world example from a temporary directory with an in-process
:class:`ControlPlane` (no gRPC: the edit's cost is in translation), creates
``--classes`` gateway classes with made-up labels the way a stream does (take
the class, give it back), then times one-file edits:

* at once, while every class is within its grace (each is rebuilt);
* after the grace, when the cache has dropped them (only live classes are).

A baseline edit with no stale class is timed first. Each figure is the median
of ``--repeat`` edits. On code without class lifetimes (no ``acquire``), the
classes are made with ``snapshot_for`` and never go away.

Usage: ``python bench/stale_classes.py [--classes 10000] [--grace 10] [--max 20000]``.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog
from envoy.config.core.v3 import base_pb2
from google.protobuf import struct_pb2

from controlplane.server.control_plane import ControlPlane, ControlPlaneOptions

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "hello-world" / "hello.yaml"


def gateway(index: int) -> Any:
    node = base_pb2.Node(id=f"made-up-{index}", cluster="gw")
    node.metadata.fields["pilotfish.io/role"].CopyFrom(struct_pb2.Value(string_value="gateway"))
    node.metadata.fields["labels"].struct_value.update({"app": "edge", "nonce": str(index)})
    return node


def edit_seconds(plane: ControlPlane, config: Path, repeat: int) -> float:
    text = config.read_text()
    times = []
    for round_ in range(repeat):
        config.write_text(text.replace("http: 9101", f"http: {9111 + round_ % 2}"))
        started = time.perf_counter()
        result = plane.reload()
        times.append(time.perf_counter() - started)
        assert result.changed
    config.write_text(text)
    plane.reload()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--max", type=int, default=20_000, help="--max-proxy-classes")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = root / "hello.yaml"
        config.write_text(EXAMPLE.read_text())
        try:
            options = ControlPlaneOptions(
                root, proxy_class_grace=args.grace, max_proxy_classes=args.max
            )
        except TypeError:  # code without class lifetimes
            options = ControlPlaneOptions(root)
        plane = ControlPlane(options)
        plane.cache.update(plane._builder(plane.store.reload().mesh))
        cache: Any = plane.cache
        lifetimes = hasattr(cache, "acquire")
        live = gateway(-1)
        (cache.acquire if lifetimes else cache.snapshot_for)(live)

        baseline = edit_seconds(plane, config, args.repeat)
        started = time.perf_counter()
        for index in range(args.classes):
            if lifetimes:
                key, _ = cache.acquire(gateway(index))
                cache.release(key)
            else:
                cache.snapshot_for(gateway(index))
        made = time.perf_counter() - started
        stale = edit_seconds(plane, config, args.repeat)
        classes_in_grace = len(cache.keys())
        time.sleep(args.grace)
        after = edit_seconds(plane, config, args.repeat)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"class lifetimes: {'yes' if lifetimes else 'no'}")
        print(f"edit with 1 live class: {baseline:.3f} s")
        print(f"{args.classes} stale classes made in {made:.1f} s")
        print(f"edit with {classes_in_grace} classes, within the grace: {stale:.3f} s")
        print(f"edit with {len(cache.keys())} classes, after the grace: {after:.3f} s")
        print(f"peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
