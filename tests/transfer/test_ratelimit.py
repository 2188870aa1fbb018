"""The shared token bucket: a cap that holds for the total of several streams."""

from __future__ import annotations

import asyncio
import time

import pytest

from stageflow.transfer.ratelimit import RateLimiter


async def test_streams_share_one_cap() -> None:
    limiter = RateLimiter(1_000_000, burst=0.01)

    async def stream() -> None:
        for _ in range(10):
            await limiter.acquire(10_000)

    started = time.monotonic()
    await asyncio.gather(*(stream() for _ in range(4)))  # 400 kB at 1 MB/s
    elapsed = time.monotonic() - started
    assert 0.37 <= elapsed < 1.5, elapsed


async def test_an_idle_limiter_allows_only_a_short_burst() -> None:
    limiter = RateLimiter(1_000_000, burst=0.05)
    await asyncio.sleep(0.2)  # idle time does not bank more than the burst
    started = time.monotonic()
    for _ in range(20):
        await limiter.acquire(10_000)  # 200 kB: 0.2 s, less 0.05 s of burst
    assert time.monotonic() - started >= 0.14


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="bytes/s"):
        RateLimiter(0)
