"""CLI: `moodwire rescore`: score the stored posts again with another model version."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import psycopg2
import redis
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from moodwire.settings import MissingServerError, get_settings


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- posts/s" if speed is None else f"{speed:,.0f} posts/s")


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{option} {value!r}: expected an ISO 8601 time, e.g. 2024-05-01T00:00:00Z")
    # A time without a zone is read as UTC, the zone of every stored created_at.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def rescore(
    model: Path = typer.Option(  # noqa: B008 (typer's declaration style)
        ..., "--model", help="Directory of the model to score with (the new version)."
    ),
    since: str | None = typer.Option(
        None, "--since", help="Only posts created at or after this ISO time (UTC if no zone)."
    ),
    until: str | None = typer.Option(
        None, "--until", help="Only posts created before this ISO time (UTC if no zone)."
    ),
    source: str | None = typer.Option(None, "--source", help="Only posts of this source."),
    batch_size: int = typer.Option(
        1000, "--batch-size", min=1, help="Posts read, scored and written per chunk."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Re-score stored posts under the model's version: new score rows and Redis aggregates,
    exactly once; a killed run resumes where it stopped, a finished one is a no-op."""
    from moodwire.model.engine import InferenceEngine
    from moodwire.replay.posts import Scope
    from moodwire.replay.rescore import RescoreBusy, pending
    from moodwire.replay.rescore import rescore as run_rescore

    settings = get_settings()
    scope = Scope(since=_when(since, "--since"), until=_when(until, "--until"), source=source)
    try:
        engine = InferenceEngine.load(
            path=model,
            device=settings.device,
            threads=settings.threads,
            batch_size=settings.batch_size,
        )
    except (OSError, ValueError) as exc:
        _fail(f"cannot load the model at {model}: {exc}")
    console = Console(stderr=True)
    try:
        todo = pending(settings, scope, engine.model_version)
        console.print(f"rescore into {engine.model_version}: {todo:,} posts to score")
        with Progress(
            TextColumn("rescore"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
        ) as progress:
            task = progress.add_task("rescore", total=todo)
            report = run_rescore(
                settings,
                engine,
                scope,
                batch_size,
                on_chunk=lambda chunk: progress.advance(task, chunk.posts),
            )
    except (RescoreBusy, MissingServerError) as exc:
        _fail(str(exc))
    except (SQLAlchemyError, psycopg2.Error, redis.RedisError) as exc:
        # Nothing is half done: a rerun finishes the chunk in flight, then goes on.
        first_line = (str(exc).strip().splitlines() or [""])[0][:300]
        _fail(f"{type(exc).__name__}: {first_line} (rerun to resume)")
    typer.echo(
        f"rescored {report.posts:,} posts into {report.model_version}: {report.stored:,} new "
        f"score rows, {report.counted:,} counted in the aggregates, {report.chunks:,} chunks, "
        f"{report.seconds:.1f} s ({report.posts_per_s:,.0f} posts/s)"
        + ("; Redis copy of the version rebuilt after a killed run" if report.rebuilt else "")
    )


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command(name="rescore")(rescore)
