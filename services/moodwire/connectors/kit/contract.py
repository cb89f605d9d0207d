"""Contract checks every connector must pass, ours or a third party's.

Use them from pytest against a local server that speaks the source's protocol::

    from moodwire.connectors.kit import contract

    def test_golden(my_server):
        connector = open_connector(f"mysrc://{my_server.address}")
        contract.check_golden(connector, EXPECTED)   # id, source, text, author, ...

    def test_survives_kill_9(my_server, settings):
        contract.check_kill9_resume(settings, url, expected_keys=KEYS)

:func:`collect` drives a connector the way the ingest loop does (a reader thread, stop()
from outside); :func:`check_kill9_resume` runs the real ``moodwire ingest`` command,
SIGKILLs it between produce and cursor save, restarts it, and checks the raw topic holds
every expected post (repeats allowed: they collapse by key into one row).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from moodwire.connectors.base import Connector, Position, RawRecord
from moodwire.ingest import to_post
from moodwire.records import InvalidRecord, Post, PostChange
from moodwire.settings import Settings

GOLDEN_FIELDS = ("id", "source", "text", "author", "created_at", "lang", "url")


def collect(
    connector: Connector,
    until: Callable[[list[RawRecord]], bool],
    timeout: float = 20.0,
) -> list[RawRecord]:
    """Records the connector yields until ``until(records)`` holds (or the source ends),
    then stop() from another thread, as the ingest loop does. Bare positions are dropped."""
    out: list[RawRecord] = []
    error: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            for item in connector.records():
                if isinstance(item, RawRecord):
                    out.append(item)
                    if until(out):
                        break
        except BaseException as exc:
            error.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    finished = done.wait(timeout)
    connector.stop()
    thread.join(5)
    connector.close()
    if error:
        raise error[0]
    if not finished:
        raise AssertionError(f"connector yielded {len(out)} records in {timeout:.0f} s")
    return out


def posts_of(records: Iterable[RawRecord], max_text_chars: int = 20_000) -> list[Post]:
    """The valid posts among ``records``, validated as the ingest loop validates them."""
    out = []
    for record in records:
        try:
            item = to_post(record, max_text_chars=max_text_chars)
        except InvalidRecord:
            continue
        if isinstance(item, Post):
            out.append(item)
    return out


def changes_of(records: Iterable[RawRecord]) -> list[PostChange]:
    out = []
    for record in records:
        try:
            item = to_post(record, max_text_chars=20_000)
        except InvalidRecord:
            continue
        if isinstance(item, PostChange):
            out.append(item)
    return out


def golden(post: Post) -> dict[str, Any]:
    """The golden-mapping fields of a post (created_at as ISO 8601)."""
    values = {name: getattr(post, name) for name in GOLDEN_FIELDS}
    values["created_at"] = post.created_at.isoformat()
    return values


def check_golden(
    connector: Connector, expected: list[Mapping[str, Any]], timeout: float = 20.0
) -> list[RawRecord]:
    """The connector's first ``len(expected)`` posts map to exactly ``expected`` (each a
    dict of :data:`GOLDEN_FIELDS`, ``created_at`` compared as an instant), and every record
    carries an origin."""
    records = collect(connector, lambda rs: len(posts_of(rs)) >= len(expected), timeout)
    assert all(r.origin for r in records), "every record needs an origin"
    got = [golden(p) for p in posts_of(records)[: len(expected)]]
    want = []
    for item in expected:
        row = {name: item.get(name) for name in GOLDEN_FIELDS}
        row["created_at"] = _instant(str(row["created_at"]))
        want.append(row)
    for row in got:
        row["created_at"] = _instant(row["created_at"])
    assert got == want, f"golden mapping differs:\n got {got}\nwant {want}"
    return records


def _instant(value: str) -> str:
    from datetime import UTC, datetime

    return datetime.fromisoformat(value).astimezone(UTC).isoformat()


def check_positions(records: Iterable[RawRecord | Position]) -> None:
    """A resumable connector's records carry positions with JSON-able offsets."""
    import orjson

    for item in records:
        position = item if isinstance(item, Position) else item.position
        assert position is not None, f"record without a position: {item!r:.200}"
        orjson.dumps(dict(position.offset))


def check_error_records(records: Iterable[RawRecord], *, at_least: int = 1) -> list[RawRecord]:
    """Malformed input became error records, each a dead letter to be: a one-line reason,
    the original bytes and an origin, refused by ingest's validation with that reason;
    and the stream went on (a valid post follows the last error)."""
    items = list(records)
    errors = [r for r in items if r.error is not None]
    assert len(errors) >= at_least, f"{len(errors)} error records, wanted {at_least}"
    for record in errors:
        assert record.error and "\n" not in record.error, f"reason: {record.error!r}"
        assert isinstance(record.payload, bytes | bytearray), "keep the original bytes"
        assert record.origin, "an error record needs an origin"
        try:
            to_post(record, max_text_chars=20_000)
        except InvalidRecord as exc:
            assert exc.reason == record.error
        else:
            raise AssertionError(f"an error record validated: {record!r:.200}")
    last = max(i for i, r in enumerate(items) if r.error is not None)
    assert posts_of(items[last + 1 :]), "no post after the last malformed input"
    return errors


