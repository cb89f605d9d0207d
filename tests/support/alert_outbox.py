"""Helpers of the alert delivery tests: the three receivers together, a rules file that
points at them, and an alert raised the way the detector raises one (the alert row and its
outbox rows in one transaction)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert

from moodwire.alerts import outbox, store
from moodwire.alerts.rules import AlertRules
from moodwire.db import tables
from support.alert_receivers import HttpReceiver, Mailbox

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Receivers:
    slack: HttpReceiver
    hook: HttpReceiver
    mail: Mailbox


def rules_file(tmp_path: Path, r: Receivers, extra: str = "", hook_url: str | None = None) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(
        f"""
channels:
  ops: {{type: slack, url_env: TEST_SLACK_URL}}
  hook: {{type: webhook, url: "{hook_url or r.hook.url}", secret_env: TEST_HOOK_SECRET}}
  mail: {{type: email, host: 127.0.0.1, port: {r.mail.port}, tls: none,
          from: bot@example.com, to: [team@example.com]}}
defaults:
  channels: [ops, hook, mail]
  cooldown: 0
{extra}
"""
    )
    return path


def raise_alert(
    engine: Engine,
    rules: AlertRules,
    brand: str = "apple",
    minute: int = 0,
    now: datetime | None = None,
) -> dict[str, Any]:
    """An alert row and its outbox rows in one transaction, as the detector writes them."""
    with engine.begin() as conn:
        row = (
            conn.execute(
                insert(tables.Alert)
                .values(
                    kind="negative_shift",
                    brand=brand,
                    source="*",
                    model_version="test",
                    window_start=T0 + timedelta(minutes=minute),
                    window_end=T0 + timedelta(minutes=minute + 2),
                    posts=120,
                    negative_share=0.5,
                    baseline_share=0.2,
                )
                .returning(*tables.Alert.__table__.columns)
            )
            .mappings()
            .one()
        )
        alert = store.as_json(row)
        outbox.enqueue(conn, alert, rules, now=now)
    return alert
