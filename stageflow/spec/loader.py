"""YAML to plain data, remembering the line and column of every key and value.

PyYAML's composed node tree carries marks; we build the data from it ourselves so that any
later error (pydantic's or our own) can be reported as ``file:line:column field: message``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from stageflow.errors import SpecIssue

__all__ = ["Positions", "YamlDocument", "read_yaml"]

Path_ = tuple[str | int, ...]


@dataclass
class Positions:
    """Where each path of the document was written: ``("stages", "make", "uses") -> (3, 5)``."""

    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path_) -> tuple[int | None, int | None]:
        """The line and column of ``path``, or of its nearest ancestor that was written."""
        for end in range(len(path), -1, -1):
            found = self.values.get(tuple(path[:end]))
            if found:
                return found
        return None, None


@dataclass
class YamlDocument:
    data: Any
    positions: Positions
    issues: list[SpecIssue]


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def read_yaml(text: str, filename: str) -> YamlDocument:
    """Parse one YAML document; syntax errors and duplicate keys become located issues."""
    positions = Positions()
    issues: list[SpecIssue] = []
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            issues.append(SpecIssue(filename, 1, 1, "", "the file is empty"))
            return YamlDocument(None, positions, issues)

        def build(node: yaml.Node, path: Path_) -> Any:
            positions.values[path] = _mark(node)
            if isinstance(node, yaml.MappingNode):
                loader.flatten_mapping(node)
                result: dict[Any, Any] = {}
                for key_node, value_node in node.value:
                    key = loader.construct_object(key_node, deep=True)
                    if key in result:
                        line, column = _mark(key_node)
                        dotted = ".".join(map(str, (*path, key)))
                        issues.append(SpecIssue(filename, line, column, dotted, "duplicate key"))
                    result[key] = build(value_node, (*path, key))
                return result
            if isinstance(node, yaml.SequenceNode):
                return [build(item, (*path, index)) for index, item in enumerate(node.value)]
            return loader.construct_object(node, deep=True)

        data = build(root, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = exc.problem or str(exc)
        issues.append(SpecIssue(filename, line, column, "", f"YAML syntax error: {problem}"))
        return YamlDocument(None, positions, issues)
    finally:
        loader.dispose()
    return YamlDocument(data, positions, issues)
