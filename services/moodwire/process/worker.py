"""Run one stream-processor worker (``moodwire process``) until SIGINT/SIGTERM.

Start-up: topics, sinks and the Faust app are built on this thread; then the model
(torch's import and the weights, 1-3 s of CPU) loads on a thread of its own while Faust
starts and joins the consumer group (the join waits seconds on the broker), and the first
batch waits for it if it must. Then the interpreter is tuned and the loop handed to Faust.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import TYPE_CHECKING

import faust

from moodwire import metrics
from moodwire.aggregates.writer import AggregatesWriter
from moodwire.brands import BrandMatcher
from moodwire.db.engine import make_engine
from moodwire.logs import get_logger
from moodwire.model.background import BackgroundScorer
from moodwire.process import faust_patches
from moodwire.process.app import Runtime, create_app
from moodwire.process.batch import BatchProcessor
from moodwire.redis_client import connect
from moodwire.settings import Settings
from moodwire.sinks.kafka import KafkaWriter
from moodwire.sinks.postgres import PostgresSink
from moodwire.stack.ports import free_port
from moodwire.topics import ensure_topics

if TYPE_CHECKING:
    from moodwire.model.engine import InferenceEngine

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


def resolve_web_port(settings: Settings) -> Settings:
    """Faust refuses port 0 ("out of range for Port"), so "any free port" is picked here:
    the OS's choice for a socket bound and closed at once (another process could take it
    in between; Faust then fails to bind and says so)."""
    if settings.web_port != 0:
        return settings
    return settings.model_copy(update={"web_port": free_port(settings.web_host)})


def _model_loaded(engine: InferenceEngine) -> None:
    metrics.set_model(engine.model_version, engine.device)
    # The model's objects live as long as the worker: keep them out of the collector's
    # scans too, like the rest of the start-up heap (tune_interpreter).
    gc.freeze()


def build_worker(settings: Settings) -> faust.Worker:
    engine = BackgroundScorer(
        settings.model_path,
        device=settings.device,
        threads=settings.process_threads,
        batch_size=settings.batch_size,
        on_loaded=_model_loaded,
        start=False,
    )
    settings = resolve_web_port(settings)

    # Faust would declare only the raw topic, and an unknown topic written to by the sinks
    # gets the broker's default partition count: create all four as configured.
    ensure_topics(settings)
    if settings.faust_speedups:
        log.info("faust patches", extra=faust_patches.apply(settings.fetch_max_wait_ms))
    metrics.serve(settings, "process")
    matcher = BrandMatcher.from_settings(settings)
    db = make_engine(settings)
    kafka = KafkaWriter(settings)
    processor = BatchProcessor(
        settings,
        engine,
        matcher,
        PostgresSink(db),
        AggregatesWriter(db, connect(settings)),
        kafka,
    )
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    runtime = Runtime(settings, processor, kafka, PostgresSink(db), loop=loop)
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
            "web": f"{settings.web_host}:{settings.web_port}",
        },
    )
    # Everything above is CPU on this thread; from here the worker mostly waits on the
    # broker (Faust's start, the group join), which the model's load overlaps.
    engine.start()
    return faust.Worker(
        app,
        runtime,
        loop=loop,
        loglevel=settings.log_level,
        override_logging=False,
        quiet=True,
        redirect_stdouts=False,
    )


def run_worker(settings: Settings) -> None:
    """Blocks until the worker stops; exits the process with Faust's exit code."""
    worker = build_worker(settings)
    tune_interpreter()
    worker.execute_from_commandline()
