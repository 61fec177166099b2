"""Reading YAML (yamlsource.parse) and finding nodes again (yamlsource.locate)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from controlplane.config.yamlsource import Document, YamlSyntaxError, locate, parse
from tests.config.helpers import dedent


def syntax_error(text: str) -> tuple[str, int, int]:
    with pytest.raises(YamlSyntaxError) as caught:
        parse(text)
    return str(caught.value), caught.value.line, caught.value.column


def value_of(scalar: str) -> object:
    (document,) = parse(f"v: {scalar}\n")
    return document.data["v"]


# --- documents --------------------------------------------------------------------------------


def test_every_document_of_a_stream_is_read_with_its_index_and_first_line() -> None:
    text = dedent(
        """
        a: 1
        ---
        b: 2
        ---

        c: [3]
        """
    )
    assert parse(text) == [
        Document(0, 1, {"a": 1}),
        Document(1, 3, {"b": 2}),
        Document(2, 6, {"c": [3]}),
    ]


def test_empty_documents_are_skipped_but_keep_their_index() -> None:
    text = "---\n---\n# only a comment\n---\nkind: Service\n---\n"
    assert parse(text) == [Document(2, 5, {"kind": "Service"})]


def test_a_documents_line_is_that_of_its_first_node_not_of_comments_or_the_marker() -> None:
    assert parse("# header\n---\n# about kind\nkind: Gateway\n") == [
        Document(0, 4, {"kind": "Gateway"})
    ]


def test_document_end_markers_separate_documents() -> None:
    assert parse("a: 1\n...\n---\nb: 2\n") == [Document(0, 1, {"a": 1}), Document(1, 4, {"b": 2})]


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing\n", "---\n", "---\n...\n", "~\n"])
def test_text_without_content_has_no_documents(text: str) -> None:
    assert parse(text) == []


def test_a_yaml_directive_is_accepted() -> None:
    assert parse("%YAML 1.1\n---\na: 1\n") == [Document(0, 3, {"a": 1})]


def test_a_document_may_be_a_scalar_or_a_list() -> None:
    assert parse("hello\n---\n- 1\n") == [Document(0, 1, "hello"), Document(1, 3, [1])]


# --- scalars: PyYAML's safe YAML 1.1 ----------------------------------------------------------


@pytest.mark.parametrize(
    ("scalar", "value"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("on", True),
        ("On", True),
        ("yes", True),
        ("false", False),
        ("off", False),
        ("no", False),
        ("y", "y"),
        ("n", "n"),
        ("tRue", "tRue"),
    ],
)
def test_yaml_1_1_booleans(scalar: str, value: object) -> None:
    assert value_of(scalar) == value
    assert type(value_of(scalar)) is type(value)


@pytest.mark.parametrize(
    ("scalar", "value"),
    [
        ("80", 80),
        ("-3", -3),
        ("+12", 12),
        ("1_000", 1000),
        ("0x1f", 31),
        ("017", 15),
        ("0b101", 5),
        ("1:30", 90),
        ("0", 0),
        ("0o17", "0o17"),
        ("1.5", 1.5),
        ("1.0e+3", 1000.0),
        ("1e3", "1e3"),
        (".inf", math.inf),
        ("-.inf", -math.inf),
    ],
)
def test_yaml_1_1_numbers(scalar: str, value: object) -> None:
    assert value_of(scalar) == value
    assert type(value_of(scalar)) is type(value)


def test_nan_is_a_float() -> None:
    value = value_of(".nan")
    assert isinstance(value, float)
    assert math.isnan(value)


@pytest.mark.parametrize("scalar", ["null", "Null", "~", ""])
def test_yaml_1_1_nulls(scalar: str) -> None:
    assert value_of(scalar) is None


@pytest.mark.parametrize(
    ("scalar", "value"),
    [
        ('"true"', "true"),
        ("'on'", "on"),
        ("'80'", "80"),
        ('"1.5"', "1.5"),
        ("'null'", "null"),
        ("''", ""),
        ("!!str 80", "80"),
        ("1.5s", "1.5s"),
        ("2024-01-02", "2024-01-02"),
        ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"),
        ("!!binary aGk=", "aGk="),
        ("!custom value", "value"),
        ("|\n  two\n  lines", "two\nlines\n"),
    ],
)
def test_quoted_and_other_scalars_stay_strings(scalar: str, value: str) -> None:
    assert value_of(scalar) == value


def test_explicit_tags_convert_their_scalars() -> None:
    (document,) = parse("a: !!int '80'\nb: !!float '1'\nc: !!bool 'yes'\nd: !!null 'x'\n")
    assert document.data == {"a": 80, "b": 1.0, "c": True, "d": None}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "a: !!int abc\n",
            ("YAML syntax: 'abc' is not a valid int; quote it if it is a string", 1, 4),
        ),
        (
            "a: 1\nb: !!float x\n",
            ("YAML syntax: 'x' is not a valid float; quote it if it is a string", 2, 4),
        ),
        (
            "a: !!bool maybe\n",
            ("YAML syntax: 'maybe' is not a valid bool; quote it if it is a string", 1, 4),
        ),
        ("a: !!int\n", ("YAML syntax: '' is not a valid int; quote it if it is a string", 1, 4)),
        ("a: 0b_\n", ("YAML syntax: '0b_' is not a valid int; quote it if it is a string", 1, 4)),
        ("- 0x_\n", ("YAML syntax: '0x_' is not a valid int; quote it if it is a string", 1, 3)),
    ],
)
def test_scalars_that_cannot_be_converted_are_syntax_errors(
    text: str, error: tuple[str, int, int]
) -> None:
    assert syntax_error(text) == error


def test_mapping_keys_are_always_strings() -> None:
    (document,) = parse("1: a\ntrue: b\n~: c\n1.5: d\n")
    assert document.data == {"1": "a", "true": "b", "~": "c", "1.5": "d"}


def test_non_scalar_keys_are_an_error() -> None:
    assert syntax_error("a: 1\n? [x, y]\n: 2\n") == ("mapping keys must be scalars", 2, 3)


# --- duplicate keys, merge keys, aliases ------------------------------------------------------


def test_a_duplicate_key_is_an_error_at_the_second_key() -> None:
    text = dedent(
        """
        spec:
          hosts: [a]
          http: []
          hosts: [b]
        """
    )
    assert syntax_error(text) == (
        "duplicate key 'hosts': a key may appear once per mapping, remove one",
        4,
        3,
    )


def test_a_duplicate_key_in_a_flow_mapping_is_an_error() -> None:
    assert syntax_error("---\nx: {a: 1, b: 2, a: 3}\n") == (
        "duplicate key 'a': a key may appear once per mapping, remove one",
        2,
        17,
    )


def test_a_duplicate_key_in_a_later_document_is_an_error() -> None:
    assert syntax_error("a: 1\n---\nb: 1\nb: 2\n") == (
        "duplicate key 'b': a key may appear once per mapping, remove one",
        4,
        1,
    )


def test_the_same_key_in_different_mappings_is_fine() -> None:
    (document,) = parse("a: {name: x}\nb: {name: y}\n")
    assert document.data == {"a": {"name": "x"}, "b": {"name": "y"}}


def test_merge_keys_copy_the_anchored_mapping_and_explicit_keys_override_it() -> None:
    text = dedent(
        """
        base: &base {port: 80, name: http}
        after:
          <<: *base
          port: 8080
        before:
          port: 9090
          <<: *base
        """
    )
    (document,) = parse(text)
    assert document.data == {
        "base": {"port": 80, "name": "http"},
        "after": {"port": 8080, "name": "http"},
        "before": {"port": 9090, "name": "http"},
    }


def test_a_merge_list_gives_precedence_to_earlier_mappings() -> None:
    text = "a: &a {x: 1}\nb: &b {x: 2, y: 2}\nc:\n  <<: [*a, *b]\n"
    (document,) = parse(text)
    assert document.data["c"] == {"x": 1, "y": 2}


def test_an_explicit_key_twice_after_a_merge_is_still_a_duplicate() -> None:
    text = "a: &a {x: 1}\nc:\n  <<: *a\n  x: 2\n  x: 3\n"
    assert syntax_error(text) == (
        "duplicate key 'x': a key may appear once per mapping, remove one",
        5,
        3,
    )


def test_a_merge_of_a_scalar_is_an_error() -> None:
    assert syntax_error("c:\n  <<: 5\n") == ("a merge key (<<) needs a mapping", 2, 7)


def test_a_quoted_merge_key_is_an_ordinary_key() -> None:
    (document,) = parse("c:\n  '<<': 5\n")
    assert document.data == {"c": {"<<": 5}}


def test_aliases_copy_the_anchored_value() -> None:
    (document,) = parse("a: &labels {app: web}\nb: *labels\n")
    assert document.data == {"a": {"app": "web"}, "b": {"app": "web"}}


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("a: &x [*x]\n", 1, 4),
        ("- &x [*x]\n", 1, 3),
        ("a: &x\n  b: *x\n", 1, 4),
        ("a: &x\n  b:\n    - c: *x\n", 1, 4),
    ],
)
def test_a_recursive_alias_is_an_error_not_a_crash(text: str, line: int, column: int) -> None:
    assert syntax_error(text) == (
        "recursive alias: a node contains itself; point the alias elsewhere",
        line,
        column,
    )


# --- syntax errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("a: b: c\n", ("YAML syntax: mapping values are not allowed in this context", 1, 5)),
        ("a: [1, 2\nb: 3\n", ("YAML syntax: did not find expected ',' or ']'", 2, 2)),
        ("a:\n\tb: 1\n", ("YAML syntax: found character that cannot start any token", 2, 1)),
        ("a: 'open\n", ("YAML syntax: found unexpected end of stream", 2, 1)),
        ("a: *nowhere\n", ("YAML syntax: found undefined alias", 1, 4)),
        ("a: 1\n---\nb: [\n", ("YAML syntax: did not find expected node content", 4, 1)),
        ("a:\n  - b\n c: 1\n", ("YAML syntax: did not find expected key", 3, 2)),
        ("a: 1\n  b: 2\n", ("YAML syntax: mapping values are not allowed in this context", 2, 4)),
        ("a: @x\n", ("YAML syntax: found character that cannot start any token", 1, 4)),
        (
            "a: 1\nb: x\x07y\n",
            ("YAML syntax: character #x0007 is not allowed in YAML; remove it", 2, 5),
        ),
        ("a: \x00\n", ("YAML syntax: character #x0000 is not allowed in YAML; remove it", 1, 4)),
    ],
)
def test_syntax_errors_carry_a_message_line_and_column(
    text: str, error: tuple[str, int, int]
) -> None:
    assert syntax_error(text) == error


@pytest.mark.parametrize("text", ["[" * 5000, "- " * 5000 + "x\n", "{a: " * 3000])
def test_very_deep_nesting_is_an_error_not_a_crash(text: str) -> None:
    message, line, _ = syntax_error(text)
    assert message == "YAML syntax: exceeded maximum nesting depth"
    assert line == 1


def test_a_syntax_error_in_one_document_fails_the_whole_stream() -> None:
    with pytest.raises(YamlSyntaxError):
        parse("a: 1\n---\nb: c: d\n")


# --- locate -----------------------------------------------------------------------------------

SERVICE = dedent(
    """
    apiVersion: v1
    kind: Service
    metadata:
      name: web
    spec:
      ports:
      - name: http
        port: 80
      - {name: grpc, port: 81}
    ---

    ---
    kind: Other
    spec:
      list: [a, b, {c: d}]
    """
)


@pytest.mark.parametrize(
    ("doc", "path", "position"),
    [
        (0, (), (1, 1)),
        (0, ("kind",), (2, 1)),
        (0, ("metadata", "name"), (4, 3)),
        (0, ("spec", "ports"), (6, 3)),
        (0, ("spec", "ports", 0), (7, 5)),
        (0, ("spec", "ports", 0, "port"), (8, 5)),
        (0, ("spec", "ports", 1), (9, 5)),
        (0, ("spec", "ports", 1, "port"), (9, 18)),
        (2, (), (13, 1)),
        (2, ("spec", "list", 1), (15, 13)),
        (2, ("spec", "list", 2, "c"), (15, 17)),
    ],
)
def test_locate_finds_keys_sequence_items_and_nested_paths(
    doc: int, path: tuple[str | int, ...], position: tuple[int, int]
) -> None:
    assert locate(SERVICE, doc, path) == position


@pytest.mark.parametrize(
    ("path", "position"),
    [
        (("spec", "selector"), (5, 1)),
        (("spec", "ports", 0, "targetPort"), (7, 5)),
        (("spec", "ports", 0, "missing", "deeper"), (7, 5)),
        (("spec", "ports", 5, "port"), (6, 3)),
        (("metadata", "name", "below-a-scalar"), (4, 3)),
        (("spec", 0), (5, 1)),
        (("nothing",), (1, 1)),
    ],
)
def test_locate_falls_back_to_the_deepest_existing_node(
    path: tuple[str | int, ...], position: tuple[int, int]
) -> None:
    assert locate(SERVICE, 0, path) == position


def test_locate_counts_empty_documents_like_parse_does() -> None:
    text = "---\n---\nkind: Service\nspec: {}\n"
    (document,) = parse(text)
    assert document.index == 1
    assert locate(text, document.index, ("spec",)) == (4, 1)


def test_locate_of_a_document_that_does_not_exist_is_the_first_line() -> None:
    assert locate(SERVICE, 9, ("kind",)) == (1, 1)


def test_locate_in_text_that_does_not_parse_is_the_first_line() -> None:
    assert locate("a: [\n", 0, ("a",)) == (1, 1)


def test_locate_still_finds_documents_before_a_syntax_error() -> None:
    assert locate("x: 1\na: 2\n---\nb: [\n", 0, ("a",)) == (2, 1)


def test_locate_through_an_alias_gives_the_anchored_node() -> None:
    text = "x: &a {y: 1}\nz: *a\n"
    assert locate(text, 0, ("z", "y")) == (1, 8)


def test_locate_of_a_merged_key_gives_the_mapping_that_merges_it() -> None:
    text = "x: &a {y: 1}\nz:\n  <<: *a\n"
    assert locate(text, 0, ("z", "y")) == (2, 1)


def test_locate_matches_quoted_keys_by_their_value() -> None:
    assert locate('a:\n  "b": 1\n', 0, ("a", "b")) == (2, 3)


@pytest.mark.parametrize(("given", "expected"), [(None, "0"), ("1", "1")])
def test_yaml_rs_mimalloc_is_kept_off_huge_pages_unless_the_environment_says(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "MIMALLOC_ALLOW_THP"}
    if given is not None:
        env["MIMALLOC_ALLOW_THP"] = given
    code = (
        "import os, sys, controlplane.config.yamlsource as y; "
        "assert 'yaml_rs' in sys.modules; print(os.environ['MIMALLOC_ALLOW_THP'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout == f"{expected}\n"
