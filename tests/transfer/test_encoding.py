"""Range parsing and bounded zstd, the two places where a peer's input becomes sizes."""

from __future__ import annotations

import os

import pytest
import zstandard

from stageflow.transfer.encoding import (
    BoundedDecompressor,
    RangeNotSatisfiable,
    accepts_zstd,
    compress,
    decompress_bounded,
    parse_range,
)


def test_no_range_header_means_the_whole_object() -> None:
    assert parse_range(None, 10) is None


@pytest.mark.parametrize(
    ("header", "span"),
    [("bytes=0-9", (0, 9)), ("bytes=3-", (3, 9)), ("bytes=-3", (7, 9)), ("bytes = 2 - 4", (2, 4))],
)
def test_ranges(header: str, span: tuple[int, int]) -> None:
    assert parse_range(header, 10) == span


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=5-4", "bytes=0-1,3-4", "lines=1-2", ""])
def test_unsatisfiable_ranges_say_why(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 10)


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (None, False),
        ("gzip, br", False),
        ("zstd", True),
        ("gzip, ZSTD;q=0.3", True),
        ("zstd;q=0", False),
        ("zstd;q=0.0", False),
        ("zstd;q=bogus", False),
    ],
)
def test_accepts_zstd(header: str | None, accepted: bool) -> None:
    assert accepts_zstd(header) is accepted


def test_bounded_decompression_round_trips_in_pieces() -> None:
    data = os.urandom(1000) * 300
    packed = compress(data)
    unpack = BoundedDecompressor(len(data))
    for start in range(0, len(packed), 777):
        unpack.feed(packed[start : start + 777])
    assert bytes(unpack.result()) == data


def test_a_zstd_bomb_is_stopped_at_the_limit() -> None:
    bomb = zstandard.ZstdCompressor().compress(b"\0" * (256 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    with pytest.raises(ValueError, match="more than the 1000 expected"):
        decompress_bounded(bomb, 1000)


def test_garbage_is_not_zstd() -> None:
    with pytest.raises(ValueError, match="not valid zstd"):
        decompress_bounded(b"definitely not a zstd frame", 100)
