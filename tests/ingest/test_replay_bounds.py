"""Paced replays (`--speed N`) with absurd timestamps: bounded waits, refused stamps."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from moodwire.connectors import open_connector
from moodwire.ingest import Ingest, Pacer
from moodwire.settings import Settings

from .kafka_read import read_topic

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def test_no_pacer_wait_is_longer_than_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    waits: list[float] = []

    def wait(seconds: float) -> bool:  # sleeps on a clock of its own, instantly
        waits.append(seconds)
        clock[0] += max(seconds, 0.0)
        return False

    monkeypatch.setattr("moodwire.ingest.time.monotonic", lambda: clock[0])
    pacer = Pacer(1.0, wait, max_wait=5.0)
    # A day of silence, then posts 2 s apart: the day costs 5 s, and pacing goes on from
    # the post after the gap (2 s later, not a day minus 5 s later).
    for stamp in (T0, T0 + timedelta(days=1), T0 + timedelta(days=1, seconds=2)):
        pacer.wait_for(stamp)
    assert waits == [pytest.approx(5.0), pytest.approx(2.0)]


def _post(i: int, stamp: str) -> bytes:
    return orjson.dumps(
        {"id": str(i), "source": "replay", "text": f"post number {i}", "created_at": stamp}
    )


def test_year_9999_at_speed_1_is_a_dead_letter_and_the_replay_finishes(
    settings: Settings, tmp_path: Path
) -> None:
    """Before: ``--speed 1`` tried to sleep ~250 billion seconds (OverflowError, traceback).
    Now the stamp is refused at the edge, and a real day-long gap waits only the cap."""
    lines = [
        _post(0, T0.isoformat()),
        _post(1, "9999-12-31T23:59:59Z"),
        _post(2, "1970-01-01T00:00:00Z"),
        _post(3, (T0 + timedelta(days=1)).isoformat()),
        _post(4, (T0 + timedelta(days=1, seconds=0.2)).isoformat()),
    ]
    feed = tmp_path / "replay.jsonl"
    feed.write_bytes(b"\n".join(lines) + b"\n")
    own = settings.model_copy(update={"replay_max_wait": 0.5})
    started = time.monotonic()
    stats = Ingest(own, speed=1.0).run(open_connector(f"file://{feed}"))
    took = time.monotonic() - started
    assert (stats.read, stats.sent, stats.dead_lettered, stats.failed) == (5, 3, 2, 0)
    assert took < 15, took  # one capped 0.5 s wait and a 0.2 s one, plus start-up
    sent = read_topic(settings, settings.topic_raw, 3)
    assert sorted(orjson.loads(r.value)["id"] for r in sent) == ["0", "3", "4"]
    dead = read_topic(settings, settings.topic_dead_letters, 2)
    reasons = {
        dict(r.headers)["moodwire-origin"].decode().rsplit(":", 1)[-1]: dict(r.headers)[
            "moodwire-reason"
        ].decode()
        for r in dead
    }
    assert set(reasons) == {"2", "3"}, reasons  # line numbers of the 9999 and 1970 posts
    assert "in the future" in reasons["2"] and "before 2000-01-01" in reasons["3"], reasons
