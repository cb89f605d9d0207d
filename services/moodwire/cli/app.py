"""Root of the ``moodwire`` command: each group module adds its own commands.

``main()`` imports only the module of the command it was asked for: every module
together pulls in alembic, the connectors, rich and the API (about 0.6 s), and a worker's
launch-to-first-row is a target (#18). ``app``, the whole command tree (help, tests), is
built on first access.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable

import typer
from pydantic import ValidationError

from moodwire import __version__
from moodwire.logs import configure
from moodwire.settings import get_settings, invalid_settings

# Top-level command -> the module under moodwire.cli that registers it, in help order.
COMMANDS: dict[str, str] = {
    "stack": "stack",
    "db": "db",
    "model": "model",
    "classify": "classify",
    "connectors": "connectors",
    "ingest": "ingest",
    "process": "process",
    "rescore": "replay",
    "status": "status",
    "alerts": "alerts",
    "aggregates": "aggregates",
    "web": "web",
    "demo": "demo",
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"moodwire {__version__}")
        raise typer.Exit()


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


def build(commands: Iterable[str] | None = None) -> typer.Typer:
    """The root app with ``commands`` (default: all of them) registered."""
    root = typer.Typer(
        name="moodwire",
        help="Streaming sentiment for social media: ingest, score with a GRU, watch it live.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    root.callback()(_root)
    wanted = COMMANDS if commands is None else [c for c in COMMANDS if c in set(commands)]
    for module in dict.fromkeys(COMMANDS[c] for c in wanted):
        importlib.import_module(f"moodwire.cli.{module}").register(root)
    return root


def _command_asked(argv: list[str]) -> str | None:
    # The root takes no option with a value, so the first bare word names the command.
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in COMMANDS else None


def main() -> None:
    asked = _command_asked(sys.argv[1:])
    build(None if asked is None else [asked])()


def __getattr__(name: str) -> typer.Typer:
    if name == "app":
        globals()["app"] = built = build()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
