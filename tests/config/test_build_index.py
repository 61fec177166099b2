"""The builder's remembered state (definition table, workload index) never goes stale.

A builder kept across builds must give what a fresh builder gives for the
same files, also where the index is not told by a file change: a duplicate
WorkloadEntry whose winner flips with ``changed`` alone, a key that becomes
defined twice, a workload that moves between selectors or leaves its last
bucket. The index's selection must also read labels exactly as
:func:`~controlplane.model.labels_match` does.
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Sequence

from controlplane.config.build import (
    BuildResult,
    MeshBuilder,
    _file_changes,
    _WorkloadIndex,
    bucket_names,
)
from controlplane.config.document import read_text
from controlplane.config.resources import Meta, Resource, WorkloadSpec
from controlplane.model import Labels, labels_match

HOST_A = "a.default.svc.cluster.local"
HOST_B = "b.default.svc.cluster.local"
EVERYONE = "everyone.example.com"  # a ServiceEntry selecting every workload

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: a}
spec: {selector: {app: a}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: b}
spec: {selector: {app: b, tier: web}, ports: [{name: http, port: 80}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: everyone}
spec:
  hosts: [everyone.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {}
"""


def workload(name: str, address: str, labels: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}}}
spec: {{address: {address}, labels: {{{labels}}}}}
"""


def parse(path: str, *docs: str) -> tuple[Resource, ...]:
    text = "---\n".join(textwrap.dedent(d).strip() + "\n" for d in docs)
    result = read_text(path, text)
    assert result.ok, result.findings
    return result.resources


def addresses(result: BuildResult, host: str) -> list[str]:
    service = result.mesh.service(host)
    assert service is not None
    return [e.address for _, eps in service.endpoints for e in eps]


def same_as_fresh(
    builder: MeshBuilder,
    files: dict[str, tuple[Resource, ...]],
    changed: frozenset[str] | None = None,
) -> BuildResult:
    remembered = builder.build(files, changed)
    fresh = MeshBuilder().build(files, changed)
    assert remembered.mesh == fresh.mesh
    assert remembered.findings == fresh.findings
    return remembered


def test_a_workload_whose_labels_change_moves_to_the_other_service() -> None:
    services = parse("00-services.yaml", SERVICES)
    builder = MeshBuilder()
    first = same_as_fresh(
        builder,
        {
            "00-services.yaml": services,
            "10-w.yaml": parse("10-w.yaml", workload("w", "10.0.0.1", "app: a")),
        },
    )
    assert addresses(first, HOST_A) == ["10.0.0.1"]
    assert addresses(first, HOST_B) == []
    moved = same_as_fresh(
        builder,
        {
            "00-services.yaml": services,
            "10-w.yaml": parse("10-w.yaml", workload("w", "10.0.0.1", "app: b, tier: web")),
        },
        frozenset({"10-w.yaml"}),
    )
    assert addresses(moved, HOST_A) == []
    assert addresses(moved, HOST_B) == ["10.0.0.1"]
    assert addresses(moved, EVERYONE) == ["10.0.0.1"]


def test_a_workload_matching_one_pair_of_two_is_not_selected() -> None:
    files = {
        "00-services.yaml": parse("00-services.yaml", SERVICES),
        "10-w.yaml": parse(
            "10-w.yaml",
            workload("web", "10.0.0.1", "app: b, tier: web"),
            workload("db", "10.0.0.2", "app: b, tier: db"),
            workload("other", "10.0.0.3", "tier: web"),
        ),
    }
    result = same_as_fresh(MeshBuilder(), files)
    assert addresses(result, HOST_B) == ["10.0.0.1"]
    assert addresses(result, EVERYONE) == [
        "10.0.0.1",
        "10.0.0.2",
        "10.0.0.3",
    ]


def test_the_last_workload_of_a_label_leaving_and_coming_back_is_selected_again() -> None:
    services = parse("00-services.yaml", SERVICES)
    with_w = {
        "00-services.yaml": services,
        "10-w.yaml": parse("10-w.yaml", workload("w", "10.0.0.1", "app: a")),
    }
    builder = MeshBuilder()
    assert addresses(same_as_fresh(builder, with_w), HOST_A) == ["10.0.0.1"]
    assert addresses(same_as_fresh(builder, {"00-services.yaml": services}), HOST_A) == []
    assert addresses(same_as_fresh(builder, with_w), HOST_A) == ["10.0.0.1"]


def test_a_duplicate_workload_whose_winner_flips_with_changed_alone_moves_the_endpoint() -> None:
    # Same files in both builds: only the blame (``changed``) decides which
    # definition of WorkloadEntry default/w is in effect, so no file sync tells
    # the index; the endpoints must follow all the same.
    files = {
        "00-services.yaml": parse("00-services.yaml", SERVICES),
        "10-first.yaml": parse("10-first.yaml", workload("w", "10.0.0.1", "app: a")),
        "20-second.yaml": parse("20-second.yaml", workload("w", "10.0.0.2", "app: b, tier: web")),
    }
    builder = MeshBuilder()
    plain = same_as_fresh(builder, files)
    assert addresses(plain, HOST_A) == ["10.0.0.1"]
    assert addresses(plain, HOST_B) == []
    first_blamed = same_as_fresh(builder, files, frozenset({"10-first.yaml"}))
    assert addresses(first_blamed, HOST_A) == []
    assert addresses(first_blamed, HOST_B) == ["10.0.0.2"]
    assert [f.code for f in first_blamed.findings] == ["PF208"]
    assert first_blamed.findings[0].file == "10-first.yaml"
    again = same_as_fresh(builder, files)
    assert addresses(again, HOST_A) == ["10.0.0.1"]
    assert addresses(again, HOST_B) == []


def test_a_key_that_becomes_defined_twice_keeps_or_changes_its_winner_as_a_fresh_build() -> None:
    services = parse("00-services.yaml", SERVICES)
    later = parse("20-later.yaml", workload("w", "10.0.0.1", "app: a"))
    earlier = parse("10-earlier.yaml", workload("w", "10.0.0.2", "app: b, tier: web"))
    builder = MeshBuilder()
    same_as_fresh(builder, {"00-services.yaml": services, "20-later.yaml": later})
    both = {"00-services.yaml": services, "10-earlier.yaml": earlier, "20-later.yaml": later}
    # The new earlier file is the change: it is blamed, the later one stays in effect.
    held = same_as_fresh(builder, both, frozenset({"10-earlier.yaml"}))
    assert addresses(held, HOST_A) == ["10.0.0.1"]
    assert addresses(held, HOST_B) == []
    # Without a change to blame, the first in file order wins.
    settled = same_as_fresh(builder, both)
    assert addresses(settled, HOST_A) == []
    assert addresses(settled, HOST_B) == ["10.0.0.2"]
    # The duplicate goes: the later one is in effect again.
    alone = same_as_fresh(builder, {"00-services.yaml": services, "20-later.yaml": later})
    assert addresses(alone, HOST_A) == ["10.0.0.1"]
    assert alone.findings == ()


def _made_workload(name: str, labels: Labels, file: str) -> Resource:
    return Resource(
        Meta("WorkloadEntry", "ns", name, file, 0, 1), WorkloadSpec("10.0.0.1", labels=labels)
    )


def test_index_selection_equals_labels_match_over_every_workload_after_any_syncs() -> None:
    rng = random.Random(11)
    pairs = [("app", "a"), ("app", "b"), ("tier", "web"), ("tier", "db"), ("zone", "z1")]
    index = _WorkloadIndex()
    files: dict[str, tuple[Resource, ...]] = {}
    selectors: list[Labels] = [(), *((p,) for p in pairs)]
    selectors += [tuple(sorted(rng.sample(pairs, 2))) for _ in range(10)]
    for step in range(60):
        path = f"f{rng.randrange(8)}.yaml"
        if rng.random() < 0.3:
            files.pop(path, None)
        else:
            files[path] = tuple(
                # Labels as given, duplicate keys included: the last one counts, as in labels_match.
                _made_workload(f"w{step}-{i}", tuple(rng.sample(pairs, rng.randrange(4))), path)
                for i in range(rng.randrange(4))
            )
        index.sync(files)
        every = [r for resources in files.values() for r in resources]
        for selector in selectors:
            expected = sorted(
                (r for r in every if labels_match(selector, r.spec.labels)),  # type: ignore[union-attr]
                key=lambda r: (r.meta.name, r.meta.file, r.meta.doc),
            )
            assert index.select("ns", selector) == tuple(expected), (step, selector)
            # Every name here is unique: sorting by the name alone gives the same order.
            assert index.select("ns", selector, unique_names=True) == tuple(expected)
        assert index.select("elsewhere", ()) == ()


def test_an_index_filled_without_tracking_then_changed_selects_and_reports_as_one_that_tracks() -> (
    None
):
    rng = random.Random(5)
    pairs = [("app", "a"), ("app", "b"), ("tier", "web")]
    selectors: list[Labels] = [(), *((p,) for p in pairs), (("app", "a"), ("tier", "web"))]

    def random_files(step: int) -> dict[str, tuple[Resource, ...]]:
        return {
            f"f{n}.yaml": tuple(
                _made_workload(f"w{step}-{n}-{i}", tuple(rng.sample(pairs, 2)), f"f{n}.yaml")
                for i in range(3)
            )
            for n in range(rng.randrange(1, 5))
        }

    known: dict[str, Sequence[Resource]] = {}
    untracked, tracked = _WorkloadIndex(), _WorkloadIndex()
    files = random_files(0)
    cold_untracked: set[object] = set()
    cold_tracked: set[object] = set()
    for old, new in _file_changes(known, files):
        untracked.apply(old, new, cold_untracked, track=False)
        tracked.apply(old, new, cold_tracked)
    assert cold_untracked == set()
    assert cold_tracked == {n for rs in files.values() for r in rs for n in bucket_names(r)}
    for step in range(1, 20):
        for selector in selectors:
            assert untracked.select("ns", selector) == tracked.select("ns", selector)
        files = {**files, **random_files(step)}
        changed_untracked: set[object] = set()
        changed_tracked: set[object] = set()
        for old, new in _file_changes(known, files):
            untracked.apply(old, new, changed_untracked)
            tracked.apply(old, new, changed_tracked)
        assert changed_untracked == changed_tracked, step


def test_a_service_added_after_a_cold_build_without_services_follows_later_workload_edits() -> None:
    builder = MeshBuilder()
    workloads = {"10-w.yaml": parse("10-w.yaml", workload("w", "10.0.0.1", "app: a"))}
    same_as_fresh(builder, workloads)
    services = parse("00-services.yaml", SERVICES)
    added = same_as_fresh(builder, {"00-services.yaml": services, **workloads}, frozenset())
    assert addresses(added, HOST_A) == ["10.0.0.1"]
    moved = same_as_fresh(
        builder,
        {
            "00-services.yaml": services,
            "10-w.yaml": parse("10-w.yaml", workload("w", "10.0.0.2", "app: b, tier: web")),
        },
        frozenset({"10-w.yaml"}),
    )
    assert addresses(moved, HOST_A) == []
    assert addresses(moved, HOST_B) == ["10.0.0.2"]


def test_a_new_earlier_definition_not_blamed_takes_over_from_an_unchanged_file() -> None:
    services = parse("00-services.yaml", SERVICES)
    later = parse("20-later.yaml", workload("w", "10.0.0.1", "app: a"))
    earlier = parse("10-earlier.yaml", workload("w", "10.0.0.2", "app: b, tier: web"))
    builder = MeshBuilder()
    same_as_fresh(builder, {"00-services.yaml": services, "20-later.yaml": later})
    taken = same_as_fresh(
        builder, {"00-services.yaml": services, "10-earlier.yaml": earlier, "20-later.yaml": later}
    )
    assert addresses(taken, HOST_A) == []
    assert addresses(taken, HOST_B) == ["10.0.0.2"]


def virtual_service(name: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}}}
spec: {{hosts: [{name}.example.com], tcp: [{{route: [{{destination: {{host: a}}}}]}}]}}
"""


