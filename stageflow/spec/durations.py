"""Human durations (``500ms``, ``10s``, ``5m``, ``1h30m``, ``2d``) to seconds and back.

Kept free of imports beyond ``re`` so the workflow sandbox can load it.
"""

from __future__ import annotations

import re

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: object) -> float:
    """Seconds in ``value``: a number of seconds or a string like ``1h30m``.

    Raises ``ValueError`` with the accepted forms when the value is not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: expected e.g. 500ms, 10s, 5m, 1h30m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise ValueError(f"invalid duration {value!r}: expected e.g. 500ms, 10s, 5m, 1h30m")
    else:
        raise ValueError(f"invalid duration {value!r}: expected e.g. 500ms, 10s, 5m, 1h30m")
    if seconds <= 0:
        raise ValueError(f"invalid duration {value!r}: must be greater than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds`` in the units ``parse_duration`` reads."""
    if seconds < 1 or seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    remaining, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
