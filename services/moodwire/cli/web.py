"""CLI: `moodwire web [--host --port]`: the live page and its JSON API."""

from __future__ import annotations

import typer

from moodwire import metrics
from moodwire.settings import get_settings


def web(
    host: str | None = typer.Option(None, "--host", help="Bind address (default: settings)."),
    port: int | None = typer.Option(None, "--port", help="Port (default: settings, 8080)."),
) -> None:
    """Serve the live brand-sentiment page and its JSON API until Ctrl-C."""
    import uvicorn

    from moodwire.api.app import create_app
    from moodwire.api.security import TokenRequired, require_token_for

    settings = get_settings()
    bind = host or settings.web_api_host
    chosen = settings.web_api_port if port is None else port
    try:
        require_token_for(bind, settings)
    except TokenRequired as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    metrics.serve(settings, "web")
    login = " (log in with MOODWIRE_WEB_TOKEN)" if settings.web_token else ""
    typer.echo(f"moodwire web on http://{bind}:{chosen}/{login} (Ctrl-C stops)")
    # server_header off: no version banner for whoever probes the port.
    uvicorn.run(
        create_app(settings, bind_host=bind),
        host=bind,
        port=chosen,
        log_level="warning",
        server_header=False,
    )


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command(name="web")(web)
