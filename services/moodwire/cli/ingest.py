"""CLI: `moodwire ingest URL` runs a source connector into the raw-posts topic."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

import typer

from moodwire import metrics
from moodwire.brands import BrandsFileError
from moodwire.connectors import ConnectorError, known_schemes, open_connector
from moodwire.ingest import Ingest, IngestError, IngestStats, parse_speed
from moodwire.settings import MissingServerError, get_settings


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("ingest")(ingest)


def ingest(
    url: str = typer.Argument(
        ...,
        help="Source: file://PATH, demo://, bluesky://, mastodon://HOST/tag/NAME, "
        "feed+https://URL, webhook://HOST:PORT, reddit://r/NAME, hn:// or a plugin's scheme "
        "(`moodwire connectors list`).",
    ),
    speed: str = typer.Option(
        "max",
        "--speed",
        help="Replay at N x the original pace (by created_at); 0 or max: flat out.",
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Stop after N records."),
    option: list[str] = typer.Option(  # noqa: B008 (typer's declaration style)
        [], "--option", "-o", help="Connector option KEY=VALUE (same as ?KEY=VALUE); repeatable."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
    name: str | None = typer.Option(
        None,
        "--name",
        help="Name the connector's cursors are saved under (default: the URL without its "
        "query); two runs of one source under different names each resume on their own.",
    ),
) -> None:
    """Publish posts from a source to the raw-posts topic; bad records go to dead letters."""
    settings = get_settings()
    try:
        pace = parse_speed(speed)
        options = _parse_options(option)
        connector = open_connector(url, options)
    except (ValueError, BrandsFileError) as exc:  # ConnectorError is a ValueError
        _fail(str(exc))
    run = Ingest(
        settings,
        speed=pace,
        limit=limit,
        on_progress=None if quiet else _print_progress,
        progress_every=2.0,
        name=name,
    )
    metrics.serve(settings, "ingest")
    with _stop_on_signals(run):
        try:
            stats = run.run(connector)
        except (IngestError, MissingServerError, ConnectorError) as exc:
            _fail(str(exc))
    _print_summary(stats, settings.topic_raw, settings.topic_dead_letters)
    if run.name is not None:
        typer.echo(f"cursors saved under {run.name} (`moodwire connectors cursors {run.name}`)")
    if stats.failed:
        raise typer.Exit(1)


def _parse_options(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConnectorError(f"--option {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


@contextmanager
def _stop_on_signals(run: Ingest) -> Iterator[None]:
    """First Ctrl-C/SIGTERM: stop reading, flush what was read. Second Ctrl-C: abort."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    stopping = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stopping = True
        typer.echo("stopping: flushing what was read (Ctrl-C again to abort)", err=True)
        run.stop()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _print_progress(stats: IngestStats) -> None:
    typer.echo(
        f"ingest: read {stats.read:,}  sent {stats.sent:,}  dead-lettered "
        f"{stats.dead_lettered:,}  ({stats.rate:,.0f} records/s)",
        err=True,
    )


def _print_summary(stats: IngestStats, topic: str, dlq: str) -> None:
    typer.echo(
        f"sent {stats.sent:,} posts to {topic}; dead-lettered {stats.dead_lettered:,} to {dlq}; "
        f"failed {stats.failed:,}; {stats.read:,} records in {stats.elapsed:.1f} s "
        f"({stats.rate:,.0f}/s)"
    )
    for reason, count in stats.reasons.most_common(5):
        typer.echo(f"  dead letters: {count:,} x {reason}")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    if "scheme" in message and not known_schemes():
        typer.echo("hint: no connectors are installed; run `make setup`", err=True)
    raise typer.Exit(2)
