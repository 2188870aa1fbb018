"""HTTP byte ranges and zstd bodies, as the data plane uses them.

Kept apart from the app and the client because both sides need the same rules, and because
these are the places where a peer's input turns into sizes and offsets:

* ``parse_range`` accepts one ``bytes=`` range (``a-b``, ``a-``, ``-n``) and refuses the rest
  with a reason, so a bad request gets a 416 that says why instead of the whole object.
* ``BoundedDecompressor`` decompresses into a buffer that refuses to grow past the expected
  size, so a small zstd frame that expands to gigabytes (a "zip bomb") costs nothing.

With ``Accept-Encoding: zstd`` and a ``Range``, the range counts identity bytes and the body is
that range compressed: each chunk is fetched and decompressed on its own.
"""

from __future__ import annotations

import re

import zstandard

__all__ = [
    "BoundedDecompressor",
    "RangeNotSatisfiable",
    "accepts_zstd",
    "compress",
    "compressor",
    "decompress_bounded",
    "parse_range",
]

_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")
_ZSTD_LEVEL = 3


class RangeNotSatisfiable(ValueError):
    """A ``Range`` header this object cannot serve; the message says why."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte positions (inclusive) for a ``Range`` header, None for no header.

    An end past the object is clamped to its last byte (RFC 9110); a start past it, an inverted
    range, several ranges, or a unit other than ``bytes`` raise RangeNotSatisfiable.
    """
    if header is None:
        return None
    match = _RANGE_RE.fullmatch(header.strip().replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiable(
            f"unsupported Range {header[:60]!r}: send one range as bytes=FIRST-LAST, "
            "bytes=FIRST- or bytes=-SUFFIX"
        )
    first_s, last_s = match.groups()
    if first_s == "":
        suffix = int(last_s)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(f"an empty suffix range of a {size}-byte object")
        return max(0, size - suffix), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if first >= size:
        raise RangeNotSatisfiable(f"range starts at {first}; the object has {size} bytes")
    if last < first:
        raise RangeNotSatisfiable(f"range {first}-{last} ends before it starts")
    return first, min(last, size - 1)


def accepts_zstd(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header lists zstd with a non-zero quality."""
    if not header:
        return False
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() != "zstd":
            continue
        params = params.replace(" ", "").lower()
        if params.startswith("q="):
            try:
                return float(params[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def compress(data: bytes | bytearray | memoryview) -> bytes:
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(bytes(data))


def compressor() -> zstandard.ZstdCompressionObj:
    """A streaming compressor: ``compress(block)`` per block, then ``flush()``."""
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compressobj()


class _Sink:
    def __init__(self, limit: int) -> None:
        self.buffer = bytearray()
        self.limit = limit

    def write(self, data: bytes) -> int:
        if len(self.buffer) + len(data) > self.limit:
            raise ValueError(f"zstd body decompresses to more than the {self.limit} expected")
        self.buffer += data
        return len(data)


class BoundedDecompressor:
    """Feed a zstd stream piece by piece; holds at most ``limit`` decompressed bytes.

    Raises ValueError when the output would exceed ``limit`` or the stream is not zstd.
    """

    def __init__(self, limit: int) -> None:
        self._sink = _Sink(limit)
        self._writer = zstandard.ZstdDecompressor().stream_writer(
            self._sink,  # type: ignore[arg-type]  # only .write is used
            write_size=64 * 1024,
            closefd=False,
        )

    def feed(self, data: bytes) -> None:
        try:
            self._writer.write(data)
        except zstandard.ZstdError as exc:
            raise ValueError(f"body is not valid zstd: {exc}") from None

    def result(self) -> bytearray:
        try:
            self._writer.flush()
        except zstandard.ZstdError as exc:
            raise ValueError(f"body is not valid zstd: {exc}") from None
        return self._sink.buffer


def decompress_bounded(data: bytes, limit: int) -> bytearray:
    """Decompress a whole zstd body that must not exceed ``limit`` bytes."""
    decompressor = BoundedDecompressor(limit)
    decompressor.feed(data)
    return decompressor.result()
