"""Reading YAML fast, and finding where things are in it afterwards.

Loading is the hot path of a large config directory. Two parsers share it:

* the *fast path*: ``yaml_rs`` (a YAML parser in Rust, about 3x faster than
  the exact path here), one call per document. It implements YAML 1.2 and
  knows nothing of positions, so it is used only on a file in which it cannot
  differ from the exact path (:func:`is_fast_exact`): printable ASCII without
  tabs, no anchors, tags, directives, explicit, merge or empty keys, flow
  mappings only on one line and with plain keys, not deeply nested, and no
  plain scalar whose meaning YAML 1.1 and 1.2 disagree on (``yes``/``on``,
  ``0755``, ``1_000``, ``1e3``, ``1:30``, a number or ``true`` as a key...).
  The check errs towards the exact path, and a file ``yaml_rs`` rejects goes
  the exact way too, so every diagnostic, with its line and column, comes from
  the exact path. The documents are split at their ``---`` markers as libyaml
  splits them, which gives each its index, first line and size without
  positions from the parser;
* the *exact path* (:func:`parse_exact`): libyaml (PyYAML's C parser), with
  two shortcuts over ``yaml.CSafeLoader``: tag resolution is cached per
  scalar text (the same few strings repeat thousands of times), and nodes
  become plain ``dict``/``list``/scalars in one tight recursive pass instead
  of PyYAML's generic constructor. Semantics stay PyYAML's safe YAML 1.1 (the
  same resolver decides what is an int or a bool), except that duplicate keys
  are an error, as they are for ``kubectl``.

Positions are not kept: :func:`locate` re-composes one document and walks a
field path to its node only when a diagnostic needs a line and column. A
directory with no errors never pays for position bookkeeping.

PyYAML exceptions are wrapped, once, into :class:`YamlSyntaxError`. The exact
path and :func:`locate` live in :mod:`~controlplane.config.yamlexact`, imported
when first used: a server whose files all take the fast path never loads PyYAML.

Parsing is bounded by :class:`~controlplane.config.limits.ConfigLimits`: the
size of each document is checked on the text before libyaml composes it, the
number of documents as they are composed, and, in files with anchors, the
values built per document, so that aliases cannot multiply a few hundred
bytes into gigabytes. A file over a limit raises :class:`YamlLimitError`,
which names its diagnostic code; files without ``&`` never pay for counting.

``yaml_rs`` allocates with mimalloc, which by default asks the kernel for
transparent huge pages for its arena: after a cold start of 1,000 services a
server kept 6 MiB resident there in 2 MiB pages, for the little mimalloc still
held. This module turns that off (``MIMALLOC_ALLOW_THP=0``, read when the
library loads) unless the environment already says otherwise.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from controlplane.config.limits import DEFAULT_LIMITS, ConfigLimits, describe_bytes
from controlplane.errors import PilotfishError

os.environ.setdefault("MIMALLOC_ALLOW_THP", "0")
try:
    from yaml_rs import loads as _fast_loads
except ImportError:  # pragma: no cover - the exact path alone still reads everything
    _fast_loads = None  # type: ignore[assignment]

_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_MERGE = "tag:yaml.org,2002:merge"


class YamlSyntaxError(PilotfishError):
    def __init__(self, message: str, line: int, column: int) -> None:
        self.line = line
        self.column = column
        super().__init__(message)


class YamlLimitError(YamlSyntaxError):
    """The text is over one of the input limits; ``code`` is the diagnostic code that says which."""

    def __init__(self, code: str, message: str, line: int, column: int = 1) -> None:
        self.code = code
        super().__init__(message, line, column)


@dataclass(frozen=True, slots=True, init=False)
class Document:
    """One YAML document of a file: its index, first line (1-based) and plain data.

    ``size`` is the length in characters of the document's text, from its
    first node to its last.
    """

    index: int
    line: int
    data: Any
    size: int = field(default=0, compare=False)

    def __init__(self, index: int, line: int, data: Any, size: int = 0) -> None:
        # Set directly, as the records of controlplane.config.resources: one per document.
        _set_index(self, index)
        _set_line(self, line)
        _set_data(self, data)
        _set_size(self, size)


_set_index, _set_line, _set_data, _set_size = (
    getattr(Document, name).__set__ for name in ("index", "line", "data", "size")
)


_implicit_tags: dict[str, str] = {}


_scalar_cache: dict[tuple[str, str], Any] = {}
_Cache = TypeVar("_Cache", bound=set[Any] | dict[Any, Any])
_load_caches: list[set[Any] | dict[Any, Any]] = []


def load_cache(cache: _Cache) -> _Cache:
    """``cache`` (of strings met while reading), emptied with the scalar caches after each load."""
    _load_caches.append(cache)
    return cache


_shared: dict[str, str] = load_cache({})
_MAX_SHARED = 200_000


def share(text: str) -> str:
    """``text``, or the equal string met first in this load: one object for the many
    documents that repeat a namespace, a label or a host.

    A table per load rather than ``sys.intern``, whose strings outlive the
    files they came from on Python 3.12, where interned strings are immortal.
    """
    found = _shared.get(text)
    if found is not None:
        return found
    if len(_shared) < _MAX_SHARED:
        _shared[text] = text
    return text


def forget_scalars() -> None:
    """Empty the caches of scalar tags and values, and those of :func:`load_cache`.

    They pay off within one load, where the same strings repeat thousands of
    times; kept for good, their entries (scattered among the objects of the
    files they came from) would hold on to the memory of files long deleted.
    """
    _implicit_tags.clear()
    _scalar_cache.clear()
    _line_kinds.clear()
    _plain_shapes.clear()
    for cache in _load_caches:
        cache.clear()


# libyaml ends a document at every line that starts with one of these markers.
_DOCUMENT_MARKER = re.compile(r"^(?:---|\.\.\.)(?=[ \t\r\n]|\Z)", re.MULTILINE)


def _utf8_size(text: str, limit: int) -> int:
    """The UTF-8 size of ``text``, encoding it only when its length leaves the answer open."""
    if len(text) > limit or 4 * len(text) <= limit:
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _check_document_sizes(text: str, limit: int) -> None:
    """Raise for the first document whose text is over ``limit`` bytes, before composing any.

    Spans of fewer than ``limit // 4`` characters are within the limit in any
    encoding, so the scan leaps half that far from each marker to the next one
    and only looks at the markers it leapt over when the gap is long: a file of
    many small documents costs a few searches, not one step per document.
    """
    short = limit // 4
    leap = max(1, short // 2)
    start = 0
    while len(text) - start > short:
        match = _DOCUMENT_MARKER.search(text, start + leap)
        end = match.start() if match is not None else len(text)
        if end - start > short:
            last = start
            for inner in _DOCUMENT_MARKER.finditer(text, start + 1, start + leap):
                last = inner.start()
            _check_document_size(text, last, end, limit)
        if match is None:
            return
        start = end


def _check_document_size(text: str, start: int, end: int, limit: int) -> None:
    if end - start > limit // 4 and (size := _utf8_size(text[start:end], limit)) > limit:
        raise YamlLimitError(
            "PF108",
            f"the document is {size:,} bytes, more than the limit of "
            f"{describe_bytes(limit)}; split it into smaller resources",
            text.count("\n", 0, start) + 1,
        )


# Where a plain scalar (or a key) may start: the text's start, after blanks or a flow indicator.
_TOKEN = r"(?:(?<=[\s\[{,:])|^)"
# After a number both parsers read alike: it ends there (no more characters, not a key).
_ENDS = r"(?=[ ]*(?:\n|\Z)|[,\]}]|[ ]+[^ :\n])"
_INEXACT = re.compile(
    "|".join(
        (
            # Not printable ASCII, or a tab, a carriage return (the parsers differ on some).
            r"[^\n\x20-\x7e]",
            # Anchors (their expansion is budgeted on the exact path) and tags.
            _TOKEN + r"[&!]",
            # Directives, document end markers, a node on a start marker's line.
            r"^(?:%|\.\.\.(?=[ \n]|\Z)|---[ ]+[^ \n#])",
            # Explicit keys (in flow, libyaml reads ``?x`` as one), merge keys, empty keys.
            r"(?:(?<=[\s\[{,])|^)(?:\?|<<|:)",
            # A flow collection as a key.
            r"[\]}][ ]*:(?=[ \n,\[\]{}]|\Z)",
            # Deep nesting in block style (the exact path's limit is several hundred levels).
            r"^[ -]{100}",
            # YAML 1.1 booleans, which YAML 1.2 reads as strings.
            _TOKEN + r"(?:[yY]es|YES|[nN]o|NO|[oO]n|ON|[oO]ff|OFF)(?=[\s,\]}:]|\Z)",
            # Keys that YAML 1.2 reads as booleans or null (the exact path keeps a key's text).
            _TOKEN
            + r"(?:true|True|TRUE|false|False|FALSE|null|Null|NULL|~)[ ]*:(?=[\s,\[\]{}]|\Z)",
            # Anything that starts like a number, unless a decimal number, an address or a
            # duration that ends there: octal, hexadecimal, binary, 1_000, 1e3, 1:30, .inf...
            _TOKEN
            + r"(?!-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[num]?s|m|h)?"
            + _ENDS
            + r"|[0-9]+(?:\.[0-9]+){2,}(?:/[0-9]+)?"
            + _ENDS
            + r")[-+]?[._0-9]",
        )
    ),
    re.MULTILINE,
)
# In a flow mapping every entry is a key, with a value or not (``{0, a: 1}``): a key
# that could be a number, a boolean or null reads differently, and a collection cannot
# be one. Flow mappings must close on the line they open, so that each of their keys is
# seen with its ``{`` or ``,``.
_FLOW_MAPPING = re.compile(_TOKEN + r"\{", re.MULTILINE)
_FLOW_KEY = re.compile(
    r"[{,][ ]*(?:[-+]?[._0-9]|[\[{]"
    r"|(?:true|True|TRUE|false|False|FALSE|null|Null|NULL|~)(?=[ ,}:]|\Z))"
)


def _bad_braces(line: str) -> bool:
    if "{" not in line and "}" not in line:
        return False
    return line.count("{") != line.count("}") or (
        _FLOW_MAPPING.search(line) is not None and _FLOW_KEY.search(line) is not None
    )


# In a flow collection libyaml refuses some ``:`` that YAML 1.2 allows (``[a:b]``).
_FLOW = re.compile(_TOKEN + r"[\[{]", re.MULTILINE)
_COLON_IN_SCALAR = re.compile(r":[^ \n]")
# The first line of a document that is neither blank nor a comment: where its node starts.
_NODE_LINE = re.compile(r"^[ ]*[^ \n#]", re.MULTILINE)
# Deeper flow nesting than this goes the exact way, which has the nesting limit.
_MAX_FAST_FLOW = 200
# Every pattern above looks at one line only and treats the digits 1-9 alike, so a line
# is judged by its shape (digits 2-9 read as 1), once: a directory repeats a few shapes.
# Shapes are bytes (UTF-8), which translate far quicker than text: no byte of a
# multi-byte character is an ASCII digit or a newline, so lines and shapes are the same.
_SHAPE = bytes.maketrans(b"23456789", b"11111111")
_INEXACT_LINE, _FLOW_LINE, _COLON_LINE = 1, 2, 4
_line_kinds: dict[bytes, int] = {}
_plain_shapes: set[bytes] = set()  # the shapes of kind 0, most lines: skipped as a set


def _line_kind(shape: bytes) -> int:
    line = shape.decode("utf-8", "surrogatepass")
    if line.lstrip(" ").startswith("#"):
        # A comment, or text in a quoted or block scalar: a string on both paths.
        kind = 0
    else:
        kind = (
            (_INEXACT_LINE if _INEXACT.search(line) is not None or _bad_braces(line) else 0)
            | (_FLOW_LINE if _FLOW.search(line) is not None else 0)
            | (_COLON_LINE if _COLON_IN_SCALAR.search(line) is not None else 0)
        )
    if len(_line_kinds) < 100_000:
        _line_kinds[shape] = kind
        if not kind:
            _plain_shapes.add(shape)
    return kind


def is_fast_exact(text: str) -> bool:
    """Whether the fast path reads ``text`` exactly as the exact path would (when it parses)."""
    if text.count("[") + text.count("{") > _MAX_FAST_FLOW:
        return False
    lines = text.encode("utf-8", "surrogatepass").translate(_SHAPE).split(b"\n")
    if _plain_shapes.issuperset(lines):
        return True
    kinds = 0
    known = _line_kinds.get
    for line in set(lines).difference(_plain_shapes):
        kind = known(line)
        kinds |= _line_kind(line) if kind is None else kind
    return not kinds & _INEXACT_LINE and kinds & (_FLOW_LINE | _COLON_LINE) != (
        _FLOW_LINE | _COLON_LINE
    )


def _document_markers(text: str) -> dict[int, None]:
    """Where each ``---`` line starts a document (``str.find`` is far quicker than a regex)."""
    markers: dict[int, None] = {}
    at = 0 if text.startswith("---") else text.find("\n---")
    while at >= 0:
        start = at if at == 0 and text.startswith("---") else at + 1
        after = start + 3
        if after == len(text) or text[after] in " \n":
            markers[start] = None
        at = text.find("\n---", after)
    return markers


def _load_all(text: str, count: int) -> list[Any] | None:
    """The data of the ``count`` documents of ``text`` in one call, or None to load them one by one.

    One call for the whole file is about twice as quick as one per document.
    Only for a file that :func:`is_fast_exact` accepted and in which every
    part between markers holds a node: ``yaml_rs`` then sees the documents
    that the markers delimit (no ``...``, directives or node on a marker line;
    a marker inside a quoted scalar is an error to it), and so returns a list
    of exactly ``count`` items, which is checked all the same.
    """
    if count < 2:
        return None
    try:
        loaded = _fast_loads(text, parse_datetime=False)
    except Exception:
        return None  # the document at fault is found (and sent the exact way) one by one
    return loaded if type(loaded) is list and len(loaded) == count else None


def _parse_fast(text: str, limits: ConfigLimits) -> list[Document] | None:
    """The documents of ``text`` by the fast path; ``None`` where only the exact path is exact."""
    if _fast_loads is None or not is_fast_exact(text):
        return None
    markers = _document_markers(text)
    starts = list(markers)
    if not starts or (starts[0] > 0 and _NODE_LINE.search(text, 0, starts[0]) is not None):
        starts.insert(0, 0)
    if len(starts) > limits.max_documents_per_file:
        return None
    starts.append(len(text))
    nodes = _node_starts(text, starts, markers)
    loaded = _load_all(text, len(nodes)) if -1 not in nodes else None
    documents: list[Document] = []
    line, counted = 1, 0
    for index, node in enumerate(nodes):
        if node < 0:
            continue
        start, end = starts[index], starts[index + 1]
        if loaded is not None:
            data = loaded[index]
        else:
            try:
                data = _fast_loads(text[start:end], parse_datetime=False)
            except Exception:
                # Its diagnostic, with line and column, comes from the exact path.
                return None
        if data is None:
            continue
        line += text.count("\n", counted, node)
        counted = node
        documents.append(Document(index, line, data, end - node))
    return documents


def _node_starts(text: str, starts: list[int], markers: dict[int, None]) -> list[int]:
    """Where the first node of each part between ``starts`` begins (its first character), or -1.

    The part of a document usually starts with its marker alone on its line and
    the node on the next: that is seen without a search.
    """
    nodes: list[int] = []
    for start, end in itertools.pairwise(starts):
        if start in markers:
            start += 3
            if text.startswith("\n", start) and start + 1 < end and text[start + 1] not in " \n#":
                nodes.append(start + 1)
                continue
        found = _NODE_LINE.search(text, start, end)
        nodes.append(found.end() - 1 if found is not None else -1)
    return nodes


def parse(text: str, limits: ConfigLimits = DEFAULT_LIMITS) -> list[Document]:
    """Every document of ``text``; empty documents are skipped.

    Raises :class:`YamlSyntaxError`, or :class:`YamlLimitError` when ``text``
    is over one of ``limits``.
    """
    if 4 * len(text) > limits.max_document_bytes:
        _check_document_sizes(text, limits.max_document_bytes)
    fast = _parse_fast(text, limits)
    return fast if fast is not None else parse_exact(text, limits)


def parse_exact(text: str, limits: ConfigLimits = DEFAULT_LIMITS) -> list[Document]:
    """:func:`parse` by the exact path alone (libyaml), whatever the text."""
    from controlplane.config import yamlexact

    return yamlexact.parse_exact(text, limits)


def locate(text: str, doc: int, path: Sequence[str | int]) -> tuple[int, int]:
    """Line and column (1-based) of the node at ``path`` in document ``doc`` of ``text``.

    A mapping key is located at the key itself. When the path goes further
    than the document (a missing field), the deepest node that exists is
    returned, which is where the missing field belongs.
    """
    return locate_all(text, [(doc, path)])[0]


def locate_all(
    text: str, wanted: Sequence[tuple[int, Sequence[str | int]]]
) -> list[tuple[int, int]]:
    """:func:`locate` for each ``(doc, path)`` of ``wanted``, composing ``text`` once.

    A file with an error in each of thousands of documents would otherwise be
    composed once per error: quadratic in the file's size.
    """
    from controlplane.config import yamlexact

    return yamlexact.locate_all(text, wanted)
