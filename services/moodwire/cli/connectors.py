"""CLI: `moodwire connectors list` and `moodwire connectors cursors`."""

from __future__ import annotations

from importlib.metadata import entry_points

import orjson
import typer

from moodwire.connectors import ConnectorError, resolve
from moodwire.connectors.registry import GROUP, known_schemes
from moodwire.db.cursors import CursorStore
from moodwire.db.engine import make_engine
from moodwire.settings import MissingServerError, get_settings

group = typer.Typer(help="Source connectors: what is installed, and where each resumes.")


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.add_typer(group, name="connectors")


def _packages() -> dict[str, str]:
    out: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        if dist is not None:
            out.setdefault(ep.name.lower(), f"{dist.name} {dist.version}")
    return out


@group.command("list")
def list_connectors() -> None:
    """Every scheme found through the `moodwire.connectors` entry points."""
    packages = _packages()
    for scheme, target in known_schemes().items():
        try:
            summary = resolve(f"{scheme}://").summary()
        except ConnectorError as exc:
            summary = f"(cannot load: {exc})"
        package = packages.get(scheme, target.split(":", 1)[0])
        typer.echo(f"{scheme + '://':<14} {package:<22} {summary}")


@group.command("cursors")
def cursors(
    name: str = typer.Argument(..., help="Connector name (what `moodwire ingest` printed)."),
    reset: bool = typer.Option(False, "--reset", help="Forget them: the next run starts over."),
) -> None:
    """Show (or forget) where a connector resumes, per source partition."""
    settings = get_settings()
    try:
        store = CursorStore(make_engine(settings))
    except MissingServerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if reset:
        typer.echo(f"forgot {store.clear(name)} cursor(s) of {name}")
        return
    saved = store.load(name)
    if not saved:
        typer.echo(f"no saved cursors for {name}")
        return
    for partition, offset in sorted(saved.items()):
        typer.echo(f"{partition}\t{orjson.dumps(offset).decode()}")
