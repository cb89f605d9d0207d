"""The outbox and its senders on a real Postgres, against real local receivers: every
channel once, retries with backoff, a failed or hanging channel never holding up the
others, cooldowns, quiet hours, acknowledgements, an attempt left by a dead sender."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from moodwire.alerts import outbox, store
from moodwire.alerts.delivery import Deliverer
from moodwire.alerts.rules import load
from moodwire.db.engine import make_engine
from moodwire.settings import Settings
from moodwire.stack.ports import free_port
from support.alert_outbox import Receivers, raise_alert, rules_file
from support.alert_receivers import wait_for


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alerts"))  # deliveries cascade
    yield engine
    engine.dispose()


def make_settings(database_url: str, tmp_path: Path, rules: Path, **kw: Any) -> Settings:
    fields: dict[str, Any] = dict(
        database_url=database_url, state_dir=tmp_path / "state", alert_rules_file=rules,
        alert_delivery_timeout=2.0, alert_delivery_interval=0.05, alert_retry_initial=0.3,
        alert_retry_max=1.0,
    )  # fmt: skip
    fields.update(kw)
    return Settings(**fields)


def deliveries(engine: Engine, alert_id: int) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {d["channel"]: d for d in outbox.deliveries(conn, [alert_id])[alert_id]}


def test_an_alert_reaches_every_channel_once(
    engine: Engine, database_url: str, tmp_path: Path, receivers: Receivers
) -> None:
    settings = make_settings(database_url, tmp_path, rules_file(tmp_path, receivers))
    rules = load(settings.alert_rules_file)  # type: ignore[arg-type]
    alert = raise_alert(engine, rules)
    deliverer = Deliverer(settings, rules, engine)
    assert deliverer.drain_all() == 3
    assert deliverer.drain_all() == 0  # nothing is sent twice
    state = deliveries(engine, alert["id"])
    assert {c: d["status"] for c, d in state.items()} == dict.fromkeys(state, "sent")
    assert len(receivers.slack.requests) == len(receivers.hook.requests) == 1
    assert receivers.hook.requests[0].headers["webhook-id"] == state["hook"]["delivery_id"]
    assert receivers.mail.message_ids() == [f"<{state['mail']['delivery_id']}@moodwire.alerts>"]
    assert state["ops"]["delivery_id"] in receivers.slack.requests[0].body.decode()


def test_a_failing_channel_is_retried_with_backoff_and_blocks_no_other(
    engine: Engine, database_url: str, tmp_path: Path, receivers: Receivers
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: connection refused
    settings = make_settings(database_url, tmp_path, rules_file(tmp_path, receivers, hook_url=dead))
    rules = load(settings.alert_rules_file)  # type: ignore[arg-type]
    receivers.slack.hold.set()  # Slack takes the request and then hangs
    stop = threading.Event()
    deliverer = Deliverer(settings, rules, engine)
    threads = deliverer.run(stop)
    try:
        started = time.monotonic()
        alert = raise_alert(engine, rules)
        # E-mail goes out while Slack hangs and the webhook is down.
        wait_for(lambda: receivers.slack.requests, 10, "the slack request")
        wait_for(lambda: receivers.mail.messages, 10, "the e-mail")
        assert time.monotonic() - started < settings.alert_delivery_timeout
        assert deliveries(engine, alert["id"])["ops"]["status"] == "pending"  # still hanging
        # The webhook is retried, pauses doubling, and shown failing meanwhile.
        wait_for(lambda: deliveries(engine, alert["id"])["hook"]["attempts"] >= 3, 15, "retries")
        hook = deliveries(engine, alert["id"])["hook"]
        assert hook["status"] == "pending" and "ConnectError" in hook["last_error"]
        with engine.connect() as conn:
            [listed] = store.recent(conn, with_deliveries=True)
        assert {d["channel"]: d["status"] for d in listed["deliveries"]}["mail"] == "sent"
        # Slack hangs past the timeout: a failed attempt, retried; then Slack recovers.
        wait_for(lambda: deliveries(engine, alert["id"])["ops"]["last_error"], 10, "a timeout")
        assert "Timeout" in deliveries(engine, alert["id"])["ops"]["last_error"]
        wait_for(lambda: len(receivers.slack.requests) == 2, 10, "slack's retry")
        receivers.slack.hold.clear()
        receivers.slack.released.set()
        wait_for(lambda: deliveries(engine, alert["id"])["ops"]["status"] == "sent", 15, "slack")
        ops = deliveries(engine, alert["id"])["ops"]
        assert ops["attempts"] == 2
        ids = {r.headers["x-moodwire-delivery-id"] for r in receivers.slack.requests}
        assert ids == {ops["delivery_id"]}  # the retry carried the same delivery id
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert len(receivers.mail.messages) == 1


def test_permanent_refusal_and_the_attempt_limit_end_as_failed(
    engine: Engine, database_url: str, tmp_path: Path, receivers: Receivers
) -> None:
    settings = make_settings(
        database_url, tmp_path, rules_file(tmp_path, receivers), alert_max_attempts=2
    )
    rules = load(settings.alert_rules_file)  # type: ignore[arg-type]
    receivers.slack.answers = [404]  # Slack: no_service, retrying cannot help
    receivers.hook.answers = [503, 503, 503]
    alert = raise_alert(engine, rules)
    deliverer = Deliverer(settings, rules, engine)
    deliverer.drain_all()
    state = deliveries(engine, alert["id"])
    assert state["ops"]["status"] == "failed" and "404" in state["ops"]["last_error"]
    assert state["hook"]["status"] == "pending" and state["mail"]["status"] == "sent"
    wait_for(lambda: deliverer.drain("hook"), 10, "the second webhook attempt")
    state = deliveries(engine, alert["id"])
    assert state["hook"]["status"] == "failed" and state["hook"]["attempts"] == 2
    time.sleep(0)  # (no more attempts are due: failed rows are never claimed)
    assert deliverer.drain_all() == 0 and len(receivers.hook.requests) == 2


def test_cooldown_quiet_hours_and_ack(
    engine: Engine, database_url: str, tmp_path: Path, receivers: Receivers
) -> None:
    extra = """brands:
  apple: {cooldown: 30m}
  google: {quiet_hours: {start: "22:00", end: "06:00", timezone: UTC}}
