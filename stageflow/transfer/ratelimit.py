"""A token bucket that several transfer streams share, so a bandwidth cap holds for the total.

It is a virtual clock rather than a counter refilled by a timer: each ``acquire(n)`` books
``n / rate`` seconds after the previous booking and sleeps until its turn, allowing a burst of
``burst`` seconds' worth of bytes. There is no background task to leak, and it is exact over
any interval longer than the burst, however the streams interleave.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["RateLimiter"]


class RateLimiter:
    """Limit the bytes per second that pass through ``acquire`` across all its callers."""

    def __init__(self, rate: float, *, burst: float = 0.05) -> None:
        if rate <= 0:
            raise ValueError(f"bandwidth must be a positive number of bytes/s, got {rate}")
        self.rate = float(rate)
        self.burst = burst
        self._booked_until = time.monotonic()

    def _book(self, n: int) -> float:
        now = time.monotonic()
        self._booked_until = max(self._booked_until, now) + n / self.rate
        return self._booked_until - now - self.burst

    async def acquire(self, n: int) -> None:
        """Wait until ``n`` more bytes may pass (called after or before moving them)."""
        delay = self._book(n)
        if delay > 0:
            await asyncio.sleep(delay)
