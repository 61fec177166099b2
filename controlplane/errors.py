"""The error tree.

Every exception Pilotfish raises on purpose derives from :class:`PilotfishError`.
Configuration problems are not raised one by one: they are collected as
:class:`controlplane.config.diagnostics.Diagnostic` values and carried by a
:class:`ConfigError` when a caller needs a single exception. Protocol errors
say which side broke the xDS protocol. Third-party exceptions (PyYAML,
watchdog, grpc) are wrapped once, at the module that calls the library.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controlplane.config.diagnostics import Diagnostic


class PilotfishError(Exception):
    """Base of every error Pilotfish raises deliberately."""


class ConfigError(PilotfishError):
    """Configuration could not be accepted; carries the diagnostics that say why."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        first = self.diagnostics[0].render() if self.diagnostics else "invalid configuration"
        more = len(self.diagnostics) - 1
        super().__init__(first + (f" (and {more} more)" if more > 0 else ""))


class ProtocolError(PilotfishError):
    """A peer broke the xDS protocol. ``culprit`` is ``"client"`` or ``"server"``."""

    def __init__(self, culprit: str, message: str) -> None:
        self.culprit = culprit
        super().__init__(f"{culprit} broke the xDS protocol: {message}")


class InconsistentSnapshotError(PilotfishError):
    """A snapshot references resources it does not contain (a bug; never sent)."""
