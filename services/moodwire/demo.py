"""``moodwire demo``: the whole pipeline on the local stack, watched live.

Brings the stack up (``moodwire.stack.manager``), starts stream-processor workers and an
ingest of the ``demo://`` feed as child processes, and redraws a summary every second
(posts/s, consumer lag, per-brand sentiment, from ``moodwire.status.collect``) until
Ctrl-C or ``duration``. Then it stops what it started: ingest first (it flushes), the
workers, and the local servers when the demo was the one that started them.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from rich.console import Console
from rich.live import Live

from moodwire.brands import BrandMatcher
from moodwire.lag import LagProbe
from moodwire.live_view import LiveSummary
from moodwire.local_pipeline import LocalPipeline
from moodwire.settings import Settings
from moodwire.stack import manager
from moodwire.stack.state import URL_FIELDS
from moodwire.status import collect

REFRESH_S = 1.0


class DemoError(RuntimeError):
    """The demo cannot go on (a child died); the message says which and where its log is."""


@dataclass(frozen=True)
class DemoOptions:
    rate: float = 200.0
    duration: float | None = None
    workers: int = 1
    seed: int | None = None
    keep_stack: bool = False


@dataclass
class DemoResult:
    figures: dict[str, Any]
    stopped_stack: bool
    log_dir: str


def feed_url(options: DemoOptions) -> str:
    query: dict[str, str] = {"rate": f"{options.rate:g}"}
    if options.seed is not None:
        query["seed"] = str(options.seed)
    return "demo://?" + urlencode(query)


def start_stack(settings: Settings) -> tuple[Settings, bool]:
    """The stack up; returns settings naming its servers and whether the demo started all
    of them (then it is the demo's to stop)."""
    running_before = {s.name for s in manager.status(settings) if s.origin == "stack" and s.answers}
    servers = manager.up(settings)
    updates: dict[str, Any] = {
        URL_FIELDS[s.name]: s.url
        for s in servers
        if not settings.configured_by_env(URL_FIELDS[s.name])  # type: ignore[arg-type]
    }
    started_all = bool(servers) and not running_before
    return settings.model_copy(update=updates), started_all


@contextmanager
def _ignoring_interrupts() -> Iterator[None]:
    # A second Ctrl-C while stopping must not leave children running.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_demo(settings: Settings, options: DemoOptions, console: Console) -> DemoResult:
    settings, started_stack = start_stack(settings)
    log_dir = settings.state_dir / "logs" / "demo"
    pipeline = LocalPipeline(settings, log_dir)
    probe = LagProbe(settings)
    matcher = BrandMatcher.from_settings(settings)
    summary = LiveSummary({b.name: b.display for b in matcher.definitions})
    url = feed_url(options)
    title = f"demo  ·  {url}  ·  {options.workers} worker{'s' * (options.workers > 1)}"
    stopped_stack = False
    final: dict[str, Any] = {}
    try:
        for i in range(options.workers):
            pipeline.start_worker(f"worker-{i + 1}")
        pipeline.start_ingest(url, "--quiet")
        deadline = None if options.duration is None else time.monotonic() + options.duration
        with Live(summary.render(title), console=console, refresh_per_second=4) as live:
            try:
                while True:
                    summary.add(collect(settings), probe.lag())
                    live.update(summary.render(title))
                    dead = pipeline.exited()
                    if dead:
                        raise DemoError(dead[0].describe_exit())
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    time.sleep(REFRESH_S)
            except KeyboardInterrupt:
                pass
    finally:
        with _ignoring_interrupts():
            console.print("\nstopping the demo: ingest (flushing), then the workers...")
            pipeline.stop()
            probe.close()
            # Read the last figures before the servers (maybe) go.
            final = collect(settings)
            if started_stack and not options.keep_stack:
                manager.down(settings)
                stopped_stack = True
    return DemoResult(final, stopped_stack, str(log_dir))
