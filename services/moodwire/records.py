"""The records that flow through moodwire and their one codec (bytes <-> record).

A raw post on the wire is a JSON object (schema: ``schemas/post.v1.json``). Decoding
validates at the edge and raises :class:`InvalidRecord` with a human-readable reason;
callers turn that into a dead letter, never a crash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from moodwire.labels import LABELS

SCHEMA_VERSION = 1
DEFAULT_MAX_TEXT_CHARS = 20_000
_MAX_KEY_CHARS = 256
MAX_METADATA_DEPTH = 64
_OPTIONAL_STR = ("author", "url", "lang")
# Apache Kafka's default message.max.bytes is 1 MiB + 12 (1,048,588) per record batch; a
# record must stay under it on every topic it travels (raw, scored, dead letters), with
# room for its headers and the batch framing (a few hundred bytes).
DEFAULT_MAX_RECORD_BYTES = 1_040_000
# What a scored record adds to its post at most, besides its brands: sentiment, score,
# probs, model version and the canonical fields (measured about 200 bytes).
SCORED_OVERHEAD_BYTES = 4096
# A source name becomes part of Redis keys (``mw:agg:{mv}:{brand}:{source}:{minute}``):
# no ``:``, no spaces or control characters, and short.
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


class InvalidRecord(ValueError):
    """A record that cannot enter the pipeline; ``reason`` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Post:
    id: str
    source: str
    text: str
    created_at: datetime
    author: str | None = None
    url: str | None = None
    lang: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def key(self) -> bytes:
        """Kafka key: the same post always lands in the same partition."""
        return f"{self.source}\x1f{self.id}".encode()


@dataclass(frozen=True, slots=True)
class PostChange:
    """An edit or a delete of a post, as a source reported it (``"op"`` on the wire).

    It travels on the raw topic under the post's own key, so it lands in the post's
    partition after the post itself and is applied in that order. ``post`` is the new
    version of an edited post (None for a delete); ``at`` is when the change happened.
    """

    op: Literal["update", "delete"]
    source: str
    id: str
    at: datetime
    post: Post | None = None

    @property
    def key(self) -> bytes:
        return f"{self.source}\x1f{self.id}".encode()

    @property
    def created_at(self) -> datetime:
        """The change's own time (what a replay paces by)."""
        return self.at


@dataclass(frozen=True, slots=True)
class ScoredPost:
    post: Post
    label: int
    probs: tuple[float, float, float]
    model_version: str
    brands: tuple[str, ...] = ()

    @property
    def sentiment(self) -> str:
        return LABELS[self.label]

    @property
    def score(self) -> float:
        """p_positive - p_negative, in [-1, 1]."""
        return self.probs[2] - self.probs[0]


@dataclass(frozen=True, slots=True)
class UnscoredPost:
    """A post stored and counted without a sentiment: the model does not read its
    language (``moodwire.language``)."""

    post: Post
    brands: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the pipeline refused: its original bytes, why, and where it came from."""

    payload: bytes
    reason: str
    origin: str  # e.g. "moodwire.posts.raw[2]@1041" or "file:///data/feed.jsonl:17"
    stage: str  # "ingest" or "process"
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers for the dead-letter topic; the message value is ``payload``."""
        out = [
            ("moodwire-reason", self.reason.encode()),
            ("moodwire-origin", self.origin.encode()),
            ("moodwire-stage", self.stage.encode()),
        ]
        out.extend((f"moodwire-{k}", v.encode()) for k, v in self.extra.items())
        return out


def kafka_origin(topic: str, partition: int, offset: int) -> str:
    return f"{topic}[{partition}]@{offset}"


def bounded_payload(payload: bytes, max_bytes: int) -> tuple[bytes, dict[str, str]]:
    """A dead letter's value cut to ``max_bytes`` (an oversized record must still fit the
    dead-letter topic), with the ``truncated`` header giving the original size."""
    if len(payload) <= max_bytes:
        return payload, {}
    return payload[:max_bytes], {"truncated": str(len(payload))}


