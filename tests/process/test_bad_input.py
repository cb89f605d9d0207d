"""Bad records between good ones: every good one scored, every bad one a dead letter."""

from __future__ import annotations

from collections.abc import Callable

import orjson
from sqlalchemy import text

from moodwire.db.engine import make_engine
from moodwire.settings import Settings
from support.pipeline import (
    Worker,
    count_scores,
    post_dicts,
    post_key,
    produce,
    real_tweets,
    serving_version,
    tag_of,
    wait_until,
)

STAMP = "2009-05-11T03:00:00+00:00"


def bad_records(tag: str) -> list[tuple[bytes | None, str]]:
    """(message value, a word its dead-letter reason must contain)."""
    base = {"source": f"twitter.{tag}", "created_at": STAMP}
    return [
        (b'{"id": "b1", "source": "twitter", "text": "unterminated', "malformed JSON"),
        (orjson.dumps({"id": "b2", "source": base["source"]}), "missing field"),
        (orjson.dumps({**base, "id": "b3", "text": ""}), "empty"),
        (orjson.dumps({**base, "id": "b4", "text": "   \n "}), "empty"),
        (orjson.dumps({**base, "id": "b5", "text": "x" * 1_000_000}), "limit"),
        (
            b'{"id":"b6","source":"twitter","text":"caf\xe9 \xff","created_at":"'
            + STAMP.encode()
            + b'"}',
            "UTF-8",
        ),
        (orjson.dumps([1, 2, 3]), "JSON object"),
        (
            orjson.dumps(
                {**base, "id": "b8", "text": "naive", "created_at": "2009-05-11T03:00:00"}
            ),
            "time zone",
        ),
        (orjson.dumps({**base, "id": "b9", "text": "nul \u0000 inside"}), "NUL"),
        (b"", "empty message"),
    ]


def test_bad_records_become_dead_letters_and_good_ones_all_score(
    settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object
) -> None:
    tag = tag_of(settings)
    good = post_dicts(real_tweets(300), tag)
    bad = bad_records(tag)
    messages: list[tuple[bytes | None, bytes]] = []
    for i, post in enumerate(good):
        messages.append((post_key(post), orjson.dumps(post)))
        if i % 25 == 0 and i // 25 < len(bad):
            messages.append((f"bad-{i}".encode(), bad[i // 25][0] or b""))
    version = serving_version()
    worker = spawn_worker()
    produce(settings, messages)
    engine = make_engine(settings)
    query = text(
        'SELECT origin, stage, reason, payload, "offset" FROM dead_letters WHERE topic = :t'
    )

    def dead_letters() -> list[tuple[str, str, str, bytes, int]]:
        with engine.connect() as conn:
            rows = conn.execute(query, {"t": settings.topic_dead_letters}).all()
        return [(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]

    try:
        wait_until(
            lambda: (
                (count_scores(settings, version) >= len(good) and len(dead_letters()) >= len(bad))
                or not worker.alive()
            ),
            120,
            "all good scored and all bad dead-lettered",
        )
        assert worker.alive(), worker.tail()
        assert count_scores(settings, version) == len(good)
        letters = dead_letters()
    finally:
        engine.dispose()
    assert len(letters) == len(bad)
    by_payload = {payload: (origin, stage, reason) for origin, stage, reason, payload, _ in letters}
    for payload, reason_word in bad:
        # The original bytes, unchanged (a None value went out as b"", see messages).
        origin, stage, reason = by_payload[payload or b""]
        assert reason_word.lower() in reason.lower(), (reason_word, reason)
        assert stage == "process"
        assert origin.startswith(settings.topic_raw + "[")
