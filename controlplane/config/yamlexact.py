"""The exact path of :mod:`~controlplane.config.yamlsource`: libyaml, positions, diagnostics.

Imported on first use, not with the fast path: a directory that ``yaml_rs``
reads exactly and has no error never loads PyYAML (a server holds about
1 MiB less). What each function does, and why, is told in
:mod:`~controlplane.config.yamlsource`; its caches of scalars are shared with
it, so that :func:`~controlplane.config.yamlsource.forget_scalars` empties them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError
from yaml.resolver import Resolver

from controlplane.config.limits import DEFAULT_LIMITS, ConfigLimits
from controlplane.config.yamlsource import (
    _MAP,
    _MERGE,
    _SEQ,
    _STR,
    Document,
    YamlLimitError,
    YamlSyntaxError,
    _check_document_sizes,
    _implicit_tags,
    _scalar_cache,
)

try:
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    CParser = None  # type: ignore[assignment, misc]

_RESOLVER = Resolver()
_CONSTRUCTOR = SafeConstructor()
_SCALAR_CONSTRUCTORS = {
    "tag:yaml.org,2002:null": _CONSTRUCTOR.construct_yaml_null,
    "tag:yaml.org,2002:bool": _CONSTRUCTOR.construct_yaml_bool,
    "tag:yaml.org,2002:int": _CONSTRUCTOR.construct_yaml_int,
    "tag:yaml.org,2002:float": _CONSTRUCTOR.construct_yaml_float,
}


def _resolve_scalar(value: str, implicit: tuple[bool, bool]) -> str:
    if not implicit[0]:
        return _STR
    tag = _implicit_tags.get(value)
    if tag is None:
        tag = _RESOLVER.resolve(ScalarNode, value, implicit)  # type: ignore[no-untyped-call]
        if len(_implicit_tags) < 100_000:
            _implicit_tags[value] = tag
    return tag


if CParser is not None:

    class _FastComposer(CParser):  # type: ignore[misc, valid-type]
        """libyaml composer whose tag resolution skips PyYAML's per-node path tracking."""

        def descend_resolver(self, current_node: Any, current_index: Any) -> None:
            return None

        def ascend_resolver(self) -> None:
            return None

        def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
            if kind is ScalarNode:
                if not implicit[0]:
                    return _STR
                tag = _implicit_tags.get(value)
                return tag if tag is not None else _resolve_scalar(value, implicit)
            return _SEQ if kind is SequenceNode else _MAP

    def _compose_all(text: str) -> Iterator[Node]:
        composer = _FastComposer(text)
        try:
            while composer.check_node():
                node: Node = composer.get_node()  # type: ignore[assignment]
                yield node
        finally:
            composer.dispose()

else:  # pragma: no cover

    def _compose_all(text: str) -> Iterator[Node]:
        return yaml.compose_all(text, Loader=yaml.SafeLoader)


def _scalar(node: ScalarNode) -> Any:
    tag = node.tag
    if tag == _STR:
        return node.value
    key = (tag, node.value)
    try:
        return _scalar_cache[key]
    except KeyError:
        pass
    construct = _SCALAR_CONSTRUCTORS.get(tag)
    try:
        value = construct(node) if construct is not None else node.value
    except (ValueError, KeyError, IndexError):
        kind = tag.rsplit(":", 1)[-1]
        raise YamlSyntaxError(
            f"YAML syntax: {node.value!r} is not a valid {kind}; quote it if it is a string",
            *_mark_of(node),
        ) from None
    if len(_scalar_cache) < 100_000:
        _scalar_cache[key] = value
    return value


