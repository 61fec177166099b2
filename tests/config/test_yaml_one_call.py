"""The fast YAML path loads a multi-document file in one ``yaml_rs`` call, and reads it the same.

``yamlsource._load_all`` hands the whole file to ``yaml_rs`` when every part
between markers holds a node; otherwise, or when the count of documents it
returns is not the count of parts, the documents are loaded one by one.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.config_scale import service_file
from controlplane.config import yamlsource
from controlplane.config.yamlsource import is_fast_exact, parse, parse_exact
from tests.config.test_yaml_semantics import assert_paths_agree


def count_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    loads = yamlsource._fast_loads
    assert loads is not None

    def counted(text: str, **options: Any) -> Any:
        calls.append(text)
        return loads(text, **options)

    monkeypatch.setattr(yamlsource, "_fast_loads", counted)
    return calls


def test_a_file_of_thirteen_documents_is_loaded_in_one_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = service_file(7)
    calls = count_loads(monkeypatch)
    documents = parse(text)
    assert calls == [text]
    assert [d.index for d in documents] == list(range(13))
    assert [d.data["kind"] for d in documents] == ["Service"] + ["WorkloadEntry"] * 10 + [
        "VirtualService",
        "DestinationRule",
    ]
    assert [(d.index, d.line, d.data) for d in documents] == [
        (d.index, d.line, d.data) for d in parse_exact(text)
    ]


def test_an_empty_document_sends_the_file_back_to_one_call_per_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = "# head\n---\na: 1\n---\n---\nb: 2\n"
    calls = count_loads(monkeypatch)
    documents = parse(text)
    assert calls == ["---\na: 1\n", "---\nb: 2\n"]
    assert [(d.index, d.line, d.data) for d in documents] == [(0, 3, {"a": 1}), (2, 6, {"b": 2})]


def test_a_null_document_is_skipped_in_one_call_too(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "a: 1\n--- \n~\n---\nb: 2\n"
    calls = count_loads(monkeypatch)
    documents = parse(text)
    assert calls == [text]
    assert [(d.index, d.line, d.data) for d in documents] == [(0, 1, {"a": 1}), (2, 5, {"b": 2})]


@pytest.mark.parametrize(
    "text",
    [
        'a: "x\n--- y"\nb: 1\n---\nc: 2\n',
        "- a: 'x\n--- y'\n- b: 1\n",
        "a: |\n  x\n---\nb: 1\n",
        "a: x\n  --- y\n---\nb: 1\n",
        "- 1\n---\n- 2\n---\n[3]\n",
        "a: 1\n--- # c\nb: 2\n",
    ],
)
def test_markers_near_scalars_read_the_same_on_both_paths(text: str) -> None:
    assert_paths_agree(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: 0\n---\n# c\nb: 1\n",
        "---\n# c\na: 1\n---\n\nb: 2\n",
        "a: 0\n---\n  \n# c\n  b: 2\n",
        "---\n  a: 1\n---\n- 2\n",
        "a: 0\n---\n---\nb: 1\n",
        "---\n#\n#\n\n[1]\n---\nb: 1",
    ],
)
def test_comments_and_blank_lines_between_a_marker_and_its_node_count_on_both_paths(
    text: str,
) -> None:
    # The line of a document is its node's: after the marker, blank lines and comments.
    assert_paths_agree(text)


_PARTS = [
    "a: 1\n",
    "- 1\n",
    "- x: 'p\n",
    "--- q'\n",
    '"r\n',
    "---\n",
    "--- \n",
    "# c\n",
    "~\n",
    "b:\n  c: x\n",
    "  - y\n",
    "d: |\n  t\n",
]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_PARTS), min_size=2, max_size=8).map("".join))
def test_document_streams_with_markers_in_odd_places_read_the_same_on_both_paths(
    text: str,
) -> None:
    assert_paths_agree(text)


def test_the_benchmark_file_takes_the_fast_path() -> None:
    assert is_fast_exact(service_file(3))


def test_text_beyond_ascii_in_comments_takes_the_fast_path_and_in_values_does_not() -> None:
    assert is_fast_exact("# café, 2020\u20142026\na: 1\n")
    assert is_fast_exact("# \ud800\na: 1\n")
    assert not is_fast_exact("a: café\n")
    assert not is_fast_exact("# ok\na: 1\u2028\n")
