"""CLI: `moodwire db upgrade | current`: the schema migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from sqlalchemy.exc import SQLAlchemyError

from moodwire.db import migrate
from moodwire.settings import MissingServerError, get_settings
from moodwire.stack.errors import first_line, redact_url

db_app = typer.Typer(help="Database schema: apply and inspect the Alembic migrations.")


def _url() -> str:
    try:
        return get_settings().require("database_url")
    except MissingServerError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None


@contextmanager
def _database_errors(url: str) -> Iterator[None]:
    """A database that is down or refuses is one line on stderr, not a traceback."""
    try:
        yield
    except (SQLAlchemyError, ImportError) as err:  # ImportError: the URL's driver is missing
        typer.echo(f"error: database at {redact_url(url)}: {first_line(err)}", err=True)
        raise typer.Exit(1) from None


@db_app.command()
def upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    url = _url()
    with _database_errors(url):
        migrate.upgrade(url, revision)
        typer.echo(f"database at revision {migrate.current(url)}")


@db_app.command()
def current() -> None:
    """Print the revision the database is at and the newest one available."""
    url = _url()
    with _database_errors(url):
        typer.echo(f"current: {migrate.current(url) or 'none'}  head: {migrate.head()}")


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.add_typer(db_app, name="db")
