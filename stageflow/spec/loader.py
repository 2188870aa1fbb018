"""YAML to plain data, remembering the line and column of every key and value.

PyYAML's composed node tree carries marks; we build the data from it ourselves so that any
later error (pydantic's or our own) can be reported as ``file:line:column field: message``.
The data is what ``yaml.safe_load`` would give, limited to plain mappings, lists and scalars:
tags that would make anything else (``!!python/...``, ``!!set``, ``!!omap``) are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from stageflow.errors import SpecIssue

__all__ = ["Positions", "YamlDocument", "read_yaml"]

Path_ = tuple[str | int, ...]

_YAML_TAGS = "tag:yaml.org,2002:"
_MAP_TAG = _YAML_TAGS + "map"
_SEQ_TAG = _YAML_TAGS + "seq"
_MERGE_TAG = _YAML_TAGS + "merge"


@dataclass
class Positions:
    """Where each path of the document was written, as 1-based ``(line, column)``.

    ``values`` locates what an error about a path should point at. For a mapping entry whose
    value is a scalar or a flow collection (``{...}``, ``[...]``) written after its key, that
    is the value itself, the most precise place for "invalid value" errors: in
    ``stages:\\n  make:\\n    uses: python\\n``, ``("stages", "make", "uses") -> (3, 11)``. For a
    block collection (whose first line is that of its first child) or an alias, it is the key:
    ``("stages", "make") -> (2, 3)``, so a field missing from a stage is reported on the
    stage's own line. List items are located where they start. ``keys`` holds where each
    mapping key was written: ``("stages", "make", "uses") -> (3, 5)``.
    """

    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path_) -> tuple[int | None, int | None]:
        """The line and column of ``path``, or of its nearest ancestor that was written."""
        for end in range(len(path), -1, -1):
            found = self.values.get(tuple(path[:end]))
            if found:
                return found
        return None, None

    def locate_key(self, path: Path_) -> tuple[int | None, int | None]:
        """Where the last key of ``path`` was written, else what ``locate`` finds."""
        return self.keys.get(tuple(path)) or self.locate(path)


@dataclass
class YamlDocument:
    data: Any
    positions: Positions
    issues: list[SpecIssue]


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _entry_mark(key_node: yaml.Node, value_node: yaml.Node) -> tuple[int, int]:
    """Where an error about a mapping entry's value should point (see ``Positions``)."""
    if isinstance(value_node, yaml.CollectionNode) and not value_node.flow_style:
        return _mark(key_node)  # a block collection starts on the line after its key
    if value_node.start_mark.index < key_node.start_mark.index:
        return _mark(key_node)  # an alias: the value was written (anchored) elsewhere
    return _mark(value_node)


def _refuse_tag(node: yaml.Node, expected: str) -> None:
    if node.tag != expected:
        kind = "mapping" if expected == _MAP_TAG else "list"
        tag = (
            "!!" + node.tag.removeprefix(_YAML_TAGS)
            if node.tag.startswith(_YAML_TAGS)
            else node.tag
        )
        raise ConstructorError(
            None,
            None,
            f"tag {tag!r} is not allowed on a {kind}: a spec holds plain data only",
            node.start_mark,
        )


def _is_hashable(key: Any) -> bool:
    try:
        hash(key)
    except TypeError:
        return False
    return True


def read_yaml(text: str, filename: str) -> YamlDocument:
    """Parse one YAML document; syntax errors and duplicate keys become located issues."""
    positions = Positions()
    issues: list[SpecIssue] = []
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        row = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        message = f"character U+{exc.character:04X} is not allowed in YAML"
        return YamlDocument(None, positions, [SpecIssue(filename, row, col, "", message)])
    # The key nodes written in each mapping itself (not brought in by ``<<: *anchor``), by id
    # of the mapping node; taken before flattening, which an alias to the node would repeat.
    written: dict[int, set[int]] = {}
    try:
        root = loader.get_single_node()
        if root is None:
            issues.append(SpecIssue(filename, 1, 1, "", "the file is empty"))
            return YamlDocument(None, positions, issues)

        def build(node: yaml.Node, path: Path_, mark: tuple[int, int]) -> Any:
            positions.values[path] = mark
            if isinstance(node, yaml.MappingNode):
                _refuse_tag(node, _MAP_TAG)
                if id(node) not in written:
                    written[id(node)] = {id(k) for k, _ in node.value if k.tag != _MERGE_TAG}
                    loader.flatten_mapping(node)
                own = written[id(node)]
                result: dict[Any, Any] = {}
                seen: set[Any] = set()
                for key_node, value_node in node.value:
                    key = loader.construct_object(key_node, deep=True)
                    if not _is_hashable(key):
                        raise ConstructorError(
                            None,
                            None,
                            "a mapping key must be a plain value, not a list or mapping",
                            key_node.start_mark,
                        )
                    if id(key_node) in own:  # merged keys may be overridden; written ones not
                        if key in seen:
                            line, column = _mark(key_node)
                            dotted = ".".join(map(str, (*path, key)))
                            issues.append(
                                SpecIssue(filename, line, column, dotted, "duplicate key")
                            )
                        seen.add(key)
                    entry = (*path, key)
                    positions.keys[entry] = _mark(key_node)
                    result[key] = build(value_node, entry, _entry_mark(key_node, value_node))
                return result
            if isinstance(node, yaml.SequenceNode):
                _refuse_tag(node, _SEQ_TAG)
                return [
                    build(item, (*path, index), _mark(item))
                    for index, item in enumerate(node.value)
                ]
            try:
                return loader.construct_object(node, deep=True)
            except ValueError as exc:  # e.g. 2026-13-01 looks like a date but is none
                line, column = _mark(node)
                message = f"{node.value!r} cannot be read: {exc} (quote it to keep it as text)"
                issues.append(SpecIssue(filename, line, column, ".".join(map(str, path)), message))
                return node.value

        data = build(root, (), _mark(root))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = exc.problem or str(exc)
        issues.append(SpecIssue(filename, line, column, "", f"YAML syntax error: {problem}"))
        return YamlDocument(None, positions, issues)
    finally:
        loader.dispose()
    return YamlDocument(data, positions, issues)
