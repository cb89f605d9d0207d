"""CLI: `moodwire classify` (JSON Lines in, scored JSON Lines out)."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, BinaryIO

import typer


def classify(
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="JSONL file (default stdin).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="JSONL file (default stdout).")
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Model dir (default: shipped model).")
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Posts scored per batch.")
    ] = 512,
) -> None:
    """Add sentiment, score, probs and model_version to each {"text": ...} line."""
    from moodwire.model.classify import classify_lines
    from moodwire.model.engine import InferenceEngine
    from moodwire.settings import get_settings

    with ExitStack() as stack:
        try:
            source: BinaryIO = stack.enter_context(input.open("rb")) if input else sys.stdin.buffer
        except OSError as exc:
            typer.echo(f"error: cannot read {input}: {exc.strerror}", err=True)
            raise typer.Exit(2) from exc
        try:
            settings = get_settings()
            engine = InferenceEngine.load(
                model or settings.model_path,
                device=settings.device,
                threads=settings.threads,
                batch_size=batch_size,
            )
        except (OSError, ValueError) as exc:  # no model there, or unreadable files
            typer.echo(f"error: cannot load the model: {exc}", err=True)
            raise typer.Exit(2) from exc
        try:
            sink: BinaryIO = stack.enter_context(output.open("wb")) if output else sys.stdout.buffer
        except OSError as exc:
            typer.echo(f"error: cannot write {output}: {exc.strerror}", err=True)
            raise typer.Exit(2) from exc
        try:
            counts = classify_lines(source, sink.write, engine, batch_size=batch_size)
        except OSError as exc:  # a directory given as input, a read or write error mid-way
            typer.echo(f"error: classify stopped: {exc}", err=True)
            raise typer.Exit(2) from exc
        sink.flush()
    typer.echo(f"classified {counts.scored} posts, {counts.errors} bad lines", err=True)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("classify")(classify)
