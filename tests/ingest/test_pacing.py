"""--speed: replay at N x the original pace by created_at gaps, or flat out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from moodwire.ingest import Pacer, parse_speed


def test_parse_speed() -> None:
    assert parse_speed("max") == 0.0
    assert parse_speed("0") == 0.0
    assert parse_speed("2.5") == 2.5
    with pytest.raises(ValueError, match="not a number"):
        parse_speed("fast")
    with pytest.raises(ValueError, match="must be >= 0"):
        parse_speed(-1.0)


def test_pacer_waits_for_event_time_gaps_divided_by_speed() -> None:
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return False

    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    pacer = Pacer(10.0, wait)
    for offset in (0, 10, 30, 20):  # seconds of event time; the last is out of order
        pacer.wait_for(t0 + timedelta(seconds=offset))
    # First post: no wait. Then due 1 s, 3 s and 2 s after it (10, 30 and 20 s of event
    # time at 10x); this fake wait never sleeps, so each wait is the whole distance.
    assert len(waits) == 3
    assert waits[0] == pytest.approx(1.0, abs=0.05)
    assert waits[1] == pytest.approx(3.0, abs=0.05)
    assert waits[2] == pytest.approx(2.0, abs=0.05)


def test_flat_out_never_waits() -> None:
    pacer = Pacer(0.0, lambda s: pytest.fail("waited"))  # type: ignore[arg-type]
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    assert pacer.wait_for(t0) is False
    assert pacer.wait_for(t0 + timedelta(days=1)) is False