@dataclass(frozen=True, slots=True)
class Bounds:
    """What the pipeline refuses beyond the schema (``from_settings``); None: no bound.

    - ``max_record_bytes``: a longer encoded record is refused before it is parsed.
    - ``max_future``: a post stamped further ahead of the clock would pin the alerts'
      event-time clock and top "recent posts" forever.
    - ``not_before``: older stamps are bugs (epoch 0, year 1), not history.
    - ``source_names``: a source becomes part of Redis keys, so it must match
      :data:`SOURCE_NAME`; ``sources``, when set, is the only sources accepted (a source
      per post would otherwise make the key count explode).
    """

    max_record_bytes: int | None = None
    max_future: timedelta | None = None
    not_before: datetime | None = None
    source_names: bool = False
    sources: frozenset[str] | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> Bounds:
        return cls(
            max_record_bytes=settings.max_record_bytes,
            max_future=timedelta(seconds=settings.max_future_seconds),
            not_before=settings.min_created_at,
            source_names=True,
            sources=settings.allowed_sources,
        )

    def check_size(self, data: bytes) -> None:
        limit = self.max_record_bytes
        if limit is not None and len(data) > limit:
            raise InvalidRecord(f"record has {len(data)} bytes (limit {limit})")

    def check(self, record: Post | PostChange, now: datetime | None = None) -> None:
        """InvalidRecord when ``record`` is out of bounds (time, source)."""
        stamps = [record.at] if isinstance(record, PostChange) else [record.created_at]
        if isinstance(record, PostChange) and record.post is not None:
            stamps.append(record.post.created_at)
        if self.max_future is not None:
            now = now or datetime.now(UTC)
            latest = now + self.max_future
            for stamp in stamps:
                if stamp > latest:
                    ahead = (stamp - now).total_seconds()
                    raise InvalidRecord(
                        f"field 'created_at' is {ahead:.0f} s in the future (tolerance "
                        f"{self.max_future.total_seconds():.0f} s): {stamp.isoformat()}"
                    )
        if self.not_before is not None:
            for stamp in stamps:
                if stamp < self.not_before:
                    raise InvalidRecord(
                        f"field 'created_at' is before {self.not_before.isoformat()}: "
                        f"{stamp.isoformat()}"
                    )
        source = record.source
        if self.source_names and SOURCE_NAME.fullmatch(source) is None:
            raise InvalidRecord(
                f"field 'source' {source[:70]!r} is not a source name (letters, digits and "
                "._@+- only, at most 64 characters)"
            )
        if self.sources is not None and source not in self.sources:
            raise InvalidRecord(f"source {source[:70]!r} is not in MOODWIRE_SOURCES")


NO_BOUNDS = Bounds()


# --- raw posts ---------------------------------------------------------------------


