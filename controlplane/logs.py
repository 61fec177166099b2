"""structlog configuration: console output for people, JSON lines for machines.

Every module logs with ``structlog.get_logger(__name__)`` and binds context
(``node_id``, ``stream``) where it has it. :func:`configure` is called once by
the command line; library use and tests keep structlog's defaults.

A failure to log never stops anything else. Loggers write through one
:class:`LogSink`, which swallows the errors of a destination that cannot take
the line (a full disk, a closed pipe, a closed file) and counts the lines it
lost; the first line that gets through again is preceded by a
``log_lines_dropped`` warning with that count. Without this, ``stderr`` on a
full disk would turn every log call into an ``OSError``, failing new xDS
streams and ending the config watcher's thread.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

import structlog

DROPPED_EVENT = "log_lines_dropped"


class LogSink:
    """Writes whole lines to ``file``; never raises :class:`OSError` or :class:`ValueError`.

    ``notice(count)`` renders the line that reports ``count`` lost lines.
    """

    def __init__(self, file: TextIO, notice: Callable[[int], str]) -> None:
        self._file = file
        self._notice = notice
        self._lock = threading.Lock()
        self._dropped = 0

    @property
    def dropped(self) -> int:
        """Lines lost since the last one that was written."""
        return self._dropped

    def write_line(self, line: str) -> None:
        with self._lock:
            if self._dropped:
                if not self._write(self._notice(self._dropped)):
                    self._dropped += 1
                    return
                self._dropped = 0
            if not self._write(line):
                self._dropped += 1

    def _write(self, line: str) -> bool:
        try:
            self._file.write(line + "\n")
            self._file.flush()
        except (OSError, ValueError):
            return False
        return True


class SinkLogger:
    """structlog's ``PrintLogger`` surface over a :class:`LogSink`."""

    def __init__(self, sink: LogSink) -> None:
        self._sink = sink

    def msg(self, message: str) -> None:
        self._sink.write_line(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = failure = msg


def configure(fmt: str = "console", level: str = "info", file: TextIO | None = None) -> LogSink:
    """Send structured events to ``file`` (stderr) as ``console`` text or ``json`` lines."""
    out = sys.stderr if file is None else file
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=_isatty(out))
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)

    def notice(count: int) -> str:
        event: Any = {"event": DROPPED_EVENT, "count": count}
        for processor in (structlog.processors.add_log_level, timestamper, renderer):
            event = processor(None, "warning", event)
        return str(event)

    sink = LogSink(out, notice)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=lambda *args: SinkLogger(sink),
        cache_logger_on_first_use=True,
    )
    return sink


def _isatty(file: TextIO) -> bool:
    try:
        return file.isatty()
    except (OSError, ValueError):
        return False
