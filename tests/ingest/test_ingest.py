"""`moodwire ingest` against the real broker: posts keyed on the raw topic, bad records in
the dead-letter topic with reasons, nothing lost on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
from typer.testing import CliRunner

from moodwire.cli.app import app
from moodwire.connectors import Connector, RawRecord, open_connector
from moodwire.ingest import DEAD_LETTER_MAX_BYTES, Ingest
from moodwire.records import decode_post
from moodwire.settings import MissingServerError, Settings, get_settings
from moodwire.training.data import default_data_dir, load_sentiment140

from .kafka_read import read_topic

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _real_tweets(n: int) -> list[str]:
    data_dir = default_data_dir()
    if not (data_dir / "sentiment140").is_dir():
        pytest.skip(f"real tweets not found in {data_dir} (set MOODWIRE_DATA_DIR)")
    texts = load_sentiment140(data_dir).texts
    # Every 97th tweet: both classes, many authors; never an empty one.
    return [t for t in texts[::97] if t.strip()][:n]


def _post(i: int, text: str) -> dict[str, object]:
    return {
        "id": str(i),
        "source": "sentiment140",
        "text": text,
        "created_at": (T0 + timedelta(seconds=i)).isoformat(),
    }


def _headers(record: object) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}  # type: ignore[attr-defined]


def test_real_tweets_land_keyed_one_partition_per_post(settings: Settings, tmp_path: Path) -> None:
    texts = _real_tweets(400)
    feed = tmp_path / "tweets.jsonl"
    feed.write_bytes(b"\n".join(orjson.dumps(_post(i, t)) for i, t in enumerate(texts)) + b"\n")

    for _ in range(2):  # the same posts twice: each must land in the same partition again
        stats = Ingest(settings).run(open_connector(f"file://{feed}"))
        assert (stats.read, stats.sent, stats.dead_lettered, stats.failed) == (400, 400, 0, 0)

    records = read_topic(settings, settings.topic_raw, 800)
    assert len(records) == 800
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for record in records:
        post = decode_post(record.value)
        assert record.key == post.key
        assert post.text == texts[int(post.id)]
        partitions[record.key].add(record.partition)
    assert len(partitions) == 400
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) == settings.partitions


def test_bad_records_become_dead_letters_between_good_ones(
    settings: Settings, tmp_path: Path
) -> None:
    good = [orjson.dumps(_post(i, f"good post number {i} about #apple")) for i in range(5)]
    huge = orjson.dumps(_post(100, "x" * 1_000_000))
    bad = {
        b'{"id": "9", "source": "t", "text": "unterminated': "malformed JSON",
        orjson.dumps({"id": "9", "text": "no source", "created_at": T0.isoformat()}): (
            "missing field(s): source"
        ),
        orjson.dumps(_post(101, "   ")): "field 'text' is empty",
        huge: "field 'text' has 1000000 characters (limit 20000)",
        orjson.dumps(_post(102, "caf")).replace(b"caf", b"caf\xe9"): "invalid UTF-8 at byte",
        orjson.dumps({**_post(103, "naive"), "created_at": "2024-05-01T12:00:00"}): (
            "field 'created_at' has no time zone"
        ),
        b"[1, 2, 3]": "expected a JSON object, got list",
    }
    lines = [good[0]]
    for i, line in enumerate(bad):
        lines += [line, good[1 + i % 4]] if i < 4 else [line]
    feed = tmp_path / "mixed.jsonl"
    feed.write_bytes(b"\n".join(lines) + b"\n")

    stats = Ingest(settings).run(open_connector(f"file://{feed}"))
    assert (stats.sent, stats.dead_lettered, stats.failed) == (5, 7, 0)

    raw = read_topic(settings, settings.topic_raw, 5)
    assert sorted(decode_post(r.value).id for r in raw) == ["0", "1", "2", "3", "4"]

    letters = read_topic(settings, settings.topic_dead_letters, 7)
    assert len(letters) == 7
    origin = f"file://{feed.resolve()}"
    by_line = {}
    for letter in letters:
        headers = _headers(letter)
        assert headers["moodwire-stage"] == "ingest"
        assert headers["moodwire-connector"] == "file"
        assert headers["moodwire-origin"].startswith(origin + ":")
        line_no = int(headers["moodwire-origin"].rsplit(":", 1)[1])
        by_line[line_no] = (letter.value, headers)
    for line_no, (value, headers) in by_line.items():
        original = lines[line_no - 1]
        assert headers["moodwire-reason"].startswith(bad[original])
        if original is huge:
            assert value == huge[:DEAD_LETTER_MAX_BYTES]
            assert headers["moodwire-truncated"] == str(len(huge))
        else:
            assert value == original


def _env(settings: Settings) -> dict[str, str]:
    return {
        "MOODWIRE_BROKER_URL": str(settings.broker_url),
        "MOODWIRE_TOPIC_RAW": settings.topic_raw,
        "MOODWIRE_TOPIC_DEAD_LETTERS": settings.topic_dead_letters,
        "MOODWIRE_TOPIC_SCORED": settings.topic_scored,
        "MOODWIRE_TOPIC_ALERTS": settings.topic_alerts,
        "MOODWIRE_STATE_DIR": str(settings.state_dir),
    }


def test_cli_ingest_prints_counts_and_rejects_unknown_scheme(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _env(settings).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    feed = tmp_path / "feed.jsonl"
    feed.write_bytes(b"\n".join(orjson.dumps(_post(i, f"post {i}")) for i in range(10)) + b"\nx\n")
    runner = CliRunner()
    try:
        result = runner.invoke(app, ["ingest", f"file://{feed}", "--limit", "8", "--quiet"])
        assert result.exit_code == 0, result.output
        assert "sent 8 posts to " + settings.topic_raw in result.output
        result = runner.invoke(app, ["ingest", f"file://{feed}", "--quiet"])
        assert result.exit_code == 0, result.output
        assert "sent 10 posts" in result.output and "dead-lettered 1 " in result.output
        assert "1 x malformed JSON" in result.output

        result = runner.invoke(app, ["ingest", "nntp://news.example"])
        assert result.exit_code == 2
        assert "no connector for scheme 'nntp'; known schemes: " in result.output
        assert "demo://, feed+http://" in result.output and "file://" in result.output
    finally:
        get_settings.cache_clear()
    assert len(read_topic(settings, settings.topic_raw, 18)) == 18


def test_sigint_flushes_everything_already_read(settings: Settings) -> None:
    env = {**os.environ, **_env(settings)}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moodwire")), "ingest", "demo://?rate=2000&run=sig"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        # Wait for the first progress line: the producer is up and posts are flowing.
        line = proc.stderr.readline()
        while line and b"ingest: read" not in line:
            line = proc.stderr.readline()
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    match = re.search(rb"sent ([\d,]+) posts", out)
    assert match, out.decode()
    sent = int(match.group(1).replace(b",", b""))
    assert sent > 2000
    assert len(read_topic(settings, settings.topic_raw, sent)) == sent


def test_speed_replays_created_at_gaps(settings: Settings, tmp_path: Path) -> None:
    # Event times 0 s, 1 s and 3 s at --speed 10: the last post waits until 0.3 s.
    feed = tmp_path / "paced.jsonl"
    feed.write_bytes(b"\n".join(orjson.dumps(_post(i, f"post {i}")) for i in (0, 1, 3)))
    paced = Ingest(settings, speed=10.0).run(open_connector(f"file://{feed}"))
    assert paced.sent == 3 and paced.elapsed >= 0.3


class _Parsed(Connector):
    """A connector that builds posts in code, as plugins do; one has a lone surrogate."""

    def records(self) -> Iterator[RawRecord]:
        for i, text in enumerate(["fine", "broken \ud800 text", "also fine"]):
            fields = _post(i, text)
            yield RawRecord(payload=repr(fields).encode(), origin=f"parsed:{i}", fields=fields)


def test_a_parsed_post_that_cannot_be_encoded_is_a_dead_letter(settings: Settings) -> None:
    stats = Ingest(settings).run(_Parsed(urlsplit("parsed://"), {}))
    assert (stats.read, stats.sent, stats.dead_lettered, stats.failed) == (3, 2, 1, 0)
    raw = read_topic(settings, settings.topic_raw, 2)
    assert sorted(decode_post(r.value).text for r in raw) == ["also fine", "fine"]
    [letter] = read_topic(settings, settings.topic_dead_letters, 1)
    headers = _headers(letter)
    assert headers["moodwire-origin"] == "parsed:1"
    assert headers["moodwire-reason"].startswith("cannot encode as JSON")


class _Closing(_Parsed):
    closed = 0

    def close(self) -> None:
        self.closed += 1


def test_a_run_that_cannot_start_still_closes_its_connector(tmp_path: Path) -> None:
    connector = _Closing(urlsplit("parsed://"), {})
    with pytest.raises(MissingServerError, match="no broker configured"):
        Ingest(Settings(state_dir=tmp_path)).run(connector)
    assert connector.closed == 1
