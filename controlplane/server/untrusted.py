"""Client-supplied text on its way into the log.

Anything a client sends can be as long as the receive limit allows: a NACK's
``error_detail``, a node id or cluster, a type URL, a version or nonce. Logged
as is, twenty 8 MB NACKs write 168 MB of log. :func:`clip` keeps the first
:data:`TEXT_LIMIT` characters of such text and says how long it was.

A client that NACKs the same thing over and over would still write a line per
NACK. :class:`RepeatedNacks` (one per stream) lets the first NACK of a run
through and counts the identical ones after it (same type, same rejected
version, same message); the count is reported once the run ends, on a
different NACK or an ACK of that type or when the stream closes.
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT_LIMIT = 1024
"""Characters of one client-supplied string kept in a log line."""


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text``, or its first ``limit`` characters and ``... (N bytes)`` if longer."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text.encode('utf-8', 'replace'))} bytes)"


@dataclass(slots=True)
class _Run:
    rejected_version: str
    message_hash: int
    message_length: int
    repeated: int = 0


@dataclass(frozen=True, slots=True)
class EndedRun:
    """Identical NACKs that were counted rather than logged."""

    type_url: str
    rejected_version: str
    repeated: int


class RepeatedNacks:
    """Per type, the run of identical NACKs a stream is in."""

    __slots__ = ("_runs",)

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}

    def nack(
        self, type_url: str, rejected_version: str, message: str
    ) -> tuple[bool, EndedRun | None]:
        """Note a NACK: (whether to log it, the run it ends if that had repeats)."""
        run = self._runs.get(type_url)
        if (
            run is not None
            and run.rejected_version == rejected_version
            and run.message_length == len(message)
            and run.message_hash == hash(message)
        ):
            run.repeated += 1
            return False, None
        self._runs[type_url] = _Run(rejected_version, hash(message), len(message))
        return True, _ended(type_url, run)

    def ack(self, type_url: str) -> EndedRun | None:
        """Note an ACK: the run of NACKs it ends, if that had repeats."""
        return _ended(type_url, self._runs.pop(type_url, None)) if self._runs else None

    def close(self) -> list[EndedRun]:
        """Every run with repeats not yet reported (the stream is closing)."""
        ended = [_ended(type_url, run) for type_url, run in self._runs.items()]
        self._runs.clear()
        return [run for run in ended if run is not None]


def _ended(type_url: str, run: _Run | None) -> EndedRun | None:
    if run is None or not run.repeated:
        return None
    return EndedRun(type_url, run.rejected_version, run.repeated)
