"""Edits and deletes that sources report: applied in log order after the posts they follow;
a deleted post keeps its place in the counts, its text and author erased and never shown."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import orjson
from sqlalchemy import text

from moodwire.api.queries import recent_posts
from moodwire.db.engine import make_engine
from moodwire.settings import Settings
from support.pipeline import (
    Worker,
    assert_aggregates_exact,
    count_scores,
    post_dicts,
    post_key,
    produce,
    serving_version,
    tag_of,
    wait_until,
)

TEXTS = [
    "the new phone from apple is wonderful, best camera ever",
    "my train was late again this morning, so annoying",
    "just had a great coffee with friends downtown",
    "this airline lost my bag and nobody answers the phone",
    "what a lovely sunny day in the park",
    "the update broke my laptop, really angry now",
]


def test_edits_and_deletes_change_rows_not_counts(
    settings: Settings, spawn_worker: Callable[..., Worker], redis_client: object
) -> None:
    tag = tag_of(settings)
    posts = post_dicts(TEXTS, tag)
    deleted, edited = posts[1], posts[2]
    changes = [
        {
            "op": "delete",
            "id": deleted["id"],
            "source": deleted["source"],
            "created_at": "2009-05-11T04:00:00+00:00",
        },
        {
            **edited,
            "op": "update",
            "text": "edited: the coffee was cold",
            "edited_at": "2009-05-11T04:01:00+00:00",
        },
        # An older edit arriving late changes nothing; a repeated delete is a no-op.
        {**edited, "op": "update", "text": "stale edit", "edited_at": "2009-05-11T03:30:00+00:00"},
        {
            "op": "delete",
            "id": deleted["id"],
            "source": deleted["source"],
            "created_at": "2009-05-11T04:05:00+00:00",
        },
    ]
    version = serving_version()
    worker = spawn_worker()
    # Same key as the post: the change lands in the post's partition, after it.
    produce(settings, [(post_key(p), orjson.dumps(p)) for p in posts])
    produce(settings, [(post_key(c), orjson.dumps(c)) for c in changes])
    engine = make_engine(settings)

    def row(post: dict[str, object]) -> tuple[object, ...]:
        with engine.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT text, author, deleted_at, edited_at FROM posts "
                    "WHERE source = :s AND source_id = :i"
                ),
                {"s": post["source"], "i": post["id"]},
            ).one_or_none()
        return tuple(found) if found is not None else ()

    try:
        wait_until(
            lambda: (
                count_scores(settings, version) == len(posts)
                and bool(row(deleted))
                and row(deleted)[2] is not None
                and bool(row(edited))
                and row(edited)[3] is not None
            ),
            timeout=120,
            what=f"posts scored and changes applied\n{worker.tail()}",
        )
        text_, author, deleted_at, _ = row(deleted)
        assert (text_, author) == ("", None)
        assert isinstance(deleted_at, datetime)
        assert deleted_at.isoformat() == "2009-05-11T04:00:00+00:00"
        assert row(edited)[0] == "edited: the coffee was cold"
        with engine.connect() as conn:
            history = (
                conn.execute(
                    text(
                        "SELECT previous_text FROM post_edits WHERE source = :s AND source_id = :i"
                    ),
                    {"s": edited["source"], "i": edited["id"]},
                )
                .scalars()
                .all()
            )
            # The session database holds other tests' newer posts too: read them all.
            shown = recent_posts(conn, version, limit=1_000_000)
        assert history == [TEXTS[2]]
        shown_ids = {(p["source"], p["id"]) for p in shown}
        assert (deleted["source"], deleted["id"]) not in shown_ids
        assert (edited["source"], edited["id"]) in shown_ids
        # Every post, the deleted one too, keeps its place in the counts.
        assert_aggregates_exact(settings, version, expected_posts=len(posts))
    finally:
        engine.dispose()
