"""CLI: `moodwire classify` (JSON Lines in, scored JSON Lines out)."""

from __future__ import annotations

import os
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
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Processes scoring chunks side by side (default: usable CPUs; 1: in-process).",
        ),
    ] = None,
) -> None:
    """Add sentiment, score, probs and model_version to each {"text": ...} line."""
    from concurrent.futures.process import BrokenProcessPool

    from moodwire.model.classify import classify_lines, collect_less
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
            processes = workers or len(os.sched_getaffinity(0))
            engine = InferenceEngine.load(
                model or settings.model_path,
                device=settings.device,
                # Each worker process takes one core; threads would only contend for it.
                threads=1 if processes > 1 else settings.threads,
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
        if engine.device != "cpu":
            processes = 1  # a CUDA context does not survive a fork; one GPU process is enough
        collect_less()  # this process only classifies from here on
        try:
            counts = classify_lines(
                source, sink.write, engine, batch_size=batch_size, workers=processes
            )
            sink.flush()  # a small output meets a full disk only here
        except OSError as exc:  # a directory given as input, a read or write error mid-way
            typer.echo(f"error: classify stopped: {exc}", err=True)
            _flush_or_drop(sink)
            raise typer.Exit(2) from exc
        except BrokenProcessPool as exc:  # a worker killed (out of memory, a signal)
            typer.echo(f"error: classify stopped: a worker process died ({exc})", err=True)
            raise typer.Exit(2) from exc
    typer.echo(f"classified {counts.scored} posts, {counts.errors} bad lines", err=True)


def _flush_or_drop(sink: BinaryIO) -> None:
    """After an error: write what was scored before it (a read error), or, where the sink
    is what failed, drop the buffered rest, so that closing the file (or the exit's own
    flush of stdout) does not fail a second time with a traceback."""
    try:
        sink.flush()
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sink.fileno())
        finally:
            os.close(devnull)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("classify")(classify)
