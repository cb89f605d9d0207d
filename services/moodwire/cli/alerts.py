"""CLI: `moodwire alerts [--once]` (detect and deliver until Ctrl-C), `moodwire alerts
list / ack ID / test --channel NAME`."""

from __future__ import annotations

import signal
import threading
from datetime import datetime
from types import FrameType
from typing import Any

import typer

from moodwire import metrics
from moodwire.settings import MissingServerError, get_settings


def _line(alert: dict[str, Any]) -> str:
    start = datetime.fromisoformat(alert["window_start"]).strftime("%Y-%m-%d %H:%M")
    end = datetime.fromisoformat(alert["window_end"]).strftime("%H:%M")
    return (
        f"ALERT {alert['brand']}: {alert['negative_share']:.0%} negative of "
        f"{alert['posts']:,} posts in {start}-{end} UTC "
        f"(baseline {alert['baseline_share']:.0%})"
    )


group = typer.Typer(
    help="Alerts: detect and deliver (no subcommand), list, acknowledge, test a channel.",
    invoke_without_command=True,
)


@group.callback()
def alerts(
    ctx: typer.Context,
    once: bool = typer.Option(
        False, "--once", help="One detection pass and one delivery pass, then exit."
    ),
) -> None:
    """Watch the live aggregates and raise an alert when a brand turns negative.

    New alerts go to the Postgres `alerts` table and the alerts topic, and to the channels
    of the alert rules (MOODWIRE_ALERT_RULES_FILE) through the delivery outbox.
    """
    if ctx.invoked_subcommand is not None:
        return
    import redis
    from kafka.errors import KafkaError
    from sqlalchemy.exc import SQLAlchemyError

    from moodwire.alerts.rules import RulesError
    from moodwire.alerts.runner import AlertRunner, AlertsError

    settings = get_settings()
    try:
        runner = AlertRunner(settings)
    except (MissingServerError, RulesError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    try:
        if once:
            try:
                report = runner.run_once()
                delivered = runner.deliverer.drain_all()
            except (redis.RedisError, SQLAlchemyError, KafkaError) as exc:
                # The loop below logs these and retries; a single pass reports and fails.
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                typer.echo(f"error: alert pass failed: {type(exc).__name__}: {first}", err=True)
                raise typer.Exit(1) from None
            for alert in report.new_alerts:
                typer.echo(_line(alert))
            typer.echo(
                f"{report.windows} window(s) judged, {len(report.spikes)} spike(s), "
                f"{len(report.new_alerts)} new alert(s)"
                + ("" if report.watermark is not None else " (no aggregates yet)")
                + f", {delivered} delivery attempt(s)"
            )
            return
        stop = threading.Event()

        def _stop(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
        metrics.serve(settings, "alerts")
        typer.echo(
            f"watching for negative spikes every {settings.alert_interval:g} s (Ctrl-C stops)"
        )
        runner.run(stop, on_alert=lambda alert: typer.echo(_line(alert)))
    except AlertsError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    finally:
        runner.close()


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    from moodwire.cli import alerts_manage

    alerts_manage.add_commands(group)
    app.add_typer(group, name="alerts")