def decode_post(data: bytes, *, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> Post:
    """Bytes from the raw topic (or a JSON Lines file) -> a valid Post, or InvalidRecord."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # orjson rejects invalid UTF-8 too; say which it was.
        try:
            bytes(data).decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise InvalidRecord(f"invalid UTF-8 at byte {uexc.start}") from None
        raise InvalidRecord(f"malformed JSON: {exc}") from None
    return post_from_dict(obj, max_text_chars=max_text_chars)


def decode_record(
    data: bytes, *, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, bounds: Bounds = NO_BOUNDS
) -> Post | PostChange:
    """Like :func:`decode_post`, but an object with ``"op": "update"|"delete"`` is a
    :class:`PostChange` (an absent ``op``, or ``"create"``, is a post). ``bounds``: the
    size is checked before parsing, time and source after."""
    bounds.check_size(data)
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return decode_post(data, max_text_chars=max_text_chars)  # says why
    return record_from_dict(obj, max_text_chars=max_text_chars, bounds=bounds)


def record_from_dict(
    obj: Any, *, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, bounds: Bounds = NO_BOUNDS
) -> Post | PostChange:
    record = _record_from_dict(obj, max_text_chars)
    if bounds is not NO_BOUNDS:
        bounds.check(record)
    return record


def _record_from_dict(obj: Any, max_text_chars: int) -> Post | PostChange:
    op = obj.get("op") if isinstance(obj, dict) else None
    if op is None or op == "create":
        return post_from_dict(obj, max_text_chars=max_text_chars)
    if op == "update":
        post = post_from_dict(obj, max_text_chars=max_text_chars)
        edited = obj.get("edited_at")
        at = parse_timestamp(edited) if edited is not None else post.created_at
        return PostChange("update", post.source, post.id, at, post)
    if op == "delete":
        missing = [k for k in ("id", "source", "created_at") if obj.get(k) is None]
        if missing:
            raise InvalidRecord("delete lacks field(s): " + ", ".join(missing))
        post_id, source = obj["id"], obj["source"]
        if isinstance(post_id, int) and not isinstance(post_id, bool):
            post_id = str(post_id)
        for name, value in (("id", post_id), ("source", source)):
            if not isinstance(value, str) or not value.strip() or "\x00" in value:
                raise InvalidRecord(f"field {name!r} must be a non-empty string")
            if len(value) > _MAX_KEY_CHARS:
                raise InvalidRecord(f"field {name!r} longer than {_MAX_KEY_CHARS} characters")
        return PostChange("delete", source, post_id, parse_timestamp(obj["created_at"]))
    raise InvalidRecord(f"unknown op {str(op)[:40]!r} (expected create, update or delete)")


def change_to_dict(change: PostChange) -> dict[str, Any]:
    if change.post is not None:
        out = post_to_dict(change.post)
        out.update(op=change.op, edited_at=change.at.isoformat())
        return out
    return {
        "schema_version": SCHEMA_VERSION,
        "op": change.op,
        "id": change.id,
        "source": change.source,
        "created_at": change.at.isoformat(),
    }


def post_from_dict(obj: Any, *, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> Post:
    if not isinstance(obj, dict):
        raise InvalidRecord(f"expected a JSON object, got {type(obj).__name__}")
    version = obj.get("schema_version", SCHEMA_VERSION)
    # True == 1 in Python, but JSON's true is no version (the schema refuses it too).
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise InvalidRecord(f"unsupported schema_version {version!r} (expected {SCHEMA_VERSION})")
    missing = [k for k in ("id", "source", "text", "created_at") if obj.get(k) is None]
    if missing:
        raise InvalidRecord("missing field(s): " + ", ".join(missing))

    post_id = obj["id"]
    if isinstance(post_id, int) and not isinstance(post_id, bool):
        post_id = str(post_id)
    source = obj["source"]
    for name, value in (("id", post_id), ("source", source)):
        if not isinstance(value, str) or not value.strip():
            raise InvalidRecord(f"field {name!r} must be a non-empty string")
        if len(value) > _MAX_KEY_CHARS:
            raise InvalidRecord(f"field {name!r} longer than {_MAX_KEY_CHARS} characters")

    text = obj["text"]
    if not isinstance(text, str):
        raise InvalidRecord(f"field 'text' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise InvalidRecord("field 'text' is empty")
    if len(text) > max_text_chars:
        raise InvalidRecord(f"field 'text' has {len(text)} characters (limit {max_text_chars})")

    created_at = parse_timestamp(obj["created_at"])

    optional: dict[str, str | None] = {}
    for name in _OPTIONAL_STR:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidRecord(f"field {name!r} must be a string or null")
        optional[name] = value
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRecord("field 'metadata' must be an object or null")

    # PostgreSQL text and JSONB cannot hold U+0000: let one through and the sink would
    # retry that batch forever.
    if any("\x00" in v for v in (post_id, source, text, *optional.values()) if v):
        raise InvalidRecord("a text field contains U+0000 (NUL)")
    if metadata is not None:
        _check_metadata(metadata)

    return Post(
        id=post_id,
        source=source,
        text=text,
        created_at=created_at,
        author=optional["author"],
        url=optional["url"],
        lang=optional["lang"],
        metadata=metadata,
    )


def _check_metadata(metadata: dict[str, Any]) -> None:
    """Refuse metadata that the sinks could not write.

    PostgreSQL JSONB cannot hold U+0000, and orjson (which encodes metadata for the sinks
    and the scored topic) stops at 254 levels of nesting; either would fail a whole batch
    downstream instead of this one record here. An iterative walk rather than a search of
    the encoded JSON: that would also hit a literal backslash before "u0000".
    """
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH and isinstance(value, dict | list):
            raise InvalidRecord(f"field 'metadata' is nested deeper than {MAX_METADATA_DEPTH}")
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and "\x00" in key:
                    raise InvalidRecord("field 'metadata' contains U+0000 (NUL)")
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str) and "\x00" in value:
            raise InvalidRecord("field 'metadata' contains U+0000 (NUL)")


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 with a zone (``Z`` or ``+hh:mm``); naive times are ambiguous, so refused."""
    if not isinstance(value, str):
        raise InvalidRecord("field 'created_at' must be an ISO 8601 string")
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRecord(f"field 'created_at' is not ISO 8601: {value[:40]!r}") from None
    if stamp.tzinfo is None:
        raise InvalidRecord("field 'created_at' has no time zone")
    return stamp


def post_to_dict(post: Post) -> dict[str, Any]:
    # Each optional field written out, not looped over by name: this runs once per post
    # on the worker's hot path (the scored records), where the loop showed in profiles.
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "id": post.id,
        "source": post.source,
        "text": post.text,
        "created_at": post.created_at.isoformat(),
    }
    if post.author is not None:
        out["author"] = post.author
    if post.url is not None:
        out["url"] = post.url
    if post.lang is not None:
        out["lang"] = post.lang
    if post.metadata is not None:
        out["metadata"] = post.metadata
    return out


