"""CLI: `moodwire demo`: the whole pipeline on the local stack with a live summary."""

from __future__ import annotations

import contextlib

import typer
from rich.console import Console

from moodwire.brands import BrandsFileError
from moodwire.settings import MissingServerError, get_settings
from moodwire.stack.errors import StackError


def demo(
    rate: float = typer.Option(200.0, "--rate", min=0, help="Demo posts per second (0: flat out)."),
    duration: float | None = typer.Option(
        None, "--duration", min=1, help="Stop after SECONDS (default: run until Ctrl-C)."
    ),
    workers: int = typer.Option(1, "--workers", min=1, max=8, help="Stream-processor workers."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the demo feed's texts."),
    keep_stack: bool = typer.Option(
        False, "--keep-stack", help="Leave the local servers running at the end."
    ),
    web: bool = typer.Option(
        True, "--web/--no-web", help="Also run the live page and the negative-spike alerts."
    ),
) -> None:
    """Start the local stack, the demo feed, a processor, alerts and the live page."""
    from moodwire.demo.runner import DemoError, DemoOptions, run_demo

    console = Console()
    options = DemoOptions(
        rate=rate, duration=duration, workers=workers, seed=seed, keep_stack=keep_stack, web=web
    )
    try:
        result = run_demo(get_settings(), options, console)
    except (StackError, DemoError, MissingServerError, BrandsFileError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    figures = result.figures
    lines = [
        f"demo stopped: {figures.get('posts') or 0:,} posts scored, "
        f"{figures.get('dead_letters') or 0:,} dead letters; logs in {result.log_dir}",
        "local servers stopped (PostgreSQL and Redis data stay in the state dir)"
        if result.stopped_stack
        else "local servers left running: `moodwire status`, `moodwire stack down`",
    ]
    # After a closed terminal (SIGHUP) there is nobody to tell.
    with contextlib.suppress(OSError):
        for line in lines:
            console.print(line)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command(name="demo")(demo)
