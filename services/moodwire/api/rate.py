"""Posts per second from successive readings of a growing counter."""

from __future__ import annotations

import threading
import time
from collections import deque


class RateMeter:
    """Rate over the readings of the last ``span`` seconds; None until two are
    ``min_gap`` apart within it."""

    def __init__(self, span: float = 30.0, min_gap: float = 1.0) -> None:
        self._span = span
        self._min_gap = min_gap
        self._samples: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        self._rate: float | None = None

    @property
    def rate(self) -> float | None:
        """The rate at the latest reading."""
        return self._rate

    def observe(self, value: int, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._samples and value < self._samples[-1][1]:
                self._samples.clear()  # the counter was reset (a fresh database)
            self._samples.append((now, value))
            while now - self._samples[0][0] > self._span:
                self._samples.popleft()
            first_t, first_v = self._samples[0]
            self._rate = (
                None if now - first_t < self._min_gap else (value - first_v) / (now - first_t)
            )
            return self._rate
