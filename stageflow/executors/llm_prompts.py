"""The prompts of an ``llm`` stage: a literal list, or one per row of a parquet dataset.

A row becomes a prompt through ``prompt_column`` (used as is) or a ``template`` such as
``"Summarise: {title}\\n\\n{body}"``. Templates are substituted by name only (``{col}``, with
``{{``/``}}`` for literal braces), never with ``str.format``, so a template cannot reach
attributes or format specs of the values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from stageflow.errors import ConfigError
from stageflow.executors.parquet_io import dataset_files

__all__ = ["Prompt", "load_prompts", "template_columns"]

_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Prompt:
    index: int
    """Position in the input: what checkpoints record."""
    id: Any
    text: str


def template_columns(template: str) -> list[str]:
    """The column names a template uses, in order, without repeats."""
    names = [m.group(1) for m in _FIELD.finditer(template) if m.group(1)]
    return list(dict.fromkeys(names))


def _render(template: str, row: dict[str, Any]) -> str:
    def sub(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        value = row[match.group(1)]
        return "" if value is None else str(value)

    return _FIELD.sub(sub, template)


def load_prompts(
    *,
    prompts: list[str] | None,
    input_path: str | None,
    prompt_column: str | None,
    template: str | None,
    id_column: str | None,
) -> list[Prompt]:
    """Every prompt of the stage, in input order (called in a thread: it reads files)."""
    if prompts is not None:
        return [Prompt(i, i, text) for i, text in enumerate(prompts)]
    assert input_path is not None
    needed = [prompt_column] if prompt_column else template_columns(template or "")
    columns = list(dict.fromkeys([*needed, *([id_column] if id_column else [])]))
    loaded: list[Prompt] = []
    for file in dataset_files(Path(input_path)):
        available = set(pq.ParquetFile(file).schema_arrow.names)
        missing = [c for c in columns if c not in available]
        if missing:
            raise ConfigError(
                f"llm: {file.name} has no column(s) {', '.join(missing)}; it has: "
                f"{', '.join(sorted(available))}"
            )
        for row in pq.read_table(file, columns=columns).to_pylist():
            index = len(loaded)
            text = str(row[prompt_column]) if prompt_column else _render(template or "", row)
            loaded.append(Prompt(index, row[id_column] if id_column else index, text))
    return loaded
