"""Reconnect pacing for network connectors: capped exponential backoff with full jitter.

Full jitter (a delay drawn uniformly from zero to the capped exponential) spreads the
reconnects of many clients after a shared outage, the scheme AWS's architecture blog
measured best. A server's ``Retry-After`` (429/503) is a floor, never shortened by jitter.
Call :meth:`Backoff.reset` once a connection has proved healthy (it delivered data), so a
flapping server does not keep every later reconnect at the cap.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from moodwire import metrics


class Backoff:
    def __init__(
        self,
        initial: float = 0.5,
        cap: float = 60.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial <= cap:
            raise ValueError("backoff needs 0 < initial <= cap")
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self, retry_after: float | None = None) -> float:
        """Seconds to wait before the next attempt; counts the attempt."""
        ceiling = min(self.cap, self.initial * self.factor**self.attempts)
        self.attempts += 1
        metrics.reconnect()
        delay = self._rng.uniform(0, ceiling)
        if retry_after is not None and retry_after > delay:
            # The server said when; a cap meant for guessing must not cut it short.
            return retry_after
        return delay

    def reset(self) -> None:
        self.attempts = 0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After``: delta-seconds or an HTTP date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
