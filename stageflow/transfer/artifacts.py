"""Artifact refs: what a stage returns instead of file contents (the claim-check pattern).

A ref is plain JSON, ``{"sha256", "size", "name", "kind": "file"|"dir", "locations": [...]}``,
so it rides through Temporal and templates like any other output. This module is pure: the
workflow imports it to decide where a stage should run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

__all__ = ["find_refs", "is_ref", "make_ref", "map_refs", "ref_locations"]

_SHA = re.compile(r"^[0-9a-f]{64}$")
KINDS = ("file", "dir")


def is_ref(value: Any) -> bool:
    """Whether ``value`` is an artifact ref (by shape: a hash, a kind and locations)."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("sha256"), str)
        and bool(_SHA.match(value["sha256"]))
        and value.get("kind") in KINDS
        and isinstance(value.get("locations"), list)
    )


def make_ref(
    *, sha256: str, size: int, name: str, kind: str, locations: list[str]
) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"artifact kind must be one of {KINDS}, not {kind!r}")
    return {"sha256": sha256, "size": size, "name": name, "kind": kind, "locations": locations}


def find_refs(value: Any) -> Iterator[dict[str, Any]]:
    """Every artifact ref inside ``value`` (nested dicts and lists), in document order."""
    if is_ref(value):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from find_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from find_refs(item)


def map_refs(value: Any, replace: Any) -> Any:
    """``value`` with every ref ``r`` replaced by ``replace(r)``."""
    if is_ref(value):
        return replace(value)
    if isinstance(value, dict):
        return {key: map_refs(item, replace) for key, item in value.items()}
    if isinstance(value, list):
        return [map_refs(item, replace) for item in value]
    return value


def ref_locations(value: Any) -> set[str]:
    """The locations that hold every ref in ``value`` (empty when there are no refs)."""
    common: set[str] | None = None
    for ref in find_refs(value):
        here = set(ref["locations"])
        common = here if common is None else common & here
    return common or set()