def check_reconnect_gaps(
    attempts: list[float],
    *,
    backoff_max: float,
    retry_after: float | None = None,
    slack: float = 2.0,
) -> None:
    """Times (monotonic or wall seconds) at which the server saw connection attempts:
    with ``retry_after`` the first gap honours it; every other gap stays under the
    backoff cap (plus ``slack`` for a loaded machine): no hammering, no endless waits."""
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps, "the connector never reconnected"
    if retry_after is not None:
        assert gaps[0] >= retry_after * 0.95, f"reconnected {gaps[0]:.2f} s after a 429"
        gaps = gaps[1:]
    for gap in gaps:
        assert 0 <= gap <= backoff_max + slack, (
            f"a {gap:.2f} s wait exceeds the {backoff_max} s cap"
        )


# --- kill -9 between produce and cursor save, then restart -------------------------------


def _ingest_env(settings: Settings, extra: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MOODWIRE_BROKER_URL=settings.require("broker_url"),
        MOODWIRE_DATABASE_URL=settings.require("database_url"),
        MOODWIRE_STATE_DIR=str(settings.state_dir),
        MOODWIRE_TOPIC_RAW=settings.topic_raw,
        MOODWIRE_TOPIC_SCORED=settings.topic_scored,
        MOODWIRE_TOPIC_ALERTS=settings.topic_alerts,
        MOODWIRE_TOPIC_DEAD_LETTERS=settings.topic_dead_letters,
        MOODWIRE_LOG_FORMAT="json",
    )
    env.update(extra)
    return env


def _raw_keys(settings: Settings) -> list[bytes]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=500,
    )
    try:
        consumer.assign([TopicPartition(settings.topic_raw, p) for p in range(settings.partitions)])
        keys: list[bytes] = []
        while True:
            batch = consumer.poll(timeout_ms=500)
            if not batch:
                return keys
            for records in batch.values():
                keys.extend(r.key for r in records if r.key is not None)
    finally:
        consumer.close()


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _spawn(url: str, name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    moodwire = Path(sys.executable).with_name("moodwire")
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(moodwire), "ingest", url, "--name", name, "--quiet"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _kill9(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def check_kill9_resume(
    settings: Settings,
    url: str,
    expected_keys: set[bytes],
    log_dir: Path,
    *,
    publish_more: Callable[[], set[bytes]],
    name: str = "contract",
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """``moodwire ingest URL`` killed with SIGKILL twice, then restarted:

    1. with cursor saves held off (an hour apart), killed once every expected post is in
       the raw topic: no cursor may have been saved;
    2. restarted with saves every 0.2 s (it reads the source again: repeats, which collapse
       by key), killed once a cursor is saved;
    3. ``publish_more()`` makes the server publish new posts (their keys returned) and
       the restarted ingest, resuming from the saved cursor, must deliver them.

    Returns the cursors saved after step 2, so the caller can check what the server was
    asked for. The raw topic must hold no key outside ``expected_keys`` and the new ones.
    """
    from moodwire.db.cursors import CursorStore
    from moodwire.db.engine import make_engine

    log = log_dir / "ingest-contract.log"
    held = _ingest_env(settings, {**(env or {}), "MOODWIRE_INGEST_CURSOR_INTERVAL": "3600"})
    often = _ingest_env(settings, {**(env or {}), "MOODWIRE_INGEST_CURSOR_INTERVAL": "0.2"})
    engine = make_engine(settings)
    store = CursorStore(engine)
    try:
        first = _spawn(url, name, held, log)
        try:
            _wait(lambda: expected_keys <= set(_raw_keys(settings)), timeout, "the posts")
            assert store.load(name) == {}, "a cursor was saved before the save interval"
        finally:
            _kill9(first)
        second = _spawn(url, name, often, log)
        try:
            _wait(lambda: bool(store.load(name)), timeout, f"a cursor\n{log.read_text()[-2000:]}")
        finally:
            _kill9(second)
        saved = store.load(name)
        third = _spawn(url, name, often, log)
        try:
            more = publish_more()
            _wait(
                lambda: more <= set(_raw_keys(settings)),
                timeout,
                f"posts published after the restart\n{log.read_text()[-2000:]}",
            )
        finally:
            _kill9(third)
        unexpected = set(_raw_keys(settings)) - expected_keys - more
        assert not unexpected, f"keys nobody sent: {sorted(unexpected)[:5]}"
        return saved
    finally:
        engine.dispose()
