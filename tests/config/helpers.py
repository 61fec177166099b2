"""Small helpers for the config tests: write documents, read them, place their findings."""

from __future__ import annotations

import textwrap

from controlplane.config.diagnostics import Diagnostic
from controlplane.config.document import FileResult, read_text
from controlplane.config.limits import DEFAULT_LIMITS, ConfigLimits
from controlplane.config.resources import Resource, Spec
from controlplane.config.store import resolve_positions

FILE = "config.yaml"
ISTIO = "networking.istio.io/v1"


def dedent(text: str) -> str:
    """``text`` without its common indentation and without leading newlines."""
    return textwrap.dedent(text).lstrip("\n")


def doc(
    kind: str,
    spec: str,
    *,
    name: str = "x",
    namespace: str | None = None,
    api: str = ISTIO,
) -> str:
    """A document of ``kind`` with ``spec`` (YAML, dedented) nested under ``spec:``.

    Without a namespace the spec's first line is line 6 of the document; with
    one, line 7.
    """
    meta = f"  name: {name}\n" + (f"  namespace: {namespace}\n" if namespace else "")
    body = textwrap.indent(dedent(spec), "  ")
    return f"apiVersion: {api}\nkind: {kind}\nmetadata:\n{meta}spec:\n{body}"


def read(text: str, file: str = FILE) -> FileResult:
    return read_text(file, dedent(text))


def diagnose(
    text: str, file: str = FILE, limits: ConfigLimits = DEFAULT_LIMITS
) -> list[Diagnostic]:
    """Every finding of ``text`` with its position, the way the store resolves them."""
    result = read_text(file, text, limits)
    if result.syntax_error is not None:
        return [f.at(*result.syntax_error) for f in result.findings]
    return resolve_positions(result.findings, {file: text})


def brief(diagnostics: list[Diagnostic]) -> list[tuple[str, int, int, str]]:
    """``(code, line, column, field)`` of each diagnostic, in order."""
    return [(d.code, d.line, d.column, d.field) for d in diagnostics]


def only_resource(text: str) -> Resource:
    """The one resource of ``text``, which must load without any finding."""
    result = read_text(FILE, text)
    assert result.findings == ()
    (resource,) = result.resources
    return resource


def spec_of(text: str) -> Spec:
    return only_resource(text).spec
