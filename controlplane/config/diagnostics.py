"""Diagnostics: what validation says about a configuration.

A :class:`Diagnostic` names the file, line and column, the resource
(``Kind namespace/name``), the field path (``spec.http[0].route[1].weight``)
and a message that says how to fix the problem. Codes are stable: tools and
people can grep for them, and ``docs/validation.md`` lists them all.

Validators record a diagnostic with a *path* first; the line and column are
filled in afterwards by :mod:`controlplane.config.yamlsource`, which finds the
node at that path. That keeps the fast path (no errors) free of position
bookkeeping.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    slug: str
    severity: Severity
    summary: str


def _codes(*codes: Code) -> dict[str, Code]:
    return {c.code: c for c in codes}


E, W = Severity.ERROR, Severity.WARNING

CODES: dict[str, Code] = _codes(
    Code("PF100", "yaml-syntax", E, "The file is not valid YAML."),
    Code("PF101", "not-a-resource", E, "A document is not a mapping with apiVersion and kind."),
    Code("PF102", "unknown-kind", E, "The kind looks like a misspelling of one Pilotfish reads."),
    Code("PF103", "unknown-api-version", E, "The apiVersion is not one of the kind's."),
    Code("PF104", "invalid-name", E, "metadata.name or namespace is missing or not a DNS label."),
    Code("PF105", "file-unreadable", E, "The file could not be read or is not UTF-8."),
    Code("PF106", "file-too-large", E, "The file is larger than --max-file-bytes."),
    Code("PF107", "too-many-documents", E, "The file has more than --max-documents-per-file."),
    Code("PF108", "document-too-large", E, "A document is larger than --max-document-bytes."),
    Code("PF109", "alias-expansion", E, "Aliases expand a document past --max-alias-nodes."),
    Code("PF110", "unknown-field", E, "The field does not exist in the resource's API."),
    Code(
        "PF111", "field-not-acted-on", W, "Istio has the field, Pilotfish accepts and ignores it."
    ),
    Code("PF112", "wrong-type", E, "The value has the wrong type."),
    Code("PF113", "missing-field", E, "A required field is missing."),
    Code("PF114", "invalid-value", E, "The value is not allowed for the field."),
    Code("PF115", "invalid-regex", E, "The regular expression does not compile."),
    Code(
        "PF116", "invalid-duration", E, "The duration is not an Istio duration like 1.5s or 100ms."
    ),
    Code(
        "PF117", "weights-sum-to-zero", E, "Several route destinations have weights summing to 0."
    ),
    Code("PF118", "unknown-load-balancer", E, "The load balancer is not one Istio defines."),
    Code("PF119", "duplicate-subset", E, "Two subsets of a DestinationRule share a name."),
    Code("PF120", "conflicting-fields", E, "Fields that exclude each other are both set."),
    Code("PF121", "string-too-long", E, "A string is longer than --max-string-bytes."),
    Code("PF122", "kind-not-read", W, "A document of a kind Pilotfish does not read is skipped."),
    Code("PF123", "tls-not-supported", E, "The resource asks for TLS, not supported yet."),
    Code(
        "PF124",
        "workload-not-routable",
        W,
        "A workload without address is on another network and receives no traffic.",
    ),
    Code("PF200", "host-not-found", E, "A destination host is no Service or ServiceEntry."),
    Code("PF201", "subset-not-found", E, "No DestinationRule for the host defines the subset."),
    Code(
        "PF202",
        "port-required",
        E,
        "The host has several ports and the route cannot take one from its listener.",
    ),
    Code("PF203", "port-not-exposed", E, "The host does not expose the destination port."),
    Code("PF204", "gateway-not-found", E, "A Gateway named by a VirtualService does not exist."),
    Code("PF205", "subset-selects-nothing", W, "A subset's labels select no workload."),
    Code(
        "PF206",
        "host-conflict",
        W,
        "Two VirtualServices claim one host for sidecars; the first in file order wins.",
    ),
    Code("PF207", "unreachable-rule", W, "A rule follows a catch-all rule and never matches."),
    Code("PF208", "duplicate-resource", E, "The same kind/namespace/name is defined twice."),
    Code("PF209", "rule-host-not-found", W, "A DestinationRule names a host no service has."),
    Code(
        "PF210",
        "duplicate-host",
        E,
        "A Service and a ServiceEntry, or two namespaces, define one host.",
    ),
    Code("PF211", "policy-conflict", E, "Two DestinationRules name the same host."),
    Code("PF212", "translation-failed", E, "The file's resources cannot be translated."),
    Code(
        "PF213",
        "endpoint-weights-overflow",
        E,
        "A service's endpoint weights in one locality sum past 4294967295 (Envoy's uint32).",
    ),
)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    code: str
    file: str
    line: int
    column: int
    resource: str
    field: str
    message: str

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def render(self) -> str:
        """Compiler style: ``path:line:col: error[PF110] message``."""
        where = (
            f" ({self.resource}, {self.field})"
            if self.resource and self.field
            else (f" ({self.resource})" if self.resource else "")
        )
        return (
            f"{self.file}:{self.line}:{self.column}: "
            f"{self.severity.value}[{self.code}] {self.message}{where}"
        )

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["severity"] = self.severity.value
        return data

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.file, self.line, self.column, self.code, self.message)


@dataclass(frozen=True, slots=True)
class Finding:
    """A diagnostic before its position is known: it points at a document and a field path.

    ``path`` is a tuple of mapping keys and sequence indexes below the
    document root, for example ``("spec", "http", 0, "route", 1, "weight")``.
    """

    code: str
    file: str
    doc: int
    path: tuple[str | int, ...]
    resource: str
    message: str
    severity: Severity | None = None

    @property
    def effective_severity(self) -> Severity:
        return self.severity or CODES[self.code].severity

    @property
    def is_error(self) -> bool:
        return self.effective_severity is Severity.ERROR

    def at(self, line: int, column: int) -> Diagnostic:
        return Diagnostic(
            severity=self.effective_severity,
            code=self.code,
            file=self.file,
            line=line,
            column=column,
            resource=self.resource,
            field=format_path(self.path),
            message=self.message,
        )


def format_path(path: Sequence[str | int]) -> str:
    """``("spec", "http", 0, "route")`` -> ``spec.http[0].route``."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        else:
            out.append(("." if out else "") + part)
    return "".join(out)


def render_json(diagnostics: Iterable[Diagnostic]) -> str:
    return json.dumps({"messages": [d.to_json() for d in diagnostics]}, indent=2)
