"""`moodwire alerts` (a real subprocess) SIGKILLed at points of its delivery, then
restarted: every alert reaches every receiver, and a repeat only ever comes from an
attempt in flight at the kill, with the same delivery id (which the webhook receiver here
drops, as the README asks of one)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import Engine, text

from moodwire.alerts.rules import load
from moodwire.db.engine import make_engine
from moodwire.settings import Settings
from support.alert_outbox import Receivers, raise_alert, rules_file
from support.alert_receivers import wait_for
from support.web import model_version, write_minutes

MOODWIRE = Path(sys.executable).with_name("moodwire")
CHANNELS = ("ops", "hook", "mail")


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alerts"))
    yield engine
    engine.dispose()


def start(settings: Settings, rules: Path, log: Path, fault: str | None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOODWIRE_")}
    env.update(
        MOODWIRE_STATE_DIR=str(settings.state_dir),
        MOODWIRE_BROKER_URL=str(settings.broker_url),
        MOODWIRE_DATABASE_URL=str(settings.database_url),
        MOODWIRE_REDIS_URL=str(settings.redis_url),
        MOODWIRE_TOPIC_ALERTS=settings.topic_alerts,
        MOODWIRE_ALERT_RULES_FILE=str(rules),
        MOODWIRE_ALERT_INTERVAL="0.5",
        MOODWIRE_ALERT_DELIVERY_INTERVAL="0.1",
        MOODWIRE_ALERT_DELIVERY_TIMEOUT="1",  # a lease of 3 s
        MOODWIRE_ALERT_RETRY_INITIAL="0.5",
        MOODWIRE_METRICS_PORT="0",
        MOODWIRE_LOG_FORMAT="json",
    )
    if fault is not None:
        env["MOODWIRE_ALERT_FAULT_CRASH"] = fault
    with log.open("ab") as out:
        return subprocess.Popen([str(MOODWIRE), "alerts"], env=env, stdout=out, stderr=out)


def steady_plan(rng: random.Random, upto: int = 85) -> list[tuple[str, int, int, int]]:
    """Two brands with noisy but steady moods (apple ~20%, google ~30% negative)."""
    plan: list[tuple[str, int, int, int]] = []
    for m in range(upto):
        plan.append(("apple", m, 40, sum(rng.random() < 0.2 for _ in range(40))))
        plan.append(("google", m, 30, sum(rng.random() < 0.3 for _ in range(30))))
    return plan


def outbox_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT channel, delivery_id, status, lease_until FROM alert_deliveries")
        )
        return [dict(r) for r in rows.mappings()]


def received_ids(r: Receivers) -> dict[str, Counter[str]]:
    slack = [orjson.loads(b)["text"].rsplit("Delivery id: ", 1)[1] for b in r.slack.bodies()]
    return {
        "ops": Counter(slack),
        "hook": Counter(req.headers["webhook-id"] for req in r.hook.requests),
        "mail": Counter(str(m["X-Moodwire-Delivery-Id"]) for m in r.mail.messages),
    }


@pytest.mark.parametrize("point", ["after_claim", "after_send", "sigkill_mid_request"])
def test_killed_mid_delivery_then_restarted_delivers_each_alert_once(
    point: str,
    settings: Settings,
    engine: Engine,
    receivers: Receivers,
    tmp_path: Path,
) -> None:
    rules_path = rules_file(tmp_path, receivers)
    rules = load(rules_path)
    for brand in ("apple", "google"):
        raise_alert(engine, rules, brand)
    log = tmp_path / "alerts.log"
    if point == "sigkill_mid_request":
        receivers.hook.hold.set()  # the webhook receiver has the request, the sender waits
        first = start(settings, rules_path, log, None)
        wait_for(lambda: receivers.hook.requests, 60, "the webhook request")
        first.send_signal(signal.SIGKILL)
        receivers.hook.hold.clear()
        receivers.hook.released.set()
    else:
        first = start(settings, rules_path, log, point)
    assert first.wait(60) == -signal.SIGKILL, log.read_text()[-2000:]
    in_flight = {r["delivery_id"] for r in outbox_rows(engine) if r["lease_until"] is not None}
    assert in_flight, "the kill left no attempt in flight"

    second = start(settings, rules_path, log, None)
    try:
        wait_for(
            lambda: {r["status"] for r in outbox_rows(engine)} == {"sent"}, 60, "every delivery"
        )
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-2000:]

    rows = outbox_rows(engine)
    assert len(rows) == 2 * len(CHANNELS)
    got = received_ids(receivers)
    for channel in CHANNELS:
        expected = {r["delivery_id"] for r in rows if r["channel"] == channel}
        assert set(got[channel]) == expected, channel  # nothing lost, nothing foreign
        for delivery_id, times in got[channel].items():
            # A repeat only for an attempt in flight at the kill, and at most one.
            assert times == 1 or (times == 2 and delivery_id in in_flight), (channel, times)
    repeats = sum(times - 1 for counts in got.values() for times in counts.values())
    if point == "after_claim":
        # The attempt that triggered the kill had sent nothing: it went out exactly once.
        assert repeats < len(in_flight)
    else:
        assert repeats >= 1  # the receiver had the message when the sender died
    # The webhook receiver dropped the repeat by its id: it accepted each alert once.
    assert len(receivers.hook.seen_ids) == 2
    assert "re-sending a delivery whose sender died mid-attempt" in log.read_text()


def test_killed_right_after_an_alert_is_stored_then_restarted(
    settings: Settings,
    engine: Engine,
    receivers: Receivers,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    """Detection in the subprocess: killed just after the first alert's transaction (the
    alert and its outbox rows) committed; the restart detects the second alert, not the
    first again, and delivers both."""
    plan = steady_plan(random.Random(7))
    plan += [("apple", 80, 40, 30), ("apple", 81, 40, 30)]
    plan += [("google", 80, 30, 27), ("google", 81, 30, 27)]
    write_minutes(redis_client, model_version(settings), settings.topic_raw, plan)
    rules_path = rules_file(tmp_path, receivers)
    log = tmp_path / "alerts.log"
    first = start(settings, rules_path, log, "after_enqueue")
    assert first.wait(60) == -signal.SIGKILL, log.read_text()[-2000:]
    with engine.connect() as conn:
        [brand] = conn.execute(text("SELECT brand FROM alerts")).scalars().all()
    assert brand in ("apple", "google")
    rows = outbox_rows(engine)
    assert len(rows) == len(CHANNELS) and {r["status"] for r in rows} <= {"pending", "sent"}
    in_flight = {r["delivery_id"] for r in rows if r["lease_until"] is not None}

    second = start(settings, rules_path, log, None)
    try:
        wait_for(
            lambda: (
                len(outbox_rows(engine)) == 2 * len(CHANNELS)
                and {r["status"] for r in outbox_rows(engine)} == {"sent"}
            ),
            90,
            "both alerts delivered",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-2000:]
    with engine.connect() as conn:
        brands = sorted(conn.execute(text("SELECT brand FROM alerts")).scalars().all())
    assert brands == ["apple", "google"]
    rows = outbox_rows(engine)
    got = received_ids(receivers)
    for channel in CHANNELS:
        assert set(got[channel]) == {r["delivery_id"] for r in rows if r["channel"] == channel}
        for delivery_id, times in got[channel].items():
            assert times == 1 or (times == 2 and delivery_id in in_flight)
