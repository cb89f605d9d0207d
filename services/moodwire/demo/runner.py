"""``moodwire demo``: the whole pipeline on the local stack, watched live.

Brings the stack up (``moodwire.stack.manager``), starts stream-processor workers, the
alert detector, the live page (``moodwire web``) and an ingest of the ``demo://`` feed as
child processes, and redraws a summary every second
(posts/s, consumer lag, per-brand sentiment, from ``moodwire.status.collect``) until
Ctrl-C or ``duration``. Then it stops what it started: ingest first (it flushes), the
workers, and the local servers when the demo was the one that started them.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any
from urllib.parse import urlencode

from rich.console import Console
from rich.live import Live

from moodwire.brands import BrandMatcher
from moodwire.demo.lag import LagProbe
from moodwire.demo.live_view import LiveSummary
from moodwire.demo.local_pipeline import LocalPipeline
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
    web: bool = True  # the live page (``moodwire web``) and the alert detector


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


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _signals(handler: Any) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _say(console: Console, message: str) -> None:
    # The terminal may be gone (SIGHUP): cleaning up matters more than saying so.
    with contextlib.suppress(OSError):
        console.print(message)


def run_demo(settings: Settings, options: DemoOptions, console: Console) -> DemoResult:
    # Before the stack: a bad brands file must not leave servers running behind an error.
    summary = LiveSummary(BrandMatcher.from_settings(settings).display_names)
    settings, started_stack = start_stack(settings)
    log_dir = settings.state_dir / "logs" / "demo"
    pipeline = LocalPipeline(settings, log_dir)
    probe = LagProbe(settings)
    url = feed_url(options)
    # SIGTERM and a closed terminal (SIGHUP) stop the demo like Ctrl-C does: the children
    # run in their own sessions and would otherwise outlive it.
    with _signals(_interrupt):
        final, stopped_stack = _run(
            settings, options, console, pipeline, probe, summary, url, started_stack
        )
    return DemoResult(final, stopped_stack, str(log_dir))


def _run(
    settings: Settings,
    options: DemoOptions,
    console: Console,
    pipeline: LocalPipeline,
    probe: LagProbe,
    summary: LiveSummary,
    url: str,
    started_stack: bool,
) -> tuple[dict[str, Any], bool]:
    title = f"demo  ·  {url}  ·  {options.workers} worker{'s' * (options.workers > 1)}"
    if options.web:
        page = f"http://{settings.web_api_host}:{settings.web_api_port}/"
        title += f"  ·  live page {page}"
        if settings.web_token is not None:  # on loopback without one there is no login
            title += " (log in with MOODWIRE_WEB_TOKEN)"
    final: dict[str, Any] = {}
    stopped_stack = False
    try:
        try:
            for i in range(options.workers):
                pipeline.start_worker(f"worker-{i + 1}")
            if options.web:
                pipeline.start_alerts()
                pipeline.start_web(settings.web_api_host, settings.web_api_port)
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
                except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP: the normal way out
                    pass
                # The last frame stays on screen, and is all a pipe or a file ever gets:
                # draw it from the figures of the moment of stopping, not of a second ago.
                summary.add(collect(settings), probe.lag())
                live.update(summary.render(title))
        except KeyboardInterrupt:  # a second Ctrl-C during that last frame
            pass
    finally:
        # A second Ctrl-C while stopping must not leave children running.
        with _signals(signal.SIG_IGN):
            _say(console, "\nstopping the demo: ingest (flushing), then the workers...")
            pipeline.stop()
            probe.close()
            # Read the last figures before the servers (maybe) go.
            final = collect(settings)
            if started_stack and not options.keep_stack:
                manager.down(settings)
                stopped_stack = True
    return final, stopped_stack
