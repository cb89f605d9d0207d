"""The codec: every valid post round-trips; every bad input is refused with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moodwire.records import (
    MAX_METADATA_DEPTH,
    DeadLetter,
    InvalidRecord,
    Post,
    ScoredPost,
    decode_post,
    decode_scored,
    encode_post,
    encode_scored,
    post_to_dict,
    scored_to_dict,
)

SCHEMA = json.loads(
    (Path(__file__).parents[1] / "services/moodwire/schemas/post.v1.json").read_text()
)
VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)

GOOD = {
    "id": "1",
    "source": "twitter",
    "text": "I love my new phone",
    "created_at": "2024-05-01T12:00:00Z",
}

# NUL is refused (PostgreSQL cannot store it in text); every other character round-trips.
# Lone surrogates (category Cs) are not text UTF-8 can carry; the codec refuses them too.
chars = st.characters(exclude_characters="\x00", exclude_categories=["Cs"])
texts = st.text(chars, min_size=1, max_size=300).filter(lambda t: t.strip() != "")
keys = st.text(chars, min_size=1, max_size=40).filter(lambda t: t.strip() != "")
stamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(post_id=keys, source=keys, text=texts, created_at=stamps, lang=st.none() | keys)
def test_valid_posts_round_trip(
    post_id: str, source: str, text: str, created_at: datetime, lang: str | None
) -> None:
    post = Post(id=post_id, source=source, text=text, created_at=created_at, lang=lang)
    data = encode_post(post)
    assert decode_post(data) == post
    VALIDATOR.validate(orjson.loads(data))


def test_integer_ids_are_read_as_strings() -> None:
    post = decode_post(orjson.dumps({**GOOD, "id": 1234567890123}))
    assert post.id == "1234567890123"


def test_offsets_are_kept() -> None:
    post = decode_post(orjson.dumps({**GOOD, "created_at": "2024-05-01T12:00:00+02:00"}))
    assert post.created_at.utcoffset() == timedelta(hours=2)
    assert post.created_at == datetime(2024, 5, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"id": "1", "source": ', "malformed JSON"),
        (b"\xff\xfe{}", "invalid UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "text"}), "missing field(s): text"),
        (orjson.dumps({"text": "x"}), "missing field(s): id, source, created_at"),
        (orjson.dumps({**GOOD, "text": "   "}), "'text' is empty"),
        (orjson.dumps({**GOOD, "text": "x" * 20_001}), "limit 20000"),
        (orjson.dumps({**GOOD, "text": 5}), "'text' must be a string"),
        (orjson.dumps({**GOOD, "created_at": "2024-05-01T12:00:00"}), "no time zone"),
        (orjson.dumps({**GOOD, "created_at": "yesterday"}), "not ISO 8601"),
        (orjson.dumps({**GOOD, "id": ""}), "'id' must be a non-empty string"),
        (orjson.dumps({**GOOD, "id": True}), "'id' must be a non-empty string"),
        (orjson.dumps({**GOOD, "lang": 3}), "'lang' must be a string"),
        (orjson.dumps({**GOOD, "metadata": [1]}), "'metadata' must be an object"),
        (orjson.dumps({**GOOD, "schema_version": 2}), "unsupported schema_version 2"),
        (orjson.dumps({**GOOD, "schema_version": True}), "unsupported schema_version True"),
        (orjson.dumps({**GOOD, "text": "a\x00b"}), "NUL"),
    ],
)
def test_bad_input_is_refused_with_its_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        decode_post(payload)
    assert reason in info.value.reason


def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"leaf": "x"}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ({"k": ["ok", {"deep": "a\x00b"}]}, "'metadata' contains U+0000"),
        ({"a\x00": 1}, "'metadata' contains U+0000"),
        # Deeper than orjson encodes (254) would fail the sink's whole batch; deeper than
        # the interpreter recurses must not crash the check itself.
        (_nested(MAX_METADATA_DEPTH + 1), f"nested deeper than {MAX_METADATA_DEPTH}"),
        (900, f"nested deeper than {MAX_METADATA_DEPTH}"),
    ],
)
def test_metadata_the_sinks_cannot_write_is_refused(
    metadata: dict[str, object] | int, reason: str
) -> None:
    if isinstance(metadata, int):
        # Too deep for orjson to encode: written by hand (orjson decodes up to 1024).
        inner = b'{"a":' * metadata + b"1" + b"}" * metadata
        payload = orjson.dumps(GOOD)[:-1] + b',"metadata":' + inner + b"}"
    else:
        payload = orjson.dumps({**GOOD, "metadata": metadata})
    with pytest.raises(InvalidRecord) as info:
        decode_post(payload)
    assert reason in info.value.reason


def test_metadata_with_a_literal_backslash_u0000_is_kept() -> None:
    # Six characters, no NUL: the JSON text holds "\\u0000", which contains "\u0000".
    metadata = {"path": "C:\\u0000", "n": _nested(MAX_METADATA_DEPTH - 1)}
    post = decode_post(orjson.dumps({**GOOD, "metadata": metadata}))
    assert post.metadata == metadata


def test_a_post_built_in_code_with_a_lone_surrogate_is_refused_when_encoded() -> None:
    post = Post(id="1", source="s", text="a \ud800 b", created_at=datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(InvalidRecord, match="cannot encode as JSON"):
        encode_post(post)


def test_schema_and_codec_agree_on_refusals() -> None:
    for bad in (
        {**GOOD, "text": ""},
        {**GOOD, "created_at": 5},
        {"id": "1"},
        {**GOOD, "schema_version": True},
    ):
        assert not VALIDATOR.is_valid(bad)
        with pytest.raises(InvalidRecord):
            decode_post(orjson.dumps(bad))


def test_the_text_limit_is_a_parameter() -> None:
    big = orjson.dumps({**GOOD, "text": "y" * 1_000_000})
    with pytest.raises(InvalidRecord, match="1000000 characters"):
        decode_post(big)
    assert len(decode_post(big, max_text_chars=1_000_000).text) == 1_000_000


def test_same_post_same_key_different_posts_different_keys() -> None:
    a = decode_post(orjson.dumps(GOOD))
    b = decode_post(orjson.dumps({**GOOD, "text": "edited"}))
    c = decode_post(orjson.dumps({**GOOD, "source": "reddit"}))
    assert a.key == b.key != c.key


def test_scored_round_trip_and_derived_fields() -> None:
    post = decode_post(orjson.dumps({**GOOD, "metadata": {"likes": 3}}))
    scored = ScoredPost(post, label=2, probs=(0.1, 0.2, 0.7), model_version="m1", brands=("acme",))
    back = decode_scored(encode_scored(scored))
    assert back.sentiment == "positive"
    assert back.score == pytest.approx(0.6)
    assert back.post == post and back.brands == ("acme",) and back.model_version == "m1"


def test_a_scored_record_is_its_post_record_then_the_score_fields() -> None:
    # scored_to_dict writes the post's fields out by hand (hot path): it must stay the
    # post's own record, field for field and in order, whatever optional fields are set.
    full = decode_post(
        orjson.dumps(
            {**GOOD, "author": "a", "url": "https://x.test/1", "lang": "en", "metadata": {"k": 1}}
        )
    )
    bare = decode_post(orjson.dumps(GOOD))
    for post in (full, bare):
        scored = ScoredPost(post, label=0, probs=(0.5, 0.25, 0.25), model_version="m", brands=())
        record = scored_to_dict(scored)
        fields = list(record.items())
        assert fields[: len(post_to_dict(post))] == list(post_to_dict(post).items())
        assert [k for k, _ in fields[len(post_to_dict(post)) :]] == [
            "brands",
            "sentiment",
            "score",
            "probs",
            "model_version",
        ]
        assert (record["sentiment"], record["score"]) == ("negative", -0.25)


def test_dead_letter_headers_carry_reason_origin_and_stage() -> None:
    dead = DeadLetter(b"\xff", "invalid UTF-8 at byte 0", "t[1]@7", "process")
    headers = dict(dead.headers())
    assert headers["moodwire-reason"] == b"invalid UTF-8 at byte 0"
    assert headers["moodwire-origin"] == b"t[1]@7"
    assert headers["moodwire-stage"] == b"process"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[1]",
        orjson.dumps(GOOD),  # a raw post: no sentiment, probs or version
        orjson.dumps({**GOOD, "sentiment": "angry", "probs": [0, 0, 1], "model_version": "m"}),
        orjson.dumps({**GOOD, "sentiment": "positive", "probs": [1], "model_version": "m"}),
    ],
)
def test_a_bad_scored_record_is_refused_with_a_reason(payload: bytes) -> None:
    with pytest.raises(InvalidRecord):
        decode_scored(payload)


def test_changes_decode_by_op_and_round_trip() -> None:
    from moodwire.records import PostChange, decode_record, encode_post

    delete = decode_record(
        b'{"op": "delete", "id": 7, "source": "bluesky", "created_at": "2024-01-01T00:00:00Z"}'
    )
    assert isinstance(delete, PostChange) and (delete.op, delete.id) == ("delete", "7")
    assert delete.key == b"bluesky\x1f7"
    assert decode_record(encode_post(delete)) == delete
    update = decode_record(
        b'{"op": "update", "id": "a", "source": "s", "text": "new", '
        b'"created_at": "2024-01-01T00:00:00Z", "edited_at": "2024-01-02T00:00:00Z"}'
    )
    assert isinstance(update, PostChange) and update.post is not None
    assert update.post.text == "new" and update.at.day == 2
    assert decode_record(encode_post(update)) == update
    plain = decode_record(
        b'{"id": "a", "source": "s", "text": "t", "created_at": "2024-01-01T00:00:00Z"}'
    )
    assert not isinstance(plain, PostChange)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"op": "delete", "id": "x", "created_at": "2024-01-01T00:00:00Z"}', "lacks field"),
        (b'{"op": "delete", "id": "x", "source": "s", "created_at": "soon"}', "ISO 8601"),
        (b'{"op": "upsert", "id": "x", "source": "s"}', "unknown op"),
        (
            b'{"op": "update", "id": "x", "source": "s", "created_at": "2024-01-01T00:00:00Z"}',
            "missing field",
        ),
    ],
)
def test_bad_changes_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    from moodwire.records import InvalidRecord, decode_record

    with pytest.raises(InvalidRecord, match=reason):
        decode_record(data)
