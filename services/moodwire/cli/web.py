"""CLI: `moodwire web [--host --port]`: the live page and its JSON API."""

from __future__ import annotations

import typer

from moodwire.settings import get_settings


def web(
    host: str | None = typer.Option(None, "--host", help="Bind address (default: settings)."),
    port: int | None = typer.Option(None, "--port", help="Port (default: settings, 8080)."),
) -> None:
    """Serve the live brand-sentiment page and its JSON API until Ctrl-C."""
    import uvicorn

    from moodwire.api.app import create_app

    settings = get_settings()
    bind = host or settings.web_api_host
    chosen = settings.web_api_port if port is None else port
    typer.echo(f"moodwire web on http://{bind}:{chosen}/ (Ctrl-C stops)")
    uvicorn.run(create_app(settings), host=bind, port=chosen, log_level="warning")


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command(name="web")(web)