def _mark_of(node: Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Aliases:
    """Per document with anchors: the path being built (to catch cycles) and the values left."""

    __slots__ = ("active", "left", "limit", "line")

    def __init__(self, limit: int, line: int) -> None:
        self.active: set[int] = set()
        self.limit = limit
        self.left = limit
        self.line = line

    def spend(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise YamlLimitError(
                "PF109",
                f"aliases expand this document past {self.limit:,} values; "
                "remove the alias or repeat the values it stands for",
                self.line,
            )


def _build(node: Node, aliases: _Aliases | None) -> Any:
    """Plain data for ``node``; ``aliases`` tracks the path and budget when there are anchors."""
    cls = type(node)
    if cls is ScalarNode:
        return node.value if node.tag == _STR else _scalar(node)  # type: ignore[arg-type]
    if aliases is not None:
        ident = id(node)
        if ident in aliases.active:
            raise YamlSyntaxError(
                "recursive alias: a node contains itself; point the alias elsewhere",
                *_mark_of(node),
            )
        aliases.active.add(ident)
        # Children are counted here, so that scalars cost nothing more on any path.
        aliases.spend(len(node.value) + 1)
    try:
        if cls is SequenceNode:
            return [_build(item, aliases) for item in node.value]
        result: dict[str, Any] = {}
        merged: set[str] | None = None
        for key_node, value_node in node.value:
            if type(key_node) is not ScalarNode:
                raise YamlSyntaxError("mapping keys must be scalars", *_mark_of(key_node))
            if aliases is not None and len(aliases.active) == 1:
                # Where an expansion starts, for the diagnostic: the top-level key.
                aliases.line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE:
                merged = merged if merged is not None else set()
                for key, value in _merged(_build(value_node, aliases), value_node):
                    if key not in result:
                        result[key] = value
                        merged.add(key)
                continue
            key = key_node.value
            if key in result:
                if merged is None or key not in merged:
                    raise YamlSyntaxError(
                        f"duplicate key {key!r}: a key may appear once per mapping, remove one",
                        *_mark_of(key_node),
                    )
                merged.discard(key)
            result[key] = _build(value_node, aliases)
        return result
    finally:
        if aliases is not None:
            aliases.active.discard(id(node))


def _merged(value: Any, node: Node) -> Iterator[tuple[str, Any]]:
    for source in value if isinstance(value, list) else [value]:
        if not isinstance(source, dict):
            raise YamlSyntaxError("a merge key (<<) needs a mapping", *_mark_of(node))
        yield from source.items()


def parse_exact(text: str, limits: ConfigLimits = DEFAULT_LIMITS) -> list[Document]:
    """:func:`parse` by the exact path alone (libyaml), whatever the text."""
    documents: list[Document] = []
    try:
        if 4 * len(text) > limits.max_document_bytes:
            _check_document_sizes(text, limits.max_document_bytes)
        # Without anchors there are no aliases: no node can contain itself or repeat.
        may_alias = "&" in text
        for index, node in enumerate(_compose_all(text)):
            start, end = node.start_mark, node.end_mark
            if index >= limits.max_documents_per_file:
                raise YamlLimitError(
                    "PF107",
                    f"the file has more than {limits.max_documents_per_file:,} documents; "
                    "split the file",
                    start.line + 1,
                )
            size = end.index - start.index
            aliases = _Aliases(size + limits.max_alias_nodes, start.line + 1) if may_alias else None
            data = _build(node, aliases)
            if data is None:
                continue
            documents.append(Document(index, start.line + 1, data, size))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSyntaxError(f"YAML syntax: {problem}", line, column) from None
    except ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise YamlSyntaxError(
            f"YAML syntax: character #x{code:04X} is not allowed in YAML; remove it",
            line,
            column,
        ) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(f"YAML error: {exc}", 1, 1) from None
    except RecursionError:
        raise YamlSyntaxError("YAML nesting is too deep", 1, 1) from None
    return documents


def locate_all(
    text: str, wanted: Sequence[tuple[int, Sequence[str | int]]]
) -> list[tuple[int, int]]:
    """:func:`locate` for each ``(doc, path)`` of ``wanted``, composing ``text`` once.

    A file with an error in each of thousands of documents would otherwise be
    composed once per error: quadratic in the file's size.
    """
    positions = [(1, 1)] * len(wanted)
    by_doc: dict[int, list[int]] = {}
    for position, (doc, _) in enumerate(wanted):
        by_doc.setdefault(doc, []).append(position)
    if not by_doc:
        return positions
    last = max(by_doc)
    try:
        for index, node in enumerate(_compose_all(text)):
            for position in by_doc.get(index, ()):
                positions[position] = _walk(node, wanted[position][1])
            if index >= last:
                break
    except yaml.YAMLError:
        pass
    return positions


def _walk(node: Node, path: Sequence[str | int]) -> tuple[int, int]:
    position = _mark_of(node)
    for part in path:
        if isinstance(node, MappingNode) and isinstance(part, str):
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode) and key_node.value == part:
                    position = _mark_of(key_node)
                    node = value_node
                    break
            else:
                return position
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            position = _mark_of(node)
        else:
            return position
    return position
