"""CLI: `moodwire alerts list / ack ID / test --channel NAME` (added to the alerts group)."""

from __future__ import annotations

import getpass
from datetime import datetime
from typing import Any

import orjson
import typer

from moodwire.settings import MissingServerError, get_settings


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def _engine() -> Any:
    from moodwire.db.engine import make_engine

    try:
        return make_engine(get_settings(), pool_size=1, max_overflow=0)
    except MissingServerError as err:
        raise _fail(str(err)) from None


def _delivery_text(d: dict[str, Any]) -> str:
    state = str(d["status"])
    if state == "pending" and d.get("last_error"):
        state = f"retrying({d['attempts']}): {d['last_error'][:60]}"
    elif state == "failed":
        state = f"FAILED({d['attempts']}): {(d.get('last_error') or '')[:60]}"
    elif state == "pending" and d.get("reason"):
        state = f"pending ({d['reason'][:60]})"
    return f"{d['channel']}={state}"


def line(alert: dict[str, Any]) -> str:
    """One alert as one line of `moodwire alerts list`."""
    start = datetime.fromisoformat(alert["window_start"]).strftime("%Y-%m-%d %H:%M")
    end = datetime.fromisoformat(alert["window_end"]).strftime("%H:%M")
    state = f"acked by {alert['acked_by'] or '?'}" if alert.get("acked_at") else "OPEN"
    share = alert.get("negative_share")
    base = alert.get("baseline_share")
    figures = f"{share:.0%} neg of {alert['posts']:,}" if share is not None else ""
    if base is not None:
        figures += f" (base {base:.0%})"
    deliveries = " ".join(_delivery_text(d) for d in alert.get("deliveries", [])) or "-"
    return (
        f"{alert['id']:>6}  {state:<16} {alert['kind']:<16} {alert['brand']:<12} "
        f"{start}-{end}  {figures:<26} {deliveries}"
    )


def list_alerts(
    brand: str | None = typer.Option(None, "--brand", help="Only this brand's alerts."),
    open_only: bool = typer.Option(False, "--open", help="Only alerts not acknowledged yet."),
    limit: int = typer.Option(50, "--limit", min=1, help="Newest this many."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Alerts, newest first, with each channel's delivery state."""
    from sqlalchemy.exc import SQLAlchemyError

    from moodwire.alerts.store import recent

    engine = _engine()
    try:
        with engine.connect() as conn:
            rows = recent(conn, limit, brand, open_only=open_only, with_deliveries=True)
    except SQLAlchemyError as exc:
        first = (str(exc).splitlines() or [""])[0][:200]
        raise _fail(f"cannot read alerts: {type(exc).__name__}: {first}") from None
    finally:
        engine.dispose()
    for row in rows:
        typer.echo(orjson.dumps(row).decode() if as_json else line(row))
    if not rows and not as_json:
        typer.echo("no alerts" + (" open" if open_only else ""))


def ack(
    alert_id: int = typer.Argument(..., help="The alert's id (first column of `list`)."),
    by: str | None = typer.Option(None, "--by", help="Who acknowledges (default: your login)."),
) -> None:
    """Acknowledge an alert: no longer open; deliveries still waiting are cancelled."""
    from moodwire.alerts.store import acknowledge

    who = by or getpass.getuser()
    engine = _engine()
    try:
        with engine.begin() as conn:
            result = acknowledge(conn, alert_id, who)
    finally:
        engine.dispose()
    if result is None:
        raise _fail(f"no alert with id {alert_id}")
    alert, now = result
    if now:
        typer.echo(f"alert {alert_id} acknowledged by {who}")
    else:
        typer.echo(f"alert {alert_id} was already acknowledged by {alert['acked_by']}")


def test_channel(
    channel: str = typer.Option(..., "--channel", help="A channel name of the alert rules."),
) -> None:
    """Send a test message to one channel, now (nothing is stored)."""
    from moodwire.alerts.channels import DeliveryError
    from moodwire.alerts.delivery import Deliverer
    from moodwire.alerts.rules import AlertRules, RulesError

    settings = get_settings()
    try:
        rules = AlertRules.from_settings(settings)
    except RulesError as err:
        raise _fail(str(err)) from None
    if channel not in rules.channels:
        known = ", ".join(sorted(rules.channels)) or "none (set MOODWIRE_ALERT_RULES_FILE)"
        raise _fail(f"no channel {channel!r} in {rules.origin}; channels: {known}")
    try:
        delivery_id = Deliverer(settings, rules, None).send_test(channel)
    except DeliveryError as exc:
        raise _fail(f"test message to {channel} failed: {exc}") from None
    typer.echo(f"test message sent to {channel} (delivery id {delivery_id})")


def add_commands(group: typer.Typer) -> None:
    group.command("list")(list_alerts)
    group.command("ack")(ack)
    group.command("test")(test_channel)
