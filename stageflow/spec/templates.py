"""``${...}`` templates in stage parameters: finding references and rendering them.

A template that is the whole string keeps the value's type (``"${params.n}"`` renders to the
integer 3); a template inside a longer string is formatted into it (``"day_${run.date}.csv"``):
strings as they are, anything else as JSON (``true``, ``null``, ``[1, 2]``).
``$${`` escapes a literal ``${``.

Paths are dotted: ``params.n``, ``matrix.x``, ``run.id``, ``<stage>.outputs.<key>...``. A numeric
part indexes a list; any other part applied to a list is applied to each element, which is how a
fan-in (``${square.outputs.value}``) yields one value per matrix instance, in matrix order.

This module is pure (no I/O, no clocks): the workflow sandbox imports it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["RESERVED_SCOPES", "Reference", "TemplateError", "find_references", "render"]

RESERVED_SCOPES = frozenset({"params", "matrix", "run"})

_TEMPLATE = re.compile(r"\$\$\{|\$\{([^{}]*)\}")


class TemplateError(ValueError):
    """A template names something that does not exist when it is rendered."""


@dataclass(frozen=True)
class Reference:
    """One ``${...}`` occurrence: its dotted path, and where in the value it sits."""

    path: tuple[str, ...]
    text: str
    location: tuple[str | int, ...] = ()

    @property
    def scope(self) -> str:
        return self.path[0] if self.path else ""


def _split(expression: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in expression.strip().split("."))


def find_references(value: Any, location: tuple[str | int, ...] = ()) -> Iterator[Reference]:
    """Every template in ``value`` (nested dicts and lists included), in document order."""
    if isinstance(value, str):
        for match in _TEMPLATE.finditer(value):
            if match.group(1) is not None:
                yield Reference(_split(match.group(1)), match.group(0), location)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from find_references(item, (*location, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from find_references(item, (*location, index))


def _lookup(scope: Mapping[str, Any], path: tuple[str, ...], text: str) -> Any:
    current: Any = scope
    for depth, part in enumerate(path):
        current = _step(current, part, path[: depth + 1], text)
    return current


def _step(current: Any, part: str, walked: tuple[str, ...], text: str) -> Any:
    if isinstance(current, Mapping):
        if part not in current:
            known = ", ".join(sorted(map(str, current))) or "nothing"
            raise TemplateError(f"{text}: {'.'.join(walked)!r} does not exist (known: {known})")
        return current[part]
    if isinstance(current, list):
        if part.lstrip("-").isdigit():
            index = int(part)
            if not -len(current) <= index < len(current):
                raise TemplateError(f"{text}: index {index} is out of range ({len(current)} items)")
            return current[index]
        return [_step(item, part, walked, text) for item in current]
    raise TemplateError(f"{text}: cannot take {part!r} of a {type(current).__name__}")


def render(value: Any, scope: Mapping[str, Any]) -> Any:
    """``value`` with every template replaced from ``scope`` (nested values included)."""
    if isinstance(value, str):
        match = _TEMPLATE.fullmatch(value)
        if match and match.group(1) is not None:
            return _lookup(scope, _split(match.group(1)), value)

        def substitute(m: re.Match[str]) -> str:
            if m.group(1) is None:
                return "${"
            found = _lookup(scope, _split(m.group(1)), m.group(0))
            return found if isinstance(found, str) else json.dumps(found)

        return _TEMPLATE.sub(substitute, value)
    if isinstance(value, Mapping):
        return {key: render(item, scope) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, scope) for item in value]
    return value
