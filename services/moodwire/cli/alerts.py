"""CLI: `moodwire alerts [--once]`: detect negative spikes per brand until Ctrl-C."""

from __future__ import annotations

import signal
import threading
from datetime import datetime
from types import FrameType
from typing import Any

import typer

from moodwire.settings import MissingServerError, get_settings


def _line(alert: dict[str, Any]) -> str:
    start = datetime.fromisoformat(alert["window_start"]).strftime("%Y-%m-%d %H:%M")
    end = datetime.fromisoformat(alert["window_end"]).strftime("%H:%M")
    return (
        f"ALERT {alert['brand']}: {alert['negative_share']:.0%} negative of "
        f"{alert['posts']:,} posts in {start}-{end} UTC "
        f"(baseline {alert['baseline_share']:.0%})"
    )


def alerts(
    once: bool = typer.Option(False, "--once", help="One detection pass, then exit."),
) -> None:
    """Watch the live aggregates and raise an alert when a brand turns negative.

    New alerts go to the Postgres `alerts` table and the alerts topic.
    """
    import redis
    from kafka.errors import KafkaError
    from sqlalchemy.exc import SQLAlchemyError

    from moodwire.alerts.runner import AlertRunner, AlertsError

    settings = get_settings()
    try:
        runner = AlertRunner(settings)
    except MissingServerError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    try:
        if once:
            try:
                report = runner.run_once()
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
            )
            return
        stop = threading.Event()

        def _stop(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGTERM, _stop)
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
    app.command(name="alerts")(alerts)
