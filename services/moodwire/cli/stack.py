"""CLI: `moodwire stack up | down | status`: the local broker, PostgreSQL and Redis."""

from __future__ import annotations

import typer

from moodwire.settings import get_settings
from moodwire.stack import manager
from moodwire.stack.errors import StackError, mask_password

stack_app = typer.Typer(
    help="Local servers (broker, PostgreSQL, Redis) under MOODWIRE_STATE_DIR.",
    no_args_is_help=True,
)


def _fail(err: Exception) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(1)


@stack_app.command()
def up() -> None:
    """Start what no URL configures, migrate, create topics; print MOODWIRE_*_URL lines."""
    settings = get_settings()
    try:
        servers = manager.up(settings)
    except StackError as err:
        raise _fail(err) from None
    for server in servers:
        typer.echo(manager.env_line(server.name, server.url))
        # Only the eval-able line above carries the password; the log line does not.
        shown = mask_password(server.url)
        typer.echo(f"{server.name}: {shown} (pid {server.pid}, log {server.log})", err=True)
    typer.echo(f"stack ready; state in {settings.state_dir}", err=True)


@stack_app.command()
def down() -> None:
    """Stop exactly the servers `stack up` started (by their recorded PIDs)."""
    settings = get_settings()
    stopped = manager.down(settings)
    for server in stopped:
        typer.echo(f"stopped {server.name} (pid {server.pid})", err=True)
    if not stopped:
        typer.echo(f"no running local stack in {settings.state_dir}", err=True)


@stack_app.command()
def status() -> None:
    """Show each server's URL, where it comes from, and whether it answers (exit 1 if not)."""
    rows = manager.status(get_settings())
    for row in rows:
        pid = f" pid {row.pid}" if row.pid else ""
        state = "up" if row.answers else "DOWN"
        # Status output gets pasted into tickets and chats: never with a password.
        url = mask_password(row.url) if row.url else "-"
        typer.echo(f"{row.name:9} {state:5} {row.origin}{pid}  {url}")
    if not all(row.answers for row in rows):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.add_typer(stack_app, name="stack")
