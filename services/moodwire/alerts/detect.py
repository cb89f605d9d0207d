"""Negative-spike detection, pure over per-minute aggregates (no I/O: testable alone).

Windows are tumbling, ``window_minutes`` long and aligned to the epoch, in event time.
A window is judged only once it is closed: the newest event minute seen (the watermark)
is ``lateness_minutes`` past its end, so posts still in flight are not missed. A brand's
window is a spike when, with at least ``min_posts`` posts, its negative share is

- ``min_ratio`` times the baseline share or more, and
- ``min_increase`` share points above it or more, and
- ``min_z`` binomial standard errors above it or more (n posts drawn at the baseline rate).

The baseline is the ``baseline_minutes`` before the window: their pooled negative share,
recomputed without the minutes that would be spikes themselves against it, so that a
brand's past outages do not lift its baseline and mask its next one. (A median of
per-minute shares does that too, but is far too coarse for brands with a few posts a
minute.) A spike that goes on into the following window is one incident: only its first
window alerts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from moodwire.settings import Settings
from moodwire.sinks.redis_aggregates import ALL_BRANDS, NO_BRAND, Bucket

MINUTE = 60
KIND = "negative_spike"
# The standard error needs a share strictly inside (0, 1); a brand with no negative
# baseline posts at all still gets a finite ratio and z.
_SHARE_FLOOR = 0.01


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    window_minutes: int = 2
    baseline_minutes: int = 60
    lateness_minutes: int = 1
    lookback_minutes: int = 30
    min_posts: int = 20
    min_baseline_posts: int = 50
    min_ratio: float = 1.5
    min_increase: float = 0.10
    min_z: float = 3.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DetectorConfig:
        return cls(
            window_minutes=settings.alert_window_minutes,
            baseline_minutes=settings.alert_baseline_minutes,
            lateness_minutes=settings.alert_lateness_minutes,
            lookback_minutes=settings.alert_lookback_minutes,
            min_posts=settings.alert_min_posts,
            min_baseline_posts=settings.alert_min_baseline_posts,
            min_ratio=settings.alert_min_ratio,
            min_increase=settings.alert_min_increase,
            min_z=settings.alert_min_z,
        )

    @property
    def window_s(self) -> int:
        return self.window_minutes * MINUTE

    def closed_windows(self, watermark: int) -> list[int]:
        """Starts of the closed windows within the lookback, oldest first."""
        last_end = (watermark - self.lateness_minutes * MINUTE) // self.window_s * self.window_s
        first_end = last_end - self.lookback_minutes * MINUTE
        return [end - self.window_s for end in range(last_end, first_end, -self.window_s)][::-1]

    def span(self, watermark: int) -> tuple[int, int]:
        """Minutes ``[start, end)`` that detection at ``watermark`` reads."""
        windows = self.closed_windows(watermark)
        if not windows:
            return watermark, watermark
        # The window before the first one is judged too (is it an ongoing spike?).
        start = windows[0] - self.window_s - self.baseline_minutes * MINUTE
        return start, windows[-1] + self.window_s

    def as_dict(self) -> dict[str, float]:
        return {
            "window_minutes": self.window_minutes,
            "baseline_minutes": self.baseline_minutes,
            "min_posts": self.min_posts,
            "min_baseline_posts": self.min_baseline_posts,
            "min_ratio": self.min_ratio,
            "min_increase": self.min_increase,
            "min_z": self.min_z,
        }


@dataclass(frozen=True, slots=True)
class Spike:
    brand: str
    window_start: int  # epoch seconds, inclusive
    window_end: int  # epoch seconds, exclusive
    posts: int
    negative: int
    negative_share: float
    baseline_share: float
    baseline_posts: int
    ratio: float
    z: float


def _measure(negative: int, posts: int, base: float) -> tuple[float, float, float]:
    """Share, ratio to the baseline, and z (binomial standard errors above it)."""
    share = negative / posts
    p0 = min(max(base, _SHARE_FLOOR), 1 - _SHARE_FLOOR)
    return share, share / p0, (share - p0) / math.sqrt(p0 * (1 - p0) / posts)


def _exceeds(negative: int, posts: int, base: float, config: DetectorConfig) -> bool:
    """The spike rule: ``negative`` of ``posts`` against a baseline share ``base``."""
    if posts < config.min_posts:
        return False
    share, ratio, z = _measure(negative, posts, base)
    return ratio >= config.min_ratio and share - base >= config.min_increase and z >= config.min_z


def baseline_share(minutes: Mapping[int, Bucket], config: DetectorConfig) -> float | None:
    """Pooled negative share of ``minutes``, leaving out minutes that spike against it."""
    posts = sum(b.n for b in minutes.values())
    if posts == 0:
        return None
    pooled = sum(b.neg for b in minutes.values()) / posts
    kept = [b for b in minutes.values() if not _exceeds(b.neg, b.n, pooled, config)]
    kept_posts = sum(b.n for b in kept)
    return sum(b.neg for b in kept) / kept_posts if kept_posts else pooled


def judge(
    brand: str, start: int, series: Mapping[int, Bucket], config: DetectorConfig
) -> Spike | None:
    """The spike in the window starting at ``start``, or None."""
    end = start + config.window_s
    window = [b for m, b in series.items() if start <= m < end]
    posts = sum(b.n for b in window)
    if posts < config.min_posts:
        return None
    base_from = start - config.baseline_minutes * MINUTE
    baseline = {m: b for m, b in series.items() if base_from <= m < start}
    baseline_posts = sum(b.n for b in baseline.values())
    base = baseline_share(baseline, config)
    negative = sum(b.neg for b in window)
    if base is None or baseline_posts < config.min_baseline_posts:
        return None
    if not _exceeds(negative, posts, base, config):
        return None
    share, ratio, z = _measure(negative, posts, base)
    return Spike(
        brand=brand,
        window_start=start,
        window_end=end,
        posts=posts,
        negative=negative,
        negative_share=share,
        baseline_share=base,
        baseline_posts=baseline_posts,
        ratio=ratio,
        z=z,
    )


def detect(
    series: Mapping[str, Mapping[int, Bucket]], watermark: int, config: DetectorConfig
) -> list[Spike]:
    """New spikes among the closed windows at ``watermark``, per brand, oldest first.

    ``series``: brand -> minute -> counts (all sources together), covering
    ``config.span(watermark)``. ``*`` and ``(none)`` are not brands and never alert.
    """
    spikes: list[Spike] = []
    for start in config.closed_windows(watermark):
        for brand in sorted(series):
            if brand in (ALL_BRANDS, NO_BRAND):
                continue
            spike = judge(brand, start, series[brand], config)
            if spike is None:
                continue
            if judge(brand, start - config.window_s, series[brand], config) is not None:
                continue  # the same incident as the window before: already alerted
            spikes.append(spike)
    return spikes
