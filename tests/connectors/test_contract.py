"""The contract kit's kill -9 check, run on a real connector: `moodwire ingest hn://` against
the local Hacker News server, SIGKILLed before and after a cursor save, then restarted.
Then one post through the whole pipeline: a redelivered post is one row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from moodwire.connectors.kit import contract
from moodwire.connectors.kit.hn_server import HackerNewsServer
from moodwire.settings import Settings
from support.pipeline import Worker, wait_until

COUNT = 120


def _item(i: int, tag: str) -> dict[str, object]:
    return {
        "by": f"user{i % 7}",
        "id": i,
        "parent": 1,
        "text": f"comment {i} of run {tag}: the acme update is <i>great</i>",
        "time": 1714557600 + i,
        "type": "comment",
    }


def _key(i: int) -> bytes:
    return f"hackernews\x1f{i}".encode()


def test_kill_9_between_produce_and_cursor_save_loses_nothing(
    settings: Settings, tmp_path: Path, spawn_worker: Callable[..., Worker], redis_client: object
) -> None:
    tag = settings.topic_raw.rsplit(".", 1)[-1]
    with HackerNewsServer([_item(i, tag) for i in range(1, COUNT + 1)]) as server:
        api = server.start()
        url = f"hn://?api={api}&start=1&interval=0.1"

        def publish_more() -> set[bytes]:
            for i in range(COUNT + 1, COUNT + 21):
                server.add(_item(i, tag))
            return {_key(i) for i in range(COUNT + 1, COUNT + 21)}

        saved = contract.check_kill9_resume(
            settings,
            url,
            {_key(i) for i in range(1, COUNT + 1)},
            tmp_path,
            publish_more=publish_more,
            name=f"hn-{tag}",
        )
        # The restart resumed from the saved cursor, not from the start.
        last = int(saved["items"]["last_id"])
        assert server.item_requests(last + 1), "the restart never asked for the next item"
    # Whatever the repeats in the topic, every post is one row (keys collapse in Postgres).
    worker = spawn_worker()
    wait_until(
        lambda: _rows(settings) == COUNT + 20,
        timeout=120,
        what=f"{COUNT + 20} rows\n{worker.tail()}",
    )


def _rows(settings: Settings) -> int:
    from sqlalchemy import text

    from moodwire.db.engine import make_engine

    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            found = conn.scalar(
                text("SELECT count(*) FROM posts WHERE source = 'hackernews' AND text LIKE :t"),
                {"t": f"% of run {settings.topic_raw.rsplit('.', 1)[-1]}:%"},
            )
        return int(found or 0)
    finally:
        engine.dispose()


def _jetstream_post(i: int, tag: str) -> dict[str, object]:
    return {
        "did": f"did:plc:user{i % 13:04d}",
        "time_us": 1764590400_000_000 + i * 1000,
        "kind": "commit",
        "commit": {
            "rev": f"3k{i:08d}",
            "operation": "create",
            "collection": "app.bsky.feed.post",
            "rkey": f"{tag}{i:06d}",
            "record": {
                "$type": "app.bsky.feed.post",
                "createdAt": "2025-12-01T12:00:00.000Z",
                "langs": ["en"],
                "text": f"post {i} of run {tag}: loving the new acme phone",
            },
            "cid": f"bafy{i}",
        },
    }


def _bsky_key(i: int, tag: str) -> bytes:
    return f"bluesky\x1fat://did:plc:user{i % 13:04d}/app.bsky.feed.post/{tag}{i:06d}".encode()


def test_bluesky_kill_9_between_produce_and_cursor_save_loses_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    from moodwire.connectors.kit.jetstream_server import JetstreamServer

    tag = settings.topic_raw.rsplit(".", 1)[-1]
    with JetstreamServer([_jetstream_post(i, tag) for i in range(COUNT)]) as server:
        url = f"bluesky://{server.address}?tls=0&rewind=0&backoff_initial=0.1&backoff_max=0.5"

        def publish_more() -> set[bytes]:
            more = range(COUNT, COUNT + 20)
            for i in more:
                server.add(_jetstream_post(i, tag))
            return {_bsky_key(i, tag) for i in more}

        saved = contract.check_kill9_resume(
            settings,
            url,
            {_bsky_key(i, tag) for i in range(COUNT)},
            tmp_path,
            publish_more=publish_more,
            name=f"bsky-{tag}",
        )
        # The restarts asked Jetstream for the saved cursor, not for the live tail only.
        cursor = int(saved[server.address]["time_us"])
        assert any(c.cursor is not None and c.cursor <= cursor for c in server.accepted()[2:])
