"""Fuzzing the reader: whatever the text, read_text reports findings and never raises.

Two sources of input: arbitrary text and YAML dumped from arbitrary
structures (some shaped like resources, so the schema check and the
converters see them), and the example configurations with random mutations
(a key deleted or renamed, a value replaced or retyped, a list item
duplicated). Every finding must also resolve to a position in the text.

Each test tries 250 examples; ``PF_FUZZ_EXAMPLES=5000 pytest
tests/config/test_fuzz.py`` searches longer.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controlplane.config.diagnostics import CODES, Diagnostic
from controlplane.config.document import FileResult, read_text
from controlplane.config.istio_schema import KINDS, MESSAGES
from controlplane.config.store import resolve_positions
from controlplane.config.yamlsource import parse

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_FILES = [*sorted(EXAMPLES.glob("bookinfo/*.yaml")), EXAMPLES / "hello-world/hello.yaml"]
DOCUMENTS: list[dict[str, Any]] = [
    d for path in EXAMPLE_FILES for d in yaml.safe_load_all(path.read_text()) if d is not None
]
FIELD_NAMES = sorted({name for fields in MESSAGES.values() for name in fields})
FUZZ = settings(
    max_examples=int(os.environ.get("PF_FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

_YAML_TOKENS = st.sampled_from(
    [
        *":-?[]{},#&*!|>'\"%@`\\ \t\n\r",
        *"abkx019._/é\ufeff",
        *("<<", "---", "...", ": ", "- ", "\n  ", "&a ", "*a", "!foo ", "0b_", "0x"),
        *("!!int ", "!!float ", "!!bool ", "!!str "),
    ]
)
yaml_soup = st.lists(_YAML_TOKENS, max_size=60).map("".join)
INTERESTING = [
    None,
    True,
    False,
    0,
    -1,
    1,
    80,
    65535,
    65536,
    2**31,
    2**32,
    2**63,
    -(2**63) - 1,
    1.5,
    float("inf"),
    float("nan"),
    "",
    "*",
    "mesh",
    "a/b",
    "1s",
    "-1s",
    "1h30m",
    "abc",
    "ABC",
    "(",
    "a(?=b)",
    "http",
    "grpc-web",
    "STATIC",
    "DNS",
    "LEAST_CONN",
    "ROUND_ROBIN",
    "MESH_INTERNAL",
    "unix:///run/x.sock",
    "10.0.0.1",
    "²",
    "--5",
    "1024",
    [],
    [None],
    ["a"],
    [{}],
    {},
    {"exact": "x"},
    {"prefix": "/", "regex": "["},
    {"number": 80},
    {"value": 150},
    {"destination": {"host": "a"}},
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(INTERESTING[:40]),
)
keys = st.one_of(st.text(max_size=10), st.sampled_from(FIELD_NAMES))
structures = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)
    ),
    max_leaves=25,
)
resources = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from([v for versions, _ in KINDS.values() for v in versions]),
        "kind": st.sampled_from(sorted(KINDS)),
        "metadata": st.one_of(
            st.fixed_dictionaries({"name": st.sampled_from(["a", "b-1", "Bad", ""])}), structures
        ),
        "spec": structures,
    }
)


def check_result(text: str, result: FileResult) -> list[Diagnostic]:
    """Every finding has a known code and resolves to a position inside the text."""
    if result.syntax_error is not None:
        diagnostics = [f.at(*result.syntax_error) for f in result.findings]
        assert [d.code for d in diagnostics] == ["PF100"]
    else:
        diagnostics = resolve_positions(result.findings, {"fuzz.yaml": text})
    # Lines as YAML counts them: NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR break lines
    # too. libyaml places an unexpected end of stream on the line after a last
    # unterminated one.
    lines = sum(text.count(brk) for brk in ("\n", "\r", "\x85", "\u2028", "\u2029")) + 2
    for d in diagnostics:
        assert d.code in CODES
        assert d.message
        assert 1 <= d.line <= lines
        assert d.column >= 1
    if not result.ok:
        assert any(d.is_error for d in diagnostics)
    return diagnostics


@FUZZ
@given(st.text(max_size=200))
@example("-\x850")  # NEL breaks a YAML line: the error is on line 3 of a "one-line" text
def test_arbitrary_text_gives_findings_never_an_exception(text: str) -> None:
    check_result(text, read_text("fuzz.yaml", text))


@FUZZ
@given(yaml_soup)
def test_yaml_punctuation_soup_gives_findings_never_an_exception(text: str) -> None:
    check_result(text, read_text("fuzz.yaml", text))


@FUZZ
@given(st.lists(structures, min_size=1, max_size=3))
def test_dumped_structures_give_findings_never_an_exception(documents: list[Any]) -> None:
    text = yaml.safe_dump_all(documents)
    check_result(text, read_text("fuzz.yaml", text))


@FUZZ
@given(st.lists(resources, min_size=1, max_size=3))
def test_resource_shaped_documents_give_findings_never_an_exception(
    documents: list[Any],
) -> None:
    text = yaml.safe_dump_all(documents, sort_keys=False)
    check_result(text, read_text("fuzz.yaml", text))


@FUZZ
@given(structures)
def test_parse_reads_what_pyyaml_safe_load_reads(value: Any) -> None:
    text = yaml.safe_dump({"v": value})
    (document,) = parse(text)
    # repr, not ==: NaN is not equal to itself.
    assert repr(document.data) == repr(yaml.safe_load(text))


# --- mutations of the example documents ------------------------------------------------------


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_paths(value, (*prefix, index)))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def _retyped(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return int(value) if value.isascii() and value.isdigit() else [value]
    if isinstance(value, list):
        return value[0] if value else {}
    if isinstance(value, dict):
        return list(value.values())
    return 0


@st.composite
def mutated_documents(draw: st.DrawFn) -> Any:
    document = copy.deepcopy(draw(st.sampled_from(DOCUMENTS)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(document)))
        if not path:
            continue
        parent, last = _get(document, path[:-1]), path[-1]
        operation = draw(
            st.sampled_from(["delete", "replace", "rename", "duplicate", "retype", "interesting"])
        )
        if operation == "delete":
            del parent[last]
        elif operation == "replace":
            parent[last] = draw(structures)
        elif operation == "interesting":
            parent[last] = copy.deepcopy(draw(st.sampled_from(INTERESTING)))
        elif operation == "retype":
            parent[last] = _retyped(parent[last])
        elif operation == "rename" and isinstance(parent, dict):
            new = draw(keys)
            if new not in parent:
                parent[new] = parent.pop(last)
        elif operation == "duplicate" and isinstance(parent, list):
            parent.insert(last, copy.deepcopy(parent[last]))
    return document


@FUZZ
@given(st.lists(mutated_documents(), min_size=1, max_size=3))
def test_mutated_examples_give_findings_that_resolve_to_positions(documents: list[Any]) -> None:
    text = yaml.safe_dump_all(documents, sort_keys=False)
    result = read_text("fuzz.yaml", text)
    check_result(text, result)
    assert result.syntax_error is None


def test_the_unmutated_examples_load_without_findings() -> None:
    text = yaml.safe_dump_all(DOCUMENTS, sort_keys=False)
    result = read_text("fuzz.yaml", text)
    assert result.findings == ()
    assert len(result.resources) == len(DOCUMENTS) == 24
