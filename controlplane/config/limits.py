"""How much input one config file may be: the bounds that keep reading it cheap.

A config file is untrusted input: whoever can write to the directory can make
the control plane parse it. Without bounds, a few hundred bytes of nested YAML
anchors (a "billion laughs") expand into gigabytes, and one huge file stalls
every reload behind it. :class:`ConfigLimits` holds the bounds, checked in this
order, each as early and as cheaply as it can be:

* ``max_file_bytes``: the file's size, taken from ``fstat`` before anything is
  read (:func:`read_limited`), so a file above it is never read into memory;
* ``max_documents_per_file``: counted as libyaml composes the documents, so
  composition stops at the first document over the limit;
* ``max_document_bytes``: the text between two document markers (``---`` or
  ``...`` at the start of a line, where libyaml always ends a document),
  measured before that document is composed; only files larger than the limit
  pay for the scan;
* ``max_alias_nodes``: what aliases may add to one document. A document with
  anchors may build at most as many values as it has characters plus this
  many; a value takes at least one character of text, so an alias-free
  document never comes near its character count, and the budget goes only to
  what aliases repeat. Files without ``&`` have no anchors and are not
  counted at all;
* ``max_string_bytes``: any one string (a key or a value). Only a document
  longer than the limit can hold such a string, so only those are searched.

The defaults are far above any real configuration (see ``docs/limits.md``)
and far below what would hurt the server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class ConfigLimits:
    """Bounds on one config file's input; every field is a positive integer."""

    max_file_bytes: int = 4 * MIB
    max_documents_per_file: int = 10_000
    max_document_bytes: int = 3 * MIB // 2
    max_alias_nodes: int = 100_000
    max_string_bytes: int = 64 * KIB

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")


DEFAULT_LIMITS = ConfigLimits()


class FileTooLargeError(Exception):
    """The file is larger than the limit; ``size`` is what ``fstat`` (or reading) found."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the file is {size:,} bytes")
        self.size = size


def read_limited(path: Path, max_bytes: int) -> bytes:
    """The content of ``path``; raises :class:`FileTooLargeError` past ``max_bytes``.

    The size is checked on the open file before reading, and the read itself
    stops one byte past the limit, so a file that grows in between is caught
    without being read whole either.
    """
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > max_bytes:
            raise FileTooLargeError(size)
        # read(n) allocates n bytes up front: ask for what fstat saw, then for the rest.
        raw = file.read(size + 1)
        if len(raw) > size:
            raw += file.read(max_bytes + 1 - len(raw))
    if len(raw) > max_bytes:
        raise FileTooLargeError(len(raw))
    return raw


def describe_bytes(size: int) -> str:
    """``16 MiB``, ``64 KiB``, ``1.5 MiB`` or ``100 bytes``: sizes as the docs write them."""
    for unit, scale in (("MiB", MIB), ("KiB", KIB)):
        if size >= scale and size * 10 % scale == 0:
            return f"{size / scale:g} {unit}"
    return f"{size:,} bytes"
