"""Alerts in Postgres: insert once per (kind, brand, source, window, model), read recent."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select, update
from sqlalchemy.dialects.postgresql import insert

from moodwire.alerts.detect import DetectorConfig, Spike
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
        "score": round(spike.score, 3),
        **spike.details,
        "thresholds": config.as_dict(),
    }
    statement = (
        insert(tables.Alert)
        .values(
            kind=spike.kind,
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


def recent(
    conn: Connection,
    limit: int = 20,
    brand: str | None = None,
    *,
    open_only: bool = False,
    with_deliveries: bool = False,
) -> list[dict[str, Any]]:
    """The newest alerts first (by window, then by when they were raised); ``open_only``:
    not acknowledged yet; ``with_deliveries``: each with its outbox rows."""
    alert = tables.Alert
    query = select(*alert.__table__.columns)
    if brand is not None:
        query = query.where(alert.brand == brand)
    if open_only:
        query = query.where(alert.acked_at.is_(None))
    query = query.order_by(alert.window_start.desc(), alert.id.desc()).limit(limit)
    rows = [as_json(row) for row in conn.execute(query).mappings()]
    if with_deliveries:
        from moodwire.alerts.outbox import deliveries

        by_alert = deliveries(conn, [int(r["id"]) for r in rows])
        for row in rows:
            row["deliveries"] = by_alert.get(int(row["id"]), [])
    return rows


def get(conn: Connection, alert_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(select(*tables.Alert.__table__.columns).where(tables.Alert.id == alert_id))
        .mappings()
        .first()
    )
    return None if row is None else as_json(row)


def acknowledge(
    conn: Connection, alert_id: int, by: str | None
) -> tuple[dict[str, Any], bool] | None:
    """Mark the alert acknowledged; returns it and whether this call did it (False: it
    already was), or None when there is no such alert. Deliveries still waiting
    (quiet hours, a retry) are cancelled: someone already knows."""
    from moodwire.alerts.outbox import cancel_pending

    alert = tables.Alert
    done = conn.execute(
        update(alert)
        .where(alert.id == alert_id, alert.acked_at.is_(None))
        .values(acked_at=func.now(), acked_by=by)
        .returning(alert.id)
    ).first()
    if done is not None:
        cancel_pending(conn, alert_id, f"acknowledged by {by}" if by else "acknowledged")
    row = get(conn, alert_id)
    return None if row is None else (row, done is not None)


def as_json(row: Any) -> dict[str, Any]:
    """An alert row as plain JSON types (timestamps in ISO 8601, UTC)."""
    out: dict[str, Any] = {}
    for key, value in dict(row).items():
        out[key] = value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value
    return out
