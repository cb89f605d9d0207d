"""CLI: `moodwire process`: run one stream-processor worker until Ctrl-C."""

from __future__ import annotations

from typing import Any

import typer

from moodwire.settings import MissingServerError, get_settings


def process(
    max_batch: int | None = typer.Option(
        None, "--max-batch", min=1, help="Most posts per micro-batch (MOODWIRE_MAX_BATCH)."
    ),
    max_wait: float | None = typer.Option(
        None, "--max-wait", min=0.001, help="Seconds to fill a micro-batch (MOODWIRE_MAX_WAIT)."
    ),
) -> None:
    """Score the raw-posts topic into Postgres, Redis and the scored topic.

    Start several in one consumer group (MOODWIRE_CONSUMER_GROUP) to share partitions.
    """
    from moodwire.process.worker import run_worker

    updates: dict[str, Any] = {
        k: v for k, v in (("max_batch", max_batch), ("max_wait", max_wait)) if v is not None
    }
    settings = get_settings().model_copy(update=updates)
    try:
        settings.require("broker_url")
        settings.require("database_url")
        settings.require("redis_url")
    except MissingServerError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    run_worker(settings)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command(name="process")(process)
