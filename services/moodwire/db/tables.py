"""SQLAlchemy tables. The schema itself is created by the Alembic migrations in ``infra/``.

Keys are natural: a post is ``(source, source_id)``; a score is a post under one model
version, so a redelivered batch or a re-scoring run upserts instead of duplicating.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Post(Base):
    __tablename__ = "posts"

    source: Mapped[str] = mapped_column(Text, primary_key=True)
    source_id: Mapped[str] = mapped_column(Text, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    author: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    lang: Mapped[str | None] = mapped_column(Text)
    # Brands the post mentions; empty when none (still counted, under no brand).
    brands: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    ingested_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    # A deleted post keeps its row (and its place in the counts) with text and author erased.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    edited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("posts_created_at_idx", "created_at"),
        Index("posts_brands_idx", "brands", postgresql_using="gin"),
    )


class Score(Base):
    __tablename__ = "scores"

    source: Mapped[str] = mapped_column(Text, primary_key=True)
    source_id: Mapped[str] = mapped_column(Text, primary_key=True)
    model_version: Mapped[str] = mapped_column(Text, primary_key=True)
    # 0 negative, 1 neutral, 2 positive (the label ids of the data and the model).
    label: Mapped[int] = mapped_column(SmallInteger)
    p_negative: Mapped[float] = mapped_column(Float)
    p_neutral: Mapped[float] = mapped_column(Float)
    p_positive: Mapped[float] = mapped_column(Float)
    # p_positive - p_negative, in [-1, 1].
    score: Mapped[float] = mapped_column(Float)
    scored_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        ForeignKeyConstraint(
            ["source", "source_id"], ["posts.source", "posts.source_id"], ondelete="CASCADE"
        ),
        Index("scores_model_version_idx", "model_version"),
    )


class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(Text)  # e.g. "negative_spike"
    brand: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text, server_default="*")  # "*": all sources
    model_version: Mapped[str] = mapped_column(Text)
    window_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    window_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    posts: Mapped[int] = mapped_column(Integer)
    negative_share: Mapped[float] = mapped_column(Float)
    baseline_share: Mapped[float | None] = mapped_column(Float)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Set by `moodwire alerts ack`: an acknowledged alert is no longer open.
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acked_by: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # One alert per brand, source, window and model: re-running detection is a no-op.
        UniqueConstraint(
            "kind", "brand", "source", "window_start", "model_version", name="alerts_window_uq"
        ),
        Index("alerts_created_at_idx", "created_at"),
    )


class AlertDelivery(Base):
    """The delivery outbox: one row per alert and channel, written in the alert's own
    transaction (``moodwire.alerts.outbox``), marked sent once the channel accepted it."""

    __tablename__ = "alert_deliveries"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(BigInteger)
    channel: Mapped[str] = mapped_column(Text)
    # Sent with every attempt (webhook-id, Message-ID), so a receiver can drop repeats.
    delivery_id: Mapped[str] = mapped_column(Text)
    # pending | sent | failed | suppressed | cancelled
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    # While an attempt runs: a row whose lease ran out was left by a crashed sender.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)  # why suppressed, deferred or cancelled
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        ForeignKeyConstraint(["alert_id"], ["alerts.id"], ondelete="CASCADE"),
        UniqueConstraint("alert_id", "channel", name="alert_deliveries_alert_channel_uq"),
        UniqueConstraint("delivery_id", name="alert_deliveries_delivery_id_uq"),
        Index("alert_deliveries_due_idx", "channel", "status", "next_attempt_at"),
    )


class DeadLetter(Base):
    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # Where the bad record came from: a Kafka position, or a connector and line.
    origin: Mapped[str] = mapped_column(Text)
    stage: Mapped[str] = mapped_column(Text)  # "ingest" or "process"
    # topic/partition/offset: the record's position in the dead-letter topic itself.
    topic: Mapped[str | None] = mapped_column(Text)
    partition: Mapped[int | None] = mapped_column(Integer)
    offset: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # What makes a dead letter one (moodwire.process.dead_letters): the refused record's
    # own position, raw topic incarnation (topic id) + partition + offset, for the
    # processor's; else the dead-letter topic's incarnation + position. Not the topic name:
    # a recreated topic starts again at offset 0.
    origin_key: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        # A redelivered bad record is recorded once, whatever position it was re-sent at.
        UniqueConstraint("origin_key", name="dead_letters_origin_key_uq"),
    )


class ConnectorCursor(Base):
    """Where a connector resumes: one offset per (connector, source partition), written
    only once the broker has acknowledged every record up to it (``moodwire.ingest``)."""

    __tablename__ = "connector_cursors"

    connector: Mapped[str] = mapped_column(Text, primary_key=True)
    partition: Mapped[str] = mapped_column(Text, primary_key=True)
    cursor: Mapped[dict[str, Any]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PostEdit(Base):
    """An edit a source reported: the text the post had before it (``posts`` holds the
    newest). Erased with the post when it is deleted."""

    __tablename__ = "post_edits"

    source: Mapped[str] = mapped_column(Text, primary_key=True)
    source_id: Mapped[str] = mapped_column(Text, primary_key=True)
    edited_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    previous_text: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        ForeignKeyConstraint(
            ["source", "source_id"], ["posts.source", "posts.source_id"], ondelete="CASCADE"
        ),
    )


class UnscoredMinute(Base):
    """Posts stored without a sentiment because the model does not read their language,
    per brand (as the aggregates name them: each brand, ``(none)`` and ``*``), source,
    language and event-time minute. Written with the posts, counting only new rows."""

    __tablename__ = "unscored_minutes"

    brand: Mapped[str] = mapped_column(Text, primary_key=True)
    source: Mapped[str] = mapped_column(Text, primary_key=True)
    lang: Mapped[str] = mapped_column(Text, primary_key=True)
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class Rollup(Base):
    """Per-minute aggregates of the score rows (``moodwire.aggregates.rollup``): counted in
    the transaction that inserts the scores, only for score rows new in it. The Redis
    aggregates are a copy of this table, rebuilt from it when lost."""

    __tablename__ = "rollups"

    model_version: Mapped[str] = mapped_column(Text, primary_key=True)
    # A brand id, "*" (every post once) or "(none)" (posts that name no brand).
    brand: Mapped[str] = mapped_column(Text, primary_key=True)
    source: Mapped[str] = mapped_column(Text, primary_key=True)
    minute: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)
    neg: Mapped[int] = mapped_column(BigInteger)
    neu: Mapped[int] = mapped_column(BigInteger)
    pos: Mapped[int] = mapped_column(BigInteger)
    score_sum: Mapped[float] = mapped_column(Float)
    # +1 per transaction that changes the row: the Redis copy keeps the highest it saw.
    rev: Mapped[int] = mapped_column(BigInteger)
