"""The delivery outbox in Postgres: one row per (alert, channel), written in the same
transaction as the alert, so an alert is stored with its deliveries or not at all.

A row's life: ``pending`` -> claimed (``lease_until`` set and ``attempts`` counted, in its
own committed transaction, before anything is sent) -> ``sent``, or back to ``pending``
with ``next_attempt_at`` pushed out (capped exponential backoff with jitter), or
``failed`` (refused for good, or out of attempts). ``suppressed`` (a cooldown) and
``cancelled`` (acknowledged before it went out) are never sent. A claimed row whose lease
ran out was left by a sender that died mid-attempt: it is claimed again and re-sent with
the same delivery id.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.dialects.postgresql import insert

from moodwire.alerts.rules import AlertRules
from moodwire.db import tables

PENDING, SENT, FAILED, SUPPRESSED, CANCELLED = (
    "pending",
    "sent",
    "failed",
    "suppressed",
    "cancelled",
)


def _when(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def enqueue(
    conn: Connection, alert: dict[str, Any], rules: AlertRules, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Outbox rows for a new alert, per its brand's rule; call in the alert's transaction.

    The cooldown is in event time (window starts), like detection, so a replay of old data
    follows the same rule as live data; quiet hours are wall-clock time (people sleep by
    the clock) and defer the delivery to their end.
    """
    now = now or datetime.now(UTC)
    rule = rules.for_brand(str(alert["brand"]))
    if not rule.wants(str(alert["kind"])):
        return []
    start = _when(alert["window_start"])
    rows: list[dict[str, Any]] = []
    for channel in rule.channels:
        status, reason, due = PENDING, None, now
        previous = conn.execute(
            text(
                "SELECT a.id, a.window_start FROM alert_deliveries d"
                " JOIN alerts a ON a.id = d.alert_id"
                " WHERE d.channel = :channel AND a.brand = :brand AND a.kind = :kind"
                " AND d.status IN ('pending', 'sent') AND a.id <> :id"
                " AND a.window_start > :since AND a.window_start <= :start"
                " ORDER BY a.window_start DESC LIMIT 1"
            ),
            {
                "channel": channel,
                "brand": alert["brand"],
                "kind": alert["kind"],
                "id": alert["id"],
                "since": start - timedelta(seconds=rule.cooldown_s),
                "start": start,
            },
        ).first()
        if previous is not None:
            status = SUPPRESSED
            reason = (
                f"cooldown: alert {previous.id} of {previous.window_start:%H:%M} UTC went to "
                f"{channel} less than {rule.cooldown_s:g} s of event time before"
            )
        elif rule.quiet_hours is not None and rule.quiet_hours.active(now):
            due = rule.quiet_hours.ends_after(now)
            reason = f"quiet hours: deferred to {due.isoformat()}"
        row = {
            "alert_id": alert["id"],
            "channel": channel,
            "delivery_id": str(uuid.uuid4()),
            "status": status,
            "next_attempt_at": due,
            "reason": reason,
        }
        inserted = conn.execute(
            insert(tables.AlertDelivery)
            .values(**row)
            .on_conflict_do_nothing(constraint="alert_deliveries_alert_channel_uq")
            .returning(tables.AlertDelivery.id)
        ).first()
        if inserted is not None:
            rows.append(row)
    return rows


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    alert_id: int
    channel: str
    delivery_id: str
    attempts: int  # this attempt included
    resumed: bool  # the previous attempt ended with its sender (no outcome recorded)
    alert: dict[str, Any]


def claim(conn: Connection, channel: str, lease_s: float) -> Claimed | None:
    """Take the channel's most overdue row for one attempt; commit before sending.

    ``SKIP LOCKED`` and the lease keep two senders off the same row.
    """
    row = (
        conn.execute(
            text(
                "WITH due AS ("
                " SELECT id, lease_until AS old_lease FROM alert_deliveries"
                " WHERE channel = :channel AND status = 'pending' AND next_attempt_at <= now()"
                " AND (lease_until IS NULL OR lease_until < now())"
                " ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)"
                " UPDATE alert_deliveries d SET attempts = d.attempts + 1,"
                " lease_until = now() + make_interval(secs => :lease),"
                " last_attempt_at = now()"
                " FROM due WHERE d.id = due.id"
                " RETURNING d.id, d.alert_id, d.channel, d.delivery_id, d.attempts,"
                " due.old_lease IS NOT NULL AS resumed"
            ),
            {"channel": channel, "lease": lease_s},
        )
        .mappings()
        .first()
    )
    if row is None:
        return None
    from moodwire.alerts.store import get

    alert = get(conn, row["alert_id"])
    assert alert is not None  # the foreign key cascades: no row outlives its alert
    return Claimed(alert=alert, **dict(row))


def mark_sent(conn: Connection, delivery: int) -> None:
    conn.execute(
        text(
            "UPDATE alert_deliveries SET status = 'sent', sent_at = now(), lease_until = NULL,"
            " last_error = NULL WHERE id = :id"
        ),
        {"id": delivery},
    )


def backoff_s(attempts: int, initial: float, cap: float, rng: random.Random | None = None) -> float:
    """``min(cap, initial * 2^(attempts-1))`` times a random 0.5-1: doubling pauses, spread
    so that channels failing together do not retry in step, never under half the pause."""
    ceiling = min(cap, initial * 2 ** max(0, attempts - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


def mark_failed(
    conn: Connection,
    claimed: Claimed,
    error: str,
    *,
    give_up: bool,
    retry_in: float,
) -> str:
    """Record a failed attempt: back to pending after ``retry_in`` s, or ``failed``."""
    status = FAILED if give_up else PENDING
    conn.execute(
        text(
            "UPDATE alert_deliveries SET status = :status, lease_until = NULL,"
            " last_error = :error,"
            " next_attempt_at = now() + make_interval(secs => :retry_in)"
            # Cancelled (acknowledged) meanwhile: it stays cancelled.
            " WHERE id = :id AND status = 'pending'"
        ),
        {"status": status, "error": error[:500], "retry_in": retry_in, "id": claimed.id},
    )
    return status


def cancel_pending(conn: Connection, alert_id: int, reason: str) -> int:
    """Pending deliveries of the alert that are not being sent right now become cancelled."""
    result = conn.execute(
        text(
            "UPDATE alert_deliveries SET status = 'cancelled', reason = :reason"
            " WHERE alert_id = :id AND status = 'pending'"
            " AND (lease_until IS NULL OR lease_until < now())"
        ),
        {"id": alert_id, "reason": reason},
    )
    return int(result.rowcount or 0)


def deliveries(conn: Connection, alert_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each alert's deliveries (channel order), as plain JSON types."""
    if not alert_ids:
        return {}
    rows = conn.execute(
        text(
            "SELECT alert_id, channel, delivery_id, status, attempts, next_attempt_at,"
            " last_attempt_at, last_error, reason, sent_at FROM alert_deliveries"
            " WHERE alert_id = ANY(:ids) ORDER BY alert_id, channel"
        ),
        {"ids": alert_ids},
    ).mappings()
    out: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        item = {
            k: (v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v)
            for k, v in row.items()
            if k != "alert_id"
        }
        out.setdefault(int(row["alert_id"]), []).append(item)
    return out
