"""Alerts in Postgres: insert once per (kind, brand, source, window, model), read recent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert

from moodwire.alerts.detect import KIND, DetectorConfig, Spike
from moodwire.db import tables

ALL_SOURCES = "*"


def _stamp(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def insert_spike(
    conn: Connection, spike: Spike, model_version: str, config: DetectorConfig
) -> dict[str, Any] | None:
    """Insert the alert; returns it as stored when new, None when it was already there."""
    details = {
        "negative": spike.negative,
        "baseline_posts": spike.baseline_posts,
        "ratio": round(spike.ratio, 4),
        "z": round(spike.z, 3),
        "thresholds": config.as_dict(),
    }
    statement = (
        insert(tables.Alert)
        .values(
            kind=KIND,
            brand=spike.brand,
            source=ALL_SOURCES,
            model_version=model_version,
            window_start=_stamp(spike.window_start),
            window_end=_stamp(spike.window_end),
            posts=spike.posts,
            negative_share=spike.negative_share,
            baseline_share=spike.baseline_share,
            details=details,
        )
        .on_conflict_do_nothing(constraint="alerts_window_uq")
        .returning(*tables.Alert.__table__.columns)
    )
    row = conn.execute(statement).mappings().first()
    return None if row is None else as_json(row)


def recent(conn: Connection, limit: int = 20, brand: str | None = None) -> list[dict[str, Any]]:
    """The newest alerts first (by window, then by when they were raised)."""
    alert = tables.Alert
    query = select(*alert.__table__.columns)
    if brand is not None:
        query = query.where(alert.brand == brand)
    query = query.order_by(alert.window_start.desc(), alert.id.desc()).limit(limit)
    return [as_json(row) for row in conn.execute(query).mappings()]


def as_json(row: Any) -> dict[str, Any]:
    """An alert row as plain JSON types (timestamps in ISO 8601, UTC)."""
    out: dict[str, Any] = {}
    for key, value in dict(row).items():
        out[key] = value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value
    return out
