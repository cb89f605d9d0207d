"""Run one stream-processor worker (``moodwire process``) until SIGINT/SIGTERM.

Start-up is ordered around the consumer-group join, seconds of waiting on the broker:
this thread does only what Faust needs to start (settings, topics, the brands file, the
Faust app) and starts it; the model (torch's import and the weights, 1-3 s of CPU) and
the sinks (:mod:`moodwire.process.pipeline`, their libraries' imports) are built on
threads of their own during the join, and the first batch waits for them if it must.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from functools import partial
from typing import TYPE_CHECKING

import faust

from moodwire import metrics
from moodwire.brands import BrandMatcher
from moodwire.logs import get_logger
from moodwire.model.background import BackgroundScorer
from moodwire.process import faust_patches
from moodwire.process.app import Runtime, create_app
from moodwire.settings import Settings
from moodwire.sinks.kafka import KafkaWriter
from moodwire.topics import ensure_topics

if TYPE_CHECKING:
    from moodwire.model.engine import InferenceEngine
    from moodwire.process.pipeline import Pipeline

log = get_logger(__name__)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed: the largest single throughput win measured for Faust."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def tune_interpreter() -> None:
    # Each message allocates a handful of objects that die young; fewer gen-0 collections
    # and a frozen start-up heap (model, regexes, modules) measured +8-10% throughput.
    gc.set_threshold(50_000, 50, 100)
    gc.collect()
    gc.freeze()
    # Hand the GIL back sooner so the event loop is not starved by the model's thread.
    sys.setswitchinterval(0.001)


def _model_loaded(engine: InferenceEngine) -> None:
    metrics.set_model(engine.model_version, engine.device)
    # The model's objects live as long as the worker: keep them out of the collector's
    # scans too, like the rest of the start-up heap (tune_interpreter).
    gc.freeze()


def _build_pipeline(
    settings: Settings, engine: BackgroundScorer, matcher: BrandMatcher, kafka: KafkaWriter
) -> Pipeline:
    # Imported on the build thread, during the group join (moodwire.process.pipeline).
    from moodwire.process.pipeline import build

    return build(settings, engine, matcher, kafka)


def build_worker(settings: Settings) -> faust.Worker:
    engine = BackgroundScorer(
        settings.model_path,
        device=settings.device,
        threads=settings.process_threads,
        batch_size=settings.batch_size,
        on_loaded=_model_loaded,
        start=False,
    )

    # Faust would declare only the raw topic, and an unknown topic written to by the sinks
    # gets the broker's default partition count: create all four as configured.
    ensure_topics(settings)
    if settings.faust_speedups:
        log.info("faust patches", extra=faust_patches.apply(settings.fetch_max_wait_ms))
    metrics.serve(settings, "process")
    # Read here, not on the build thread: a bad brands file stops the worker at once.
    matcher = BrandMatcher.from_settings(settings)
    kafka = KafkaWriter(settings)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    runtime = Runtime(
        settings, partial(_build_pipeline, settings, engine, matcher, kafka), loop=loop
    )
    app = create_app(settings, runtime)
    log.info(
        "worker starting",
        extra={
            "group": settings.consumer_group,
            "topic": settings.topic_raw,
            "model": str(settings.model_path),
            "brands": len(matcher.brands),
            "max_batch": settings.max_batch,
            "max_wait": settings.max_wait,
        },
    )
    # Everything above is CPU on this thread; from here the worker mostly waits on the
    # broker (Faust's start, the group join), which the model's load overlaps.
    engine.start()
    worker = faust.Worker(
        app,
        runtime,
        loop=loop,
        loglevel=settings.log_level,
        override_logging=False,
        quiet=True,
        redirect_stdouts=False,
    )
    # Faust's terminal spinner would end start-up by writing a cursor escape into the
    # log stream, fused with the next line: a JSON log line that no longer parses.
    worker.spinner = None
    return worker


def run_worker(settings: Settings) -> None:
    """Blocks until the worker stops; exits the process with Faust's exit code."""
    worker = build_worker(settings)
    tune_interpreter()
    worker.execute_from_commandline()
