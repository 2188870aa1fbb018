"""Human durations (``500ms``, ``10s``, ``5m``, ``1h30m``, ``2d``) to seconds and back.

Kept free of imports beyond ``math`` and ``re`` so the workflow sandbox can load it.

Parsing is exact: the decimal text is summed as a fraction of integers and turned into a float
once, correctly rounded, so ``9ms`` is the float nearest 0.009 and not ``9 * 0.001``. Formatting
writes the shortest decimal that reads back as the same float, so ``parse(format(x)) == x``.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_FORMS = "expected e.g. 500ms, 10s, 5m, 1h30m"


def parse_duration(value: object) -> float:
    """Seconds in ``value``: a number of seconds or a string like ``1h30m``.

    Raises ``ValueError`` with the accepted forms when the value is not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: {_FORMS}")
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str):
            seconds = _parse_text(value)
        else:
            raise ValueError(f"invalid duration {value!r}: {_FORMS}")
    except OverflowError:
        raise ValueError(f"invalid duration {value!r}: too large") from None
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {value!r}: must be a finite number of seconds")
    if seconds <= 0:
        raise ValueError(f"invalid duration {value!r}: must be greater than zero")
    return seconds


def _parse_text(value: str) -> float:
    """Seconds in a string such as ``1h30m``, summed exactly as ``numerator / denominator``."""
    text = value.strip().replace(" ", "")
    pos = 0
    numerator, denominator = 0, 1000  # milliseconds to seconds; grows with decimal places
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        whole, _, fraction = match.group(1).partition(".")
        scale = 1000 * 10 ** len(fraction)
        if scale > denominator:
            numerator *= scale // denominator
            denominator = scale
        numerator += int(whole + fraction) * _UNIT_MS[match.group(2)] * (denominator // scale)
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"invalid duration {value!r}: {_FORMS}")
    return numerator / denominator  # int / int is correctly rounded


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of ``seconds`` in the units ``parse_duration`` reads.

    Whole seconds are written in days, hours, minutes and seconds (``1h30m``); anything else in
    milliseconds, with a decimal fraction when needed (``1500ms``, ``0.4ms``).
    """
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"cannot format {seconds!r} as a duration: must be finite and positive")
    if seconds < 1 or seconds != int(seconds):
        return f"{_millis(seconds)}ms"
    remaining, parts = int(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _millis(seconds: float) -> str:
    """``seconds`` times 1000 as plain decimal text, from the shortest exact ``repr``."""
    mantissa, _, exponent = repr(float(seconds)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + int(exponent or 0) + 3  # where the decimal point falls in ``digits``
    if point <= 0:
        digits, point = "0" * (1 - point) + digits, 1
    digits = digits.ljust(point, "0")
    integer, fraction = digits[:point].lstrip("0") or "0", digits[point:].rstrip("0")
    return f"{integer}.{fraction}" if fraction else integer
