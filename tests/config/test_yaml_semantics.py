"""YAML as Kubernetes reads it (1.1 where 1.1 and 1.2 differ), whichever parser reads a file.

A file is parsed by the fast path (yaml_rs, YAML 1.2) only where it cannot
differ from the exact path (libyaml, YAML 1.1 as kubectl reads it); these
tests load files through :class:`ConfigStore`, the real loading path, and
check what a user sees: the values, and each diagnostic with its line and
column. The property tests check that the fast path, whenever it accepts a
text, gives exactly what the exact path gives.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.config.store import ConfigStore, ReloadResult
from controlplane.config.yamlsource import (
    Document,
    YamlSyntaxError,
    is_fast_exact,
    parse,
    parse_exact,
)
from tests.config.helpers import doc

SERVICE = "selector:\n  app: web\nports:\n- name: http\n"


def load(tmp_path: Path, text: str) -> tuple[ConfigStore, ReloadResult]:
    (tmp_path / "mesh.yaml").write_text(text)
    store = ConfigStore(tmp_path)
    return store, store.reload()


def rendered(result: ReloadResult) -> list[str]:
    return [d.render() for d in result.diagnostics]


def with_service(entry: str) -> str:
    """A Service selecting ``app: web`` and the documents of ``entry``."""
    return doc("Service", SERVICE + "  port: 80\n", name="web", api="v1") + "---\n" + entry


def endpoint_labels(store: ConfigStore) -> list[tuple[tuple[str, str], ...]]:
    ((_, endpoints),) = store.mesh.services[0].endpoints
    return [endpoint.labels for endpoint in endpoints]


def service_with_port(tmp_path: Path, port: str) -> tuple[ConfigStore, ReloadResult]:
    return load(tmp_path, doc("Service", SERVICE + port, name="web", api="v1"))


# --- booleans ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "value"), [("yes", True), ("on", True), ("No", False), ("OFF", False)]
)
def test_yes_no_on_off_are_booleans_as_kubectl_reads_them(
    tmp_path: Path, word: str, value: bool
) -> None:
    text = doc("Service", SERVICE + "  port: 80\n", name="web", api="v1") + "---\n"
    text += doc(
        "VirtualService",
        "hosts: [web]\nhttp:\n- match:\n  - uri: {prefix: /a}\n"
        f"    ignoreUriCase: {word}\n  route:\n  - destination: {{host: web}}\n",
        name="vs",
    )
    assert not is_fast_exact(text)
    store, result = load(tmp_path, text)
    assert rendered(result) == []
    assert store.mesh.virtual_services[0].http[0].matches[0].ignore_uri_case is value


def test_a_label_of_yes_is_a_boolean_so_an_error_at_its_line_and_column(tmp_path: Path) -> None:
    text = doc("WorkloadEntry", "address: 10.0.0.1\nlabels:\n  app: web\n  canary: yes\n", name="w")
    _, result = load(tmp_path, text)
    assert rendered(result) == [
        "mesh.yaml:9:5: error[PF112] expected a string, found boolean true "
        "(WorkloadEntry default/w, spec.labels.canary)"
    ]


def test_a_quoted_yes_is_a_string(tmp_path: Path) -> None:
    entry = "address: 10.0.0.1\nlabels:\n  app: web\n  canary: 'yes'\n"
    text = with_service(doc("WorkloadEntry", entry, name="w"))
    assert is_fast_exact(text)
    store, result = load(tmp_path, text)
    assert rendered(result) == []
    assert endpoint_labels(store) == [(("app", "web"), ("canary", "yes"))]


def test_true_and_on_as_keys_stay_their_text(tmp_path: Path) -> None:
    entry = "address: 10.0.0.1\nlabels:\n  app: web\n  true: x\n  on: y\n"
    text = with_service(doc("WorkloadEntry", entry, name="w"))
    assert not is_fast_exact(text)
    store, result = load(tmp_path, text)
    assert rendered(result) == []
    assert endpoint_labels(store) == [(("app", "web"), ("on", "y"), ("true", "x"))]


# --- numbers ----------------------------------------------------------------------------------


def test_a_leading_zero_is_octal_0755_is_493(tmp_path: Path) -> None:
    store, result = service_with_port(tmp_path, "  port: 0755\n  targetPort: 0o755\n")
    assert rendered(result) == []
    (port,) = store.mesh.services[0].ports
    # 0o755 is YAML 1.2's octal; in 1.1 it is a string, here a named target port.
    assert (port.port, port.target_port) == (493, "0o755")


def test_yaml_1_2_octal_is_a_string_so_an_error_at_its_line_and_column(tmp_path: Path) -> None:
    _, result = service_with_port(tmp_path, "  port: 0o755\n")
    assert rendered(result) == [
        "mesh.yaml:10:5: error[PF112] expected an integer, found string '0o755' "
        "(Service default/web, spec.ports[0].port)"
    ]


def test_an_exponent_without_a_dot_is_a_string_as_in_yaml_1_1(tmp_path: Path) -> None:
    _, result = service_with_port(tmp_path, "  port: 1e3\n")
    assert rendered(result) == [
        "mesh.yaml:10:5: error[PF112] expected an integer, found string '1e3' "
        "(Service default/web, spec.ports[0].port)"
    ]


def test_underscores_and_base_60_are_yaml_1_1_integers(tmp_path: Path) -> None:
    store, result = service_with_port(tmp_path, "  port: 8_080\n  targetPort: 1:30\n")
    assert rendered(result) == []
    (port,) = store.mesh.services[0].ports
    assert (port.port, port.target_port) == (8080, 90)


# --- duplicate keys, merge keys, anchors --------------------------------------------------------


def test_a_duplicate_key_is_an_error_at_the_second_key(tmp_path: Path) -> None:
    _, result = service_with_port(tmp_path, "  port: 80\n  port: 81\n")
    assert rendered(result) == [
        "mesh.yaml:11:5: error[PF100] duplicate key 'port': a key may appear once per mapping, "
        "remove one"
    ]


def test_a_duplicate_key_in_a_file_the_fast_path_reads_is_placed_by_the_exact_path(
    tmp_path: Path,
) -> None:
    text = doc("WorkloadEntry", "address: 10.0.0.1\naddress: 10.0.0.2\n", name="w")
    assert is_fast_exact(text)
    _, result = load(tmp_path, text)
    assert rendered(result) == [
        "mesh.yaml:7:3: error[PF100] duplicate key 'address': a key may appear once per "
        "mapping, remove one"
    ]


def test_a_merge_key_merges_a_mapping_and_the_keys_beside_it_win(tmp_path: Path) -> None:
    entry = "address: 10.0.0.1\nlabels:\n  <<: {app: web, version: v1}\n  version: v2\n"
    text = with_service(doc("WorkloadEntry", entry, name="w"))
    assert not is_fast_exact(text)
    store, result = load(tmp_path, text)
    assert rendered(result) == []
    assert endpoint_labels(store) == [(("app", "web"), ("version", "v2"))]


def test_an_alias_is_expanded(tmp_path: Path) -> None:
    entry = (
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: w\n"
        "  labels: &labels {app: web, version: v1}\nspec:\n  address: 10.0.0.1\n"
        "  labels: *labels\n"
    )
    store, result = load(tmp_path, with_service(entry))
    assert rendered(result) == []
    assert endpoint_labels(store) == [(("app", "web"), ("version", "v1"))]


def test_aliases_that_expand_past_the_limit_are_an_error_at_their_line(tmp_path: Path) -> None:
    laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for name, previous in itertools.pairwise("abcdefgh"):
        laughs += f"{previous}: &{previous} [" + ", ".join([f"*{name}"] * 10) + "]\n"
    _, result = load(tmp_path, laughs)
    (diagnostic,) = result.diagnostics
    # Placed at the top-level key whose expansion went past the budget.
    assert (diagnostic.code, diagnostic.line, diagnostic.column) == ("PF109", 5, 1)


# --- which path reads what --------------------------------------------------------------------


def test_the_benchmark_files_take_the_fast_path() -> None:
    from bench.config_scale import service_file, six_file

    assert is_fast_exact(service_file(7))
    assert is_fast_exact(six_file(7))


@pytest.mark.parametrize(
    "text",
    [
        "a: yes\n",
        "a: 0755\n",
        "a: 1e3\n",
        "a: 1:30\n",
        "a: .inf\n",
        "a: _1\n",
        "80: http\n",
        "a: &x 1\n",
        "a: !!str 1\n",
        "<<: {a: 1}\n",
        "? a\n: 1\n",
        "\ta: 1\n",
        "a: caf\u00e9\n",
        "a: {1: b}\n",
        "a: {b, true}\n",
        "a: {b: 1,\n  c: 2}\n",
        "a: {[b]: 1}\n",
        "a: [?b]\n",
        "a: [b:c]\n",
        "%YAML 1.1\n---\na: 1\n",
        "a: 1\n...\n",
        "--- {a: 1}\n",
        "- " * 60 + "x\n",
    ],
)
def test_text_where_the_parsers_could_differ_takes_the_exact_path(text: str) -> None:
    assert not is_fast_exact(text)


@pytest.mark.parametrize(
    "text",
    [
        "# split 80/20, on weekdays: yes\na: b\n",
        "labels: {app: web, version: v1}\nports: {http: 9080}\n",
        "address: 10.0.0.1\nweight: 90\ntimeout: 1.5s\nratio: 0.25\n",
    ],
)
def test_comments_one_line_flow_mappings_and_plain_numbers_take_the_fast_path(text: str) -> None:
    assert is_fast_exact(text)


# --- the fast path equals the exact path ------------------------------------------------------


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _outcome(read: Any, text: str) -> tuple[str, Any]:
    try:
        documents: list[Document] = read(text)
    except YamlSyntaxError as exc:
        return "error", (str(exc), exc.line, exc.column)
    return "ok", documents


def assert_paths_agree(text: str) -> None:
    fast, exact = _outcome(parse, text), _outcome(parse_exact, text)
    assert fast[0] == exact[0], (text, fast, exact)
    if fast[0] == "error":
        assert fast == exact
        return
    assert [(d.index, d.line) for d in fast[1]] == [(d.index, d.line) for d in exact[1]], text
    assert all(_same(f.data, e.data) for f, e in zip(fast[1], exact[1], strict=True)), text
    # The size gates the check of long strings: it may only err upwards.
    assert all(f.size >= e.size for f, e in zip(fast[1], exact[1], strict=True)), text


_SCALAR = st.text(alphabet="0189-+._:eExXoObBinfaINFtrusyYnNl~ ,#[]{}'\"?", max_size=7)


@settings(max_examples=1500, deadline=None)
@given(_SCALAR)
def test_every_scalar_reads_the_same_on_both_paths(scalar: str) -> None:
    for text in (
        f"a: {scalar}\n",
        f"{scalar}: a\n",
        f"- [{scalar}]\n",
        f"k:\n- {scalar}\n",
        f"{{{scalar}}}\n",
        f"k: {{a: 1, {scalar}}}\n",
        f"k: {{a: {scalar}}}\n",
        f"# {scalar}\nk: {scalar}\n",
    ):
        assert_paths_agree(text)


_FRAGMENTS = [
    "a: 1\n",
    "b:\n  c: x\n",
    "- 1\n",
    "---\n",
    "--- \n",
    "# c\n",
    "\n",
    "  d: 2\n",
    "- [1, x]\n",
    "e: {}\n",
    "f: |\n  t\n",
    "g: >-\n  u\n\n",
    "h: 'q'\n",
    'i: "r\\n"\n',
    "j:\n- k\n- l: m\n",
    "n: o # c\n",
    "  - p\n",
    "q: 10.0.0.1\n",
    "r: 2s\n",
    "s: [a, 'b']\n",
    "---\nt: 1",
    "   \n",
    "u: -1\n",
    "v: 1.5\n",
    "w: x\n  y\n",
    "x: {a: 1, b: [c, 2]}\n",
    "- {d: e}\n",
    "# on 80/20: yes\n",
    "y: {\n",
    "  0, f: 1}\n",
    'z: "a\n  b"\n',
]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), min_size=1, max_size=10).map("".join))
def test_every_document_stream_reads_the_same_on_both_paths(text: str) -> None:
    assert_paths_agree(text)