"""
    settings = make_settings(database_url, tmp_path, rules_file(tmp_path, receivers, extra))
    rules = load(settings.alert_rules_file)  # type: ignore[arg-type]
    first = raise_alert(engine, rules, "apple", 0)
    again = raise_alert(engine, rules, "apple", 20)  # 20 event minutes later: cooled down
    later = raise_alert(engine, rules, "apple", 31)
    assert {d["status"] for d in deliveries(engine, again["id"]).values()} == {"suppressed"}
    assert "cooldown" in deliveries(engine, again["id"])["ops"]["reason"]
    assert {d["status"] for d in deliveries(engine, later["id"]).values()} == {"pending"}
    night = datetime.now(UTC).replace(hour=23, minute=0, second=0, microsecond=0)
    quiet = raise_alert(engine, rules, "google", 0, now=night)
    hook = deliveries(engine, quiet["id"])["hook"]
    assert hook["reason"].startswith("quiet hours: deferred to")
    assert datetime.fromisoformat(hook["next_attempt_at"]) == (night + timedelta(hours=7))
    deliverer = Deliverer(settings, rules, engine)
    assert deliverer.drain_all() == 6  # first and later, three channels each; google waits
    assert len(receivers.mail.messages) == 2
    # Acknowledging cancels what still waits; the alert is no longer open.
    with engine.begin() as conn:
        result = store.acknowledge(conn, quiet["id"], "ana")
    assert result is not None and result[1] and result[0]["acked_by"] == "ana"
    assert {d["status"] for d in deliveries(engine, quiet["id"]).values()} == {"cancelled"}
    with engine.begin() as conn:
        assert store.acknowledge(conn, quiet["id"], "bo") == (store.get(conn, quiet["id"]), False)
        assert store.acknowledge(conn, 10**9, "bo") is None
        open_ids = {a["id"] for a in store.recent(conn, open_only=True)}
    assert open_ids == {first["id"], again["id"], later["id"]}


def test_an_attempt_left_by_a_dead_sender_is_resent_with_the_same_id(
    engine: Engine, database_url: str, tmp_path: Path, receivers: Receivers
) -> None:
    settings = make_settings(database_url, tmp_path, rules_file(tmp_path, receivers))
    rules = load(settings.alert_rules_file)  # type: ignore[arg-type]
    alert = raise_alert(engine, rules)
    with engine.begin() as conn:  # a sender claims the row, then dies before any outcome
        claimed = outbox.claim(conn, "hook", lease_s=0.5)
    assert claimed is not None and not claimed.resumed
    deliverer = Deliverer(settings, rules, engine)
    assert deliverer.drain("hook") == 0  # leased: no one else takes it meanwhile
    wait_for(lambda: deliverer.drain("hook"), 10, "the lease to run out")
    state = deliveries(engine, alert["id"])["hook"]
    assert state["status"] == "sent" and state["attempts"] == 2
    [request] = receivers.hook.requests
    assert request.headers["webhook-id"] == claimed.delivery_id == state["delivery_id"]
