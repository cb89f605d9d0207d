"""Posts/s from successive readings of the scored counter."""

from __future__ import annotations

import pytest

from moodwire.api.rate import RateMeter


def test_rate_over_the_span() -> None:
    meter = RateMeter(span=30.0, min_gap=1.0)
    assert meter.observe(1000, now=0.0) is None
    assert meter.observe(1100, now=0.5) is None  # too close to say
    assert meter.observe(1400, now=2.0) == pytest.approx(200.0)
    assert meter.observe(1400, now=20.0) == pytest.approx(20.0)  # 400 posts in 20 s
    assert meter.observe(1400, now=60.0) is None  # every older reading fell out
    assert meter.observe(1700, now=63.0) == pytest.approx(100.0)


def test_counter_reset_starts_over() -> None:
    meter = RateMeter()
    meter.observe(500, now=0.0)
    assert meter.observe(10, now=5.0) is None
    assert meter.observe(30, now=7.0) == pytest.approx(10.0)
