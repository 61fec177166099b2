"""Collecting findings while one document is converted.

Converters read a spec that already passed the schema check (types are
right, unknown fields were reported) and record semantic problems through a
:class:`Reporter`, which knows the file, document and resource they concern.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.config.diagnostics import Finding, Severity

Path = tuple[str | int, ...]


@dataclass(slots=True)
class Reporter:
    file: str
    doc: int
    resource: str
    findings: list[Finding] = field(default_factory=list)

    def error(self, code: str, path: Path, message: str) -> None:
        self.findings.append(Finding(code, self.file, self.doc, path, self.resource, message))

    def warn(self, code: str, path: Path, message: str) -> None:
        self.findings.append(
            Finding(code, self.file, self.doc, path, self.resource, message, Severity.WARNING)
        )

    @property
    def failed(self) -> bool:
        return bool(self.findings) and any(f.is_error for f in self.findings)
