"""Root of the ``moodwire`` command: each group module adds its own commands."""

from __future__ import annotations

import typer
from pydantic import ValidationError

from moodwire import __version__
from moodwire.cli import (
    aggregates,
    alerts,
    classify,
    connectors,
    db,
    demo,
    ingest,
    model,
    process,
    replay,
    stack,
    status,
    web,
)
from moodwire.logs import configure
from moodwire.settings import get_settings, invalid_settings

app = typer.Typer(
    name="moodwire",
    help="Streaming sentiment for social media: ingest, score with a GRU, watch it live.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"moodwire {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    try:
        settings = get_settings()
    except ValidationError as err:
        for line in invalid_settings(err):
            typer.echo(f"error: invalid setting {line}", err=True)
        raise typer.Exit(2) from None
    configure(settings.log_level, settings.log_format)


for group in (
    stack,
    db,
    model,
    classify,
    connectors,
    ingest,
    process,
    replay,
    status,
    alerts,
    aggregates,
    web,
    demo,
):
    group.register(app)


def main() -> None:
    app()