def destination_rule(name: str) -> str:
    return f"""
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}}}
spec: {{host: {name}.default.svc.cluster.local}}
"""


def service(name: str) -> str:
    return f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{selector: {{app: {name}}}, ports: [{{name: tcp, port: 80}}]}}
"""


def test_the_mesh_keeps_its_order_when_documents_move_and_hosts_come_and_go() -> None:
    builder = MeshBuilder()
    steps = [
        ["vs-x", "vs-y", "svc-b", "svc-d", "dr-b"],
        ["vs-y", "vs-x", "svc-b", "svc-d", "dr-b"],  # the VirtualServices swap places
        ["vs-y", "vs-x", "svc-b", "svc-c", "svc-d", "dr-b", "dr-c"],  # a host in between
        ["vs-x", "svc-d", "svc-c", "dr-c"],
        ["vs-x", "vs-y", "svc-b", "svc-c", "svc-d", "dr-d", "dr-b", "dr-c"],
    ]
    make = {"vs": virtual_service, "svc": service, "dr": destination_rule}
    for step, names in enumerate(steps):
        docs = [make[kind](short) for kind, short in (n.split("-") for n in names)]
        files = {"10-all.yaml": parse("10-all.yaml", *docs)}
        result = same_as_fresh(builder, files, frozenset({"10-all.yaml"}))
        kinds: dict[str, list[str]] = {"vs": [], "svc": [], "dr": []}
        for name in names:
            kind, short = name.split("-")
            kinds[kind].append(short)
        assert [vs.name for vs in result.mesh.virtual_services] == kinds["vs"], step
        assert [s.name for s in result.mesh.services] == sorted(kinds["svc"]), step
        assert [p.name for p in result.mesh.destination_policies] == sorted(kinds["dr"]), step
