"""file:// reads JSON Lines and CSV, keeps each record's origin, and never stops on a bad line."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from moodwire.connectors import ConnectorError, RawRecord, open_connector
from moodwire.connectors import file as file_connector
from moodwire.ingest import to_post
from moodwire.records import InvalidRecord, Post, PostChange
from support.connectors import raw_records

GOOD = {"id": "1", "source": "twitter", "text": "hi @apple", "created_at": "2024-05-01T10:00:00Z"}


def _read(url: str) -> list[RawRecord]:
    with open_connector(url) as connector:
        return list(raw_records(connector))


def _validate(record: RawRecord) -> Post | PostChange | str:
    try:
        return to_post(record, max_text_chars=20_000)
    except InvalidRecord as exc:
        return exc.reason


def test_jsonl_records_carry_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    lines = [
        b"\xef\xbb\xbf" + orjson.dumps(GOOD),  # a BOM on the first line is not part of the JSON
        b"",
        b"   ",
        b"{not json",
        orjson.dumps({**GOOD, "id": "2"}) + b"\r",
        b'{"id": "3", "source": "x", "text": "\xff\xfe", "created_at": "2024-05-01T10:00:00Z"}',
    ]
    path.write_bytes(b"\n".join(lines))  # no newline at the end of the last line
    records = _read(f"file://{path}")
    origin = f"file://{path.resolve()}"
    assert [r.origin for r in records] == [
        f"{origin}:1",
        f"{origin}:4",
        f"{origin}:5",
        f"{origin}:6",
    ]
    results = [_validate(r) for r in records]
    assert isinstance(results[0], Post) and results[0].id == "1"
    assert isinstance(results[1], str) and results[1].startswith("malformed JSON")
    assert records[1].payload == b"{not json"
    assert isinstance(results[2], Post) and results[2].id == "2"
    bad_at = lines[5].index(b"\xff")
    assert results[3] == f"invalid UTF-8 at byte {bad_at}"


def test_gzip_and_format_option(tmp_path: Path) -> None:
    path = tmp_path / "feed.data.gz"
    path.write_bytes(gzip.compress(orjson.dumps(GOOD) + b"\n"))
    with pytest.raises(ConnectorError, match=r"add \?format=jsonl"):
        open_connector(f"file://{path}")
    records = _read(f"file://{path}?format=jsonl")
    assert len(records) == 1
    post = _validate(records[0])
    assert isinstance(post, Post) and (post.id, post.text) == ("1", "hi @apple")


def test_corrupt_gzip_is_a_one_line_error_after_the_good_records(tmp_path: Path) -> None:
    body = b"".join(orjson.dumps({**GOOD, "id": str(i)}) + b"\n" for i in range(2000))
    truncated = tmp_path / "cut.jsonl.gz"
    packed = gzip.compress(body)
    truncated.write_bytes(packed[: len(packed) // 2])
    read: list[RawRecord] = []
    with (
        pytest.raises(ConnectorError, match=r"cannot read .*cut\.jsonl\.gz: Compressed file"),
        open_connector(f"file://{truncated}") as connector,
    ):
        read.extend(raw_records(connector))
    # Every complete line before the cut came through, in order.
    posts = [_validate(r) for r in read]
    assert posts and [p.id for p in posts if isinstance(p, Post)] == [
        str(i) for i in range(len(posts))
    ]
    not_gzip = tmp_path / "feed.csv.gz"
    not_gzip.write_bytes(b"id,source,text,created_at\n")
    with pytest.raises(ConnectorError, match=r"cannot read .*feed\.csv\.gz: Not a gzipped file"):
        open_connector(f"file://{not_gzip}")


def test_relative_path_and_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "feed.ndjson").write_bytes(orjson.dumps(GOOD) + b"\n")
    monkeypatch.chdir(tmp_path)
    assert len(_read("file://sub/feed.ndjson")) == 1
    with pytest.raises(ConnectorError, match="file not found"):
        open_connector("file://sub/absent.jsonl")
    with pytest.raises(ConnectorError, match="format='xml'"):
        open_connector("file://sub/feed.ndjson?format=xml")


def test_over_long_line_is_refused_and_reading_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_connector, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "feed.jsonl"
    long_line = orjson.dumps({**GOOD, "text": "x" * 5000})
    path.write_bytes(long_line + b"\n" + orjson.dumps({**GOOD, "id": "2"}) + b"\n")
    records = _read(f"file://{path}")
    assert len(records) == 2
    assert (
        records[0].error == f"line has {len(long_line) + 1} bytes (limit 1000); payload truncated"
    )
    assert len(records[0].payload) == 1000
    assert records[1].origin.endswith(":2")
    assert isinstance(_validate(records[1]), Post)


def test_csv_columns_metadata_and_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "feed.csv"
    path.write_bytes(
        b"id,text,created_at,author,likes\n"
        b'1,"hello, ""world""",2024-05-01T10:00:00+02:00,ann,5\n'
        b'2,"two\nlines",2024-05-01T10:00:01Z,,\n'
        b"3,too,many,fields,here,extra\n"
        b"4,bad \xff byte,2024-05-01T10:00:02Z,bob,1\n"
        b"5,,2024-05-01T10:00:03Z,bob,1\n"
        b",,,,\n"
        b"6,naive time,2024-05-01 10:00:04,bob,1\n"
    )
    with pytest.raises(ConnectorError, match=r"lacks column\(s\): source"):
        open_connector(f"file://{path}")
    records = _read(f"file://{path}?source=survey")
    origin = f"file://{path.resolve()}"
    assert [r.origin.removeprefix(origin) for r in records] == [":2", ":3", ":5", ":6", ":7", ":9"]
    results = [_validate(r) for r in records]
    first, second = results[0], results[1]
    assert isinstance(first, Post) and isinstance(second, Post)
    assert (first.id, first.source, first.text, first.author) == (
        "1",
        "survey",
        'hello, "world"',
        "ann",
    )
    assert first.metadata == {"likes": "5"}
    assert first.created_at.utcoffset() is not None
    assert (second.text, second.author, second.metadata) == ("two\nlines", None, None)
    assert results[2] == "row has 6 fields, header has 5"
    assert results[3] == "invalid UTF-8 at byte 6"
    assert records[3].payload == b"4,bad \xff byte,2024-05-01T10:00:02Z,bob,1"
    assert results[4] == "field 'text' is empty"
    assert results[5] == "field 'created_at' has no time zone"


def test_csv_text_longer_than_the_csv_modules_default_limit_is_one_dead_letter(
    tmp_path: Path,
) -> None:
    path = tmp_path / "long.csv"
    long_text = "x" * 200_000  # the csv module stops at 131072 characters by default
    path.write_text(
        "id,source,text,created_at\n"
        "1,t,before,2024-05-01T10:00:00Z\n"
        f"2,t,{long_text},2024-05-01T10:00:01Z\n"
        "3,t,after,2024-05-01T10:00:02Z\n"
    )
    results = [_validate(r) for r in _read(f"file://{path}")]
    assert results[1] == "field 'text' has 200000 characters (limit 20000)"
    assert [(p.id, p.text) for p in results if isinstance(p, Post)] == [
        ("1", "before"),
        ("3", "after"),
    ]