def encode_post(post: Post | PostChange) -> bytes:
    """The post (or change) as ``post.v1`` JSON; InvalidRecord when a string cannot be
    UTF-8 (a lone surrogate, which only a connector that builds posts in code can make)."""
    try:
        return orjson.dumps(
            change_to_dict(post) if isinstance(post, PostChange) else post_to_dict(post)
        )
    except orjson.JSONEncodeError as exc:
        raise InvalidRecord(f"cannot encode as JSON: {exc}") from None


# --- scored posts ----------------------------------------------------------------------


def scored_to_dict(scored: ScoredPost) -> dict[str, Any]:
    """The post's ``post.v1`` fields, then brands, sentiment, score, probs, model_version."""
    out = post_to_dict(scored.post)
    negative, neutral, positive = scored.probs
    out["brands"] = list(scored.brands)
    out["sentiment"] = LABELS[scored.label]
    out["score"] = round(positive - negative, 6)
    out["probs"] = [round(negative, 6), round(neutral, 6), round(positive, 6)]
    out["model_version"] = scored.model_version
    return out


def encode_scored(scored: ScoredPost) -> bytes:
    return orjson.dumps(scored_to_dict(scored))


def decode_scored(data: bytes) -> ScoredPost:
    """A record of the scored-posts topic, or InvalidRecord saying what is wrong with it."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidRecord(f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    post = post_from_dict(obj, max_text_chars=max(len(text) if isinstance(text, str) else 0, 1))
    try:
        probs = obj["probs"]
        scored = ScoredPost(
            post=post,
            label=LABELS.index(obj["sentiment"]),
            probs=(float(probs[0]), float(probs[1]), float(probs[2])),
            model_version=str(obj["model_version"]),
            brands=tuple(str(b) for b in obj.get("brands") or ()),
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise InvalidRecord(f"not a scored post: {exc!r}") from None
    return scored
