"""PostgresSink on a real PostgreSQL: idempotent, and the pre-commit step is atomic with it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from moodwire.db.engine import make_engine
from moodwire.records import Post, ScoredPost
from moodwire.settings import Settings
from moodwire.sinks.postgres import DeadLetterRow, PostgresSink, Stored


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    eng = make_engine(settings)
    yield eng
    eng.dispose()


def scored(n: int, source: str, version: str = "v1", label: int = 2) -> list[ScoredPost]:
    stamp = datetime(2024, 1, 2, 3, 4, tzinfo=UTC)
    probs = [(0.1, 0.2, 0.7), (0.6, 0.3, 0.1)]
    return [
        ScoredPost(
            post=Post(
                id=str(i),
                source=source,
                text=f"post {i}",
                created_at=stamp,
                metadata={"i": i} if i % 2 else None,
            ),
            label=label,
            probs=probs[i % 2],
            model_version=version,
            brands=("apple",) if i % 2 else (),
        )
        for i in range(n)
    ]


def count(engine: Engine, table: str, source: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(text(f"SELECT count(*) FROM {table} WHERE source = :s"), {"s": source}) or 0
        )


def test_second_write_inserts_nothing_and_returns_the_stored_rows(engine: Engine) -> None:
    source = f"src-{uuid.uuid4().hex[:8]}"
    sink = PostgresSink(engine)
    first = sink.write(scored(10, source))
    assert all(s.new for s in first)
    # A redelivery after a model or brands change must still report what is stored.
    again = sink.write(scored(10, source, label=0))
    assert not any(s.new for s in again)
    assert [s.scored.label for s in again] == [2] * 10
    assert [s.scored.brands for s in again] == [s.scored.brands for s in first]
    assert count(engine, "posts", source) == 10
    assert count(engine, "scores", source) == 10
    # A new model version scores the same posts again: new scores, same posts.
    other = sink.write(scored(10, source, version="v2"))
    assert all(s.new for s in other)
    assert count(engine, "scores", source) == 20
    sink.close()


def test_failing_pre_commit_step_rolls_the_batch_back(engine: Engine) -> None:
    source = f"src-{uuid.uuid4().hex[:8]}"
    sink = PostgresSink(engine)
    seen: list[list[Stored]] = []

    def explode(stored: list[Stored]) -> None:
        seen.append(stored)
        raise ConnectionError("redis went away")

    with pytest.raises(ConnectionError):
        sink.write(scored(5, source), before_commit=explode)
    assert len(seen[0]) == 5 and all(s.new for s in seen[0])
    assert count(engine, "posts", source) == 0
    # The retry sees the rows as new again: they were never committed.
    assert all(s.new for s in sink.write(scored(5, source)))
    sink.close()


def test_dead_letters_are_idempotent_on_their_position(engine: Engine) -> None:
    topic = f"dlq-{uuid.uuid4().hex[:8]}"
    sink = PostgresSink(engine)
    rows = [
        DeadLetterRow(f"raw[0]@{i}", "process", topic, 0, i, "malformed JSON", b"\xff{")
        for i in range(3)
    ]
    sink.write_dead_letters(rows)
    sink.write_dead_letters(rows)
    with engine.connect() as conn:
        got = conn.execute(
            text(
                'SELECT "offset", reason, payload FROM dead_letters WHERE topic = :t '
                'ORDER BY "offset"'
            ),
            {"t": topic},
        ).all()
    assert [(r[0], r[1], bytes(r[2])) for r in got] == [
        (i, "malformed JSON", b"\xff{") for i in range(3)
    ]
    sink.close()


def test_dead_letter_with_nul_in_its_headers_is_stored(engine: Engine) -> None:
    # Text columns refuse U+0000; such a row must not fail its batch on every retry.
    topic = f"dlq-{uuid.uuid4().hex[:8]}"
    sink = PostgresSink(engine)
    sink.write_dead_letters([DeadLetterRow("a\x00b", "ingest", topic, 0, 7, "bad\x00x", b"\x00")])
    with engine.connect() as conn:
        got = conn.execute(
            text("SELECT origin, reason, payload FROM dead_letters WHERE topic = :t"), {"t": topic}
        ).all()
    assert [(r[0], r[1], bytes(r[2])) for r in got] == [("a\ufffdb", "bad\ufffdx", b"\x00")]
    sink.close()


def test_awkward_characters_survive_the_bulk_copy(engine: Engine) -> None:
    source = f"src-{uuid.uuid4().hex[:8]}"
    text_ = 'tab\there\nnew line\r\\N literally, back\\slash, "quotes", émoji 🙂, \\.'
    post = Post(
        id="id\twith\\tab",
        source=source,
        text=text_,
        created_at=datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        author="\\N",
        url=None,
        lang="en",
        metadata={"k": "x\\y\t\n", "n": [1, 2.5, None]},
    )
    sink = PostgresSink(engine)
    [stored] = sink.write([ScoredPost(post, 1, (0.2, 0.5, 0.3), "v1", ("apple", "b-2.x"))])
    assert stored.new
    sink.close()
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT source_id, text, author, url, lang, brands, metadata, created_at "
                "FROM posts WHERE source = :s"
            ),
            {"s": source},
        ).one()
    assert tuple(row) == (
        post.id,
        text_,
        "\\N",
        None,
        "en",
        ["apple", "b-2.x"],
        post.metadata,
        post.created_at,
    )
