"""Bounded input: files, documents, aliases and strings over the limits are errors, found cheaply.

Each limit has its own code, line and hint, is checked before the input it
bounds is expanded in memory, and is far above what real configuration uses.
"""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from yaml.nodes import Node

from controlplane.config import build, yamlexact
from controlplane.config.build import MeshBuilder
from controlplane.config.diagnostics import Diagnostic, Severity
from controlplane.config.document import read_text
from controlplane.config.limits import DEFAULT_LIMITS, MIB, ConfigLimits, describe_bytes
from controlplane.config.store import ConfigStore, validate_directory
from controlplane.config.yamlsource import YamlLimitError, YamlSyntaxError, parse
from tests.config.helpers import FILE, diagnose, doc

ERROR = Severity.ERROR


def billion_laughs(levels: int) -> str:
    """Nested anchors: level ``n`` is nine aliases of level ``n - 1``, 9**levels values in all."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\n"


def measured(call: Callable[[], Any]) -> tuple[Any, int]:
    """What ``call`` returns, and the peak of memory allocated while it ran."""
    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def limit_error(text: str, limits: ConfigLimits = DEFAULT_LIMITS) -> tuple[str, str, int]:
    with pytest.raises(YamlLimitError) as caught:
        parse(text, limits)
    return caught.value.code, str(caught.value), caught.value.line


def service(name: str) -> str:
    return doc("Service", "ports:\n- {name: http, port: 80}\n", name=name, api="v1")


def host(name: str) -> str:
    return f"{name}.default.svc.cluster.local"


# --- aliases -------------------------------------------------------------------------------------


def test_a_billion_laughs_bomb_is_refused_at_the_key_that_expands_it_with_bounded_memory() -> None:
    bomb = billion_laughs(9)
    assert len(bomb) < 500
    error, peak = measured(lambda: limit_error(bomb))
    assert error == (
        "PF109",
        f"aliases expand this document past {100_000 + len(bomb):,} values; "
        "remove the alias or repeat the values it stands for",
        6,
    )
    assert peak < 50 * MIB


def test_validate_reports_the_bomb_as_an_error_of_its_file(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(billion_laughs(9))
    (tmp_path / "web.yaml").write_text(service("web"))
    (diagnostic,) = validate_directory(tmp_path)
    assert (diagnostic.code, diagnostic.file, diagnostic.line, diagnostic.column) == (
        "PF109",
        "bomb.yaml",
        6,
        1,
    )


def test_small_alias_expansions_and_merge_keys_are_allowed() -> None:
    text = billion_laughs(4) + "defaults: &x {app: web, tier: front}\nlabels: {<<: *x, v: '1'}\n"
    (document,) = parse(text)
    assert len(document.data["d"]) == 9
    assert document.data["labels"] == {"app": "web", "tier": "front", "v": "1"}


def test_the_alias_budget_is_the_documents_size_plus_the_limit() -> None:
    text = billion_laughs(3)  # 9 + 81 + 729 values and lists, from 83 characters
    assert parse(text, ConfigLimits(max_alias_nodes=1000))[0].data["c"][8][8] == ["x"] * 9
    code, _, line = limit_error(text, ConfigLimits(max_alias_nodes=700))
    assert (code, line) == ("PF109", 3)


def test_a_document_without_anchors_is_never_counted() -> None:
    text = "items: [" + ", ".join(["x"] * 5000) + "]\n"
    (document,) = parse(text, ConfigLimits(max_alias_nodes=1))
    assert len(document.data["items"]) == 5000


def test_a_recursive_alias_is_still_reported_as_one() -> None:
    with pytest.raises(YamlSyntaxError) as caught:
        parse("a: &x [*x]\n", ConfigLimits(max_alias_nodes=1))
    assert str(caught.value) == "recursive alias: a node contains itself; point the alias elsewhere"


# --- documents per file and document size ------------------------------------------------------


def test_more_documents_than_the_limit_is_an_error_at_the_first_one_over_it() -> None:
    three = "a: 1\n---\nb: 2\n---\n"  # the empty third document counts
    limits = ConfigLimits(max_documents_per_file=3)
    assert [d.data for d in parse(three, limits)] == [{"a": 1}, {"b": 2}]
    assert limit_error(three + "---\nd: 4\n", limits) == (
        "PF107",
        "the file has more than 3 documents; split the file",
        6,
    )


def test_a_document_over_the_size_limit_is_an_error_at_its_first_line() -> None:
    limits = ConfigLimits(max_document_bytes=400)
    small, large = "".join(f"a{i}: 1\n" for i in range(10)), "b: 2\n" * 100
    assert len(parse(small + "---\n" + small, limits)) == 2
    assert limit_error(small + "---\n" + large, limits) == (
        "PF108",
        "the document is 504 bytes, more than the limit of 400 bytes; "
        "split it into smaller resources",
        11,
    )


def test_document_size_counts_utf8_bytes_not_characters() -> None:
    text = "a: " + "é" * 120 + "\n"  # 124 characters, 244 bytes
    assert parse(text, ConfigLimits(max_document_bytes=244))[0].data == {"a": "é" * 120}
    code, message, _ = limit_error(text, ConfigLimits(max_document_bytes=200))
    assert (code, message.split(",")[0]) == ("PF108", "the document is 244 bytes")


def test_a_document_over_the_size_limit_is_never_composed() -> None:
    # Composed, one-character values cost over a hundred bytes each.
    text = "a: 1\n---\nitems: [" + ",".join(["x"] * 500_000) + "]\n"
    limits = ConfigLimits(max_document_bytes=64 * 1024)
    error, peak = measured(lambda: limit_error(text, limits))
    assert error[0] == "PF108"
    assert peak < 2 * len(text)


def test_many_small_documents_pass_the_size_check() -> None:
    text = "".join(f"---\nname: n{i}\n" for i in range(20_000))
    documents = parse(text, ConfigLimits(max_document_bytes=64, max_documents_per_file=20_000))
    assert len(documents) == 20_000


# --- file size and string size -----------------------------------------------------------------


def test_a_file_over_the_size_limit_is_an_error_at_line_1() -> None:
    text = service("web")
    assert read_text(FILE, text, ConfigLimits(max_file_bytes=len(text))).ok
    result = read_text(FILE, text, ConfigLimits(max_file_bytes=len(text) - 1))
    assert result.resources == ()
    assert [f.at(*result.syntax_error) for f in result.findings] == [  # type: ignore[misc]
        Diagnostic(
            ERROR,
            "PF106",
            FILE,
            1,
            1,
            "",
            "",
            f"the file is {len(text)} bytes, more than the limit of {len(text) - 1} bytes; "
            "split the file",
        )
    ]


def test_a_uri_prefix_over_the_string_limit_names_the_field_and_the_limit() -> None:
    prefix = "/" + "a" * 100_000
    text = doc(
        "VirtualService",
        f"hosts: [web]\nhttp:\n- match:\n  - uri: {{prefix: {prefix}}}\n"
        "  route:\n  - destination: {host: web}\n",
        name="web",
    )
    assert diagnose(text) == [
        Diagnostic(
            ERROR,
            "PF121",
            FILE,
            9,
            13,
            "VirtualService default/web",
            "spec.http[0].match[0].uri.prefix",
            "the value is 100,001 bytes, more than the limit of 64 KiB for one string; shorten it",
        )
    ]
    assert read_text(FILE, text).resources == ()


def test_a_key_over_the_string_limit_is_reported_at_its_mapping() -> None:
    text = doc("WorkloadEntry", f"address: 10.0.0.1\nlabels: {{{'k' * 300}: v}}\n", name="w")
    (diagnostic,) = diagnose(text, limits=ConfigLimits(max_string_bytes=256))
    assert (diagnostic.code, diagnostic.field, diagnostic.message) == (
        "PF121",
        "spec.labels",
        "a key here is 300 bytes, more than the limit of 256 bytes for one string; shorten it",
    )


def test_strings_within_the_limit_are_fine_in_a_document_over_it() -> None:
    labels = ", ".join(f"k{i}: {'v' * 50}" for i in range(20))
    text = doc("WorkloadEntry", f"address: 10.0.0.1\nlabels: {{{labels}}}\n", name="w")
    assert diagnose(text, limits=ConfigLimits(max_string_bytes=256)) == []


@pytest.mark.parametrize(
    ("size", "text"),
    [(16 * MIB, "16 MiB"), (3 * MIB // 2, "1.5 MiB"), (64 * 1024, "64 KiB"), (1000, "1,000 bytes")],
)
def test_limits_are_described_as_the_docs_write_them(size: int, text: str) -> None:
    assert describe_bytes(size) == text


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_file_bytes must be a positive integer, not 0"):
        ConfigLimits(max_file_bytes=0)


# --- the store: large files are refused without being read -------------------------------------


def test_a_file_over_the_size_limit_is_never_read_and_other_edits_still_apply(
    tmp_path: Path,
) -> None:
    store = ConfigStore(tmp_path)
    (tmp_path / "web.yaml").write_text(service("web"))
    store.reload()
    with open(tmp_path / "huge.yaml", "wb") as huge:
        huge.truncate(64 * MIB)  # sparse: reading it would allocate 64 MiB
    (tmp_path / "api.yaml").write_text(service("api"))
    result, peak = measured(store.reload)
    assert result.applied == ("api.yaml",)
    assert result.rejected == ("huge.yaml",)
    assert [(d.code, d.file, d.line, d.message) for d in result.errors] == [
        (
            "PF106",
            "huge.yaml",
            1,
            f"the file is {64 * MIB:,} bytes, more than the limit of 4 MiB; split the file",
        )
    ]
    assert sorted(s.host for s in store.mesh.services) == [host("api"), host("web")]
    assert peak < 8 * MIB


def test_a_file_that_grows_past_the_limit_keeps_its_last_good_version(tmp_path: Path) -> None:
    text = service("web")
    store = ConfigStore(tmp_path, ConfigLimits(max_file_bytes=len(text) + 10))
    (tmp_path / "web.yaml").write_text(text)
    store.reload()
    (tmp_path / "web.yaml").write_text(text + "# " + "padding " * 10 + "\n")
    result = store.reload()
    assert result.rejected == ("web.yaml",)
    assert [d.code for d in result.errors] == ["PF106"]
    assert [s.host for s in store.mesh.services] == [host("web")]


def test_the_errors_of_thousands_of_documents_are_placed_in_one_pass_over_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = "".join(
        doc("WorkloadEntry", "adress: 10.0.0.1\n", name=f"w{i}") + "---\n" for i in range(2000)
    )
    composed = 0
    compose_all = yamlexact._compose_all

    def counting(text: str) -> Iterator[Node]:
        nonlocal composed
        composed += 1
        return compose_all(text)

    monkeypatch.setattr(yamlexact, "_compose_all", counting)
    diagnostics = diagnose(text)
    assert [(d.line, d.field) for d in diagnostics[:2]] == [(6, "spec.adress"), (13, "spec.adress")]
    assert len(diagnostics) == 2000
    assert diagnostics[-1].line == 6 + 7 * 1999
    # At most one exact parse (none on the fast path), and one pass to place every error.
    assert composed <= 2


def test_the_defaults_accept_the_files_the_benchmarks_and_examples_write() -> None:
    from bench.config_scale import service_file

    text = service_file(7)
    assert read_text("svc-00007.yaml", text).ok
    examples = Path(__file__).resolve().parents[2] / "examples"
    largest = max((p for p in examples.rglob("*.yaml")), key=lambda p: p.stat().st_size)
    assert read_text(largest.name, largest.read_text()).ok


# --- memory goes back when a large file goes ----------------------------------------------------

WORKLOAD = """\
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: big-{i}, namespace: bench}}
spec: {{address: 10.0.{a}.{b}, labels: {{app: web, instance: i{i}}}, ports: {{http: 9080}}}}
"""


def test_the_memory_of_a_deleted_large_file_goes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build, "_FRESH_START_AFTER", 1000)
    (tmp_path / "web.yaml").write_text(service("web"))
    store = ConfigStore(tmp_path)
    store.reload()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        workloads = (WORKLOAD.format(i=i, a=i // 250, b=i % 250) for i in range(4000))
        (tmp_path / "big.yaml").write_text("".join(workloads))
        assert store.reload().applied == ("big.yaml",)
        held = tracemalloc.get_traced_memory()[0] - before
        (tmp_path / "big.yaml").unlink()
        assert store.reload().applied == ("big.yaml",)
        gc.collect()  # as the server's housekeeper does after a reload
        after = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held > 4 * MIB
    assert after < 256 * 1024


def test_a_builder_that_starts_afresh_after_a_large_drop_equals_a_fresh_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.config.test_build_incremental import PATHS, VERSIONS, _files

    monkeypatch.setattr(build, "_FRESH_START_AFTER", 0)
    rng = random.Random(13)
    builder = MeshBuilder()
    for _ in range(200):
        choice = [rng.choice([None, None, 0, 1]) for _ in PATHS]
        changed = frozenset(p for p in PATHS if rng.random() < 0.3) if rng.random() < 0.5 else None
        files = _files(choice)
        remembered = builder.build(files, changed)
        fresh = MeshBuilder().build(files, changed)
        assert remembered.mesh == fresh.mesh
        assert remembered.findings == fresh.findings
    assert VERSIONS
