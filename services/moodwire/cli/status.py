"""CLI: `moodwire status [--json]`: posts, scores, aggregates and dead letters at a glance."""

from __future__ import annotations

from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from moodwire.settings import get_settings


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:,}" if isinstance(value, int) else str(value)


def _languages(counts: dict[str, int], top: int = 4) -> str:
    """``fr 120, de 31, ja 9 +2 more``: the most frequent first."""
    shown = ", ".join(f"{lang} {n:,}" for lang, n in list(counts.items())[:top])
    rest = len(counts) - top
    return shown + (f" +{rest} more" if rest > 0 else "")


def _print_text(figures: dict[str, Any], which: str) -> None:
    console = Console()
    console.print(f"model version    {figures['model_version'] or '-'}")
    console.print(f"posts            {_fmt(figures['posts'])}")
    console.print(f"scored           {_fmt(figures['scored'])}   ({which})")
    console.print(
        f"aggregate_total  {_fmt(figures['aggregate_total'])}   (Redis, each post once; "
        f"copy {figures.get('aggregates') or '-'})"
    )
    stages = ", ".join(f"{k} {v:,}" for k, v in figures["dead_letters_by_stage"].items())
    console.print(
        f"dead_letters     {_fmt(figures['dead_letters'])}" + (f"   ({stages})" if stages else "")
    )
    unscored: dict[str, dict[str, int]] = figures.get("unscored_for_language") or {}
    everything = unscored.get("*", {})
    if everything:
        console.print(
            f"not scored       {sum(everything.values()):,}   (language the model does not "
            f"read: {_languages(everything)})"
        )
    brands = sorted(set(figures["brands"]) | (set(unscored) - {"*"}))
    if brands:
        table = Table(
            "brand", "posts", "negative", "neutral", "positive", "mean score", "not scored"
        )
        for brand in brands:
            b = figures["brands"].get(brand, {})
            mean = b.get("mean_score")
            table.add_row(
                brand,
                _fmt(b.get("posts")),
                _fmt(b.get("negative")),
                _fmt(b.get("neutral")),
                _fmt(b.get("positive")),
                "-" if mean is None else f"{mean:+.3f}",
                _languages(unscored.get(brand, {})) or "-",
            )
        console.print(table)
    for error in figures["errors"]:
        console.print(f"[red]unavailable[/red] {error}")


def status(
    as_json: bool = typer.Option(False, "--json", help="One JSON object, for scripts."),
    model_version: str | None = typer.Option(
        None,
        "--model-version",
        help="Figures of this model version (e.g. one `moodwire rescore` wrote), not the "
        "serving one.",
    ),
) -> None:
    """What an operator checks first: rows, scores, aggregates, dead letters, brands."""
    from moodwire.status import collect

    figures = collect(get_settings(), model_version)
    if as_json:
        typer.echo(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    else:
        _print_text(figures, "that version" if model_version else "serving version")
    if figures["errors"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command(name="status")(status)
