"""The codec's bounds (records.Bounds): record size, event-time window, source names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from moodwire.records import (
    NO_BOUNDS,
    Bounds,
    InvalidRecord,
    PostChange,
    bounded_payload,
    decode_record,
    record_from_dict,
)
from moodwire.settings import Settings

NOW = datetime.now(UTC)


def _post(**fields: object) -> dict[str, object]:
    post: dict[str, object] = {
        "id": "1",
        "source": "twitter",
        "text": "I love my new phone",
        "created_at": NOW.isoformat(),
    }
    post.update(fields)
    return post


def _settings(tmp_path: Path, **env: Any) -> Settings:
    # Values as the environment would give them (strings too): pydantic validates them.
    return Settings(state_dir=tmp_path, **env)


def _bounds(tmp_path: Path, **env: Any) -> Bounds:
    return Bounds.from_settings(_settings(tmp_path, **env))


def test_defaults_accept_an_ordinary_post(tmp_path: Path) -> None:
    bounds = _bounds(tmp_path)
    post = decode_record(orjson.dumps(_post()), bounds=bounds)
    assert post.source == "twitter"


def test_a_record_over_the_size_cap_is_refused_before_parsing(tmp_path: Path) -> None:
    bounds = _bounds(tmp_path, max_record_bytes=4096)
    big = orjson.dumps(_post(metadata={"blob": "x" * 5000}))
    with pytest.raises(InvalidRecord, match=r"record has \d+ bytes \(limit 4096\)"):
        decode_record(big, bounds=bounds)
    # Not even JSON: the size is what is reported, the record is never parsed.
    with pytest.raises(InvalidRecord, match="limit 4096"):
        decode_record(b"{" * 5000, bounds=bounds)
    assert decode_record(big).source == "twitter"  # no bounds: the schema alone


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [
        ("9999-12-31T23:59:59Z", "in the future"),
        ((NOW + timedelta(hours=2)).isoformat(), "in the future"),
        ("1970-01-01T00:00:00Z", "before 2000-01-01"),
        ("0001-01-01T00:00:00+01:00", "before 2000-01-01"),
    ],
)
def test_posts_outside_the_event_time_window_are_refused(
    tmp_path: Path, stamp: str, reason: str
) -> None:
    bounds = _bounds(tmp_path)
    with pytest.raises(InvalidRecord, match=reason):
        decode_record(orjson.dumps(_post(created_at=stamp)), bounds=bounds)


def test_the_window_edges_are_settings(tmp_path: Path) -> None:
    bounds = _bounds(
        tmp_path, max_future_seconds=7200, min_created_at=datetime(1990, 1, 1, tzinfo=UTC)
    )
    for stamp in ((NOW + timedelta(minutes=110)).isoformat(), "1995-06-01T00:00:00Z"):
        assert decode_record(orjson.dumps(_post(created_at=stamp)), bounds=bounds)
    # A few seconds ahead (clock skew) pass the default tolerance.
    ahead = (NOW + timedelta(seconds=30)).isoformat()
    assert decode_record(orjson.dumps(_post(created_at=ahead)), bounds=_bounds(tmp_path))


def test_edits_and_deletes_are_bounded_too(tmp_path: Path) -> None:
    bounds = _bounds(tmp_path)
    delete = {"op": "delete", "id": "1", "source": "twitter", "created_at": "9999-01-01T00:00Z"}
    with pytest.raises(InvalidRecord, match="in the future"):
        record_from_dict(delete, bounds=bounds)
    edit = _post(op="update", edited_at="1970-01-01T00:00:00Z")
    with pytest.raises(InvalidRecord, match="before"):
        record_from_dict(edit, bounds=bounds)
    ok = record_from_dict(_post(op="update", edited_at=NOW.isoformat()), bounds=bounds)
    assert isinstance(ok, PostChange)


@pytest.mark.parametrize("source", ["a:b", "two words", "x" * 65, "-lead", "tab\tbed", "ü"])
def test_source_names_that_would_break_or_bloat_redis_keys_are_refused(
    tmp_path: Path, source: str
) -> None:
    with pytest.raises(InvalidRecord, match="source"):
        decode_record(orjson.dumps(_post(source=source)), bounds=_bounds(tmp_path))
    # The schema alone keeps accepting them (files and tools that use the codec offline).
    assert decode_record(orjson.dumps(_post(source=source)), bounds=NO_BOUNDS)


def test_an_allowlist_of_sources_bounds_the_key_count(tmp_path: Path) -> None:
    bounds = _bounds(tmp_path, sources="twitter, reddit")
    assert decode_record(orjson.dumps(_post(source="reddit")), bounds=bounds)
    with pytest.raises(InvalidRecord, match="not in MOODWIRE_SOURCES"):
        decode_record(orjson.dumps(_post(source="spam-4711")), bounds=bounds)


def test_dead_letter_payloads_are_cut_with_the_original_size() -> None:
    assert bounded_payload(b"abc", 10) == (b"abc", {})
    assert bounded_payload(b"x" * 50, 10) == (b"x" * 10, {"truncated": "50"})


def test_a_floor_without_a_zone_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="time zone"):
        _settings(tmp_path, min_created_at="2000-01-01T00:00:00")
