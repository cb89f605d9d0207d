"""Prometheus metrics: the one registry and every metric name moodwire exposes.

Each long-running process (``process``, ``ingest``, ``alerts``, ``web``) calls
:func:`serve` once at start; the rest of the code only touches the metric objects below
(one line per hook). Names follow Prometheus' conventions: ``_total`` counters, ``_seconds``
durations, base units. Prometheus adds ``job`` and ``instance`` to every series, which is
what the dashboards' per-worker view groups by.

Label values are bounded: dead-letter reasons are reduced to their kind
(:func:`reason_kind`) and at most :data:`MAX_REASONS` kinds per process, so hostile input
cannot blow up the number of series.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    start_http_server,
)

from moodwire import __version__
from moodwire.logs import get_logger
from moodwire.settings import Settings

log = get_logger(__name__)

# A registry of our own (not prometheus_client's global one), so that importing a library
# that registers metrics never changes what moodwire exposes; the standard process, GC
# and platform collectors are added explicitly (CPU, memory and open fds per worker).
REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
    REGISTRY.register(_collector)

# Latencies of one micro-batch stage or one sink call: 1 ms to 10 s.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_POSTS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)

PROCESS_INFO = Info(
    "moodwire_process", "Which moodwire command this process runs.", registry=REGISTRY
)
MODEL_INFO = Info(
    "moodwire_model",
    "The serving model: its version and the device it runs on.",
    registry=REGISTRY,
)

# --- process: the stream processor -------------------------------------------------------
POSTS_CONSUMED = Counter(
    "moodwire_posts_consumed",
    "Records the processor read from the raw-posts topic (valid or not).",
    ["topic"],
    registry=REGISTRY,
)
POSTS_SCORED = Counter(
    "moodwire_posts_scored",
    "Posts scored by the model.",
    ["model_version"],
    registry=REGISTRY,
)
POSTS_WRITTEN = Counter(
    "moodwire_posts_written",
    "Scored posts a sink has written (postgres, redis: newly counted, kafka: scored topic).",
    ["sink"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "moodwire_dead_letters",
    "Records refused to the dead-letter topic, by the stage that refused them and why.",
    ["stage", "reason"],
    registry=REGISTRY,
)
BATCH_POSTS = Histogram(
    "moodwire_batch_posts",
    "Records per micro-batch taken from the raw-posts topic.",
    buckets=_POSTS,
    registry=REGISTRY,
)
BATCH_STAGE_SECONDS = Histogram(
    "moodwire_batch_stage_seconds",
    "Seconds one micro-batch spent in a stage: decode, score, postgres, redis, kafka.",
    ["stage"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "moodwire_batch_seconds",
    "Seconds from taking a micro-batch to its last write (all stages).",
    buckets=_SECONDS,
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "moodwire_consumer_lag",
    "Messages between a partition's high watermark (as the broker reports it in fetch "
    "responses) and the next offset this worker will write.",
    ["topic", "partition"],
    registry=REGISTRY,
)
SINK_RETRIES = Counter(
    "moodwire_sink_retries",
    "Failed attempts of a write that is retried until its server answers.",
    ["operation"],
    registry=REGISTRY,
)
SINK_WAIT_SECONDS = Counter(
    "moodwire_sink_wait_seconds",
    "Seconds a write waited on a server that failed it (from the first failure to success).",
    ["operation"],
    registry=REGISTRY,
)

# --- ingest: connectors into the raw topic ------------------------------------------------
INGEST_RECORDS = Counter(
    "moodwire_ingest_records",
    "Records a connector yielded, by outcome: sent (to the raw topic) or dead (letter).",
    ["connector", "outcome"],
    registry=REGISTRY,
)
CONNECTOR_RECONNECTS = Counter(
    "moodwire_connector_reconnects",
    "Times a connector backed off and reconnected to its source.",
    ["connector"],
    registry=REGISTRY,
)
CURSOR_SAVED = Gauge(
    "moodwire_connector_cursor_saved_timestamp_seconds",
    "Unix time of a connector's last cursor save (cursor age: time() minus this).",
    ["connector"],
    registry=REGISTRY,
)

# --- alerts ---------------------------------------------------------------------------------
ALERTS_RAISED = Counter(
    "moodwire_alerts_raised",
    "New alerts stored in Postgres (re-runs of the same window are not counted).",
    ["brand"],
    registry=REGISTRY,
)
ALERTS_DELIVERED = Counter(
    "moodwire_alerts_delivered",
    "Alerts handed to a delivery channel that confirmed them (kafka: the alerts topic).",
    ["channel"],
    registry=REGISTRY,
)
ALERT_RUN_SECONDS = Histogram(
    "moodwire_alert_run_seconds",
    "Seconds one detection pass over every brand took.",
    buckets=_SECONDS,
    registry=REGISTRY,
)

# --- web --------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "moodwire_http_requests",
    "Requests `moodwire web` answered, by route template and status code.",
    ["route", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "moodwire_http_request_seconds",
    "Seconds `moodwire web` took to answer a request, by route template.",
    ["route"],
    buckets=_SECONDS,
    registry=REGISTRY,
)

MAX_REASONS = 32
_reasons: set[str] = set()
_reasons_lock = threading.Lock()
_DIGITS = re.compile(r"\d+")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_IDENT = re.compile(r"^'[A-Za-z_][A-Za-z0-9_]{0,30}'$")


def reason_kind(reason: str) -> str:
    """A dead-letter reason without the details that vary per record: the text before the
    first colon, numbers as ``N``, quoted values as ``'…'`` unless they are field names,
    e.g. ``malformed JSON: Expecting value...`` -> ``malformed JSON``."""
    head = reason.split(":", 1)[0].strip()
    head = _QUOTED.sub(lambda m: m.group(0) if _IDENT.match(m.group(0)) else "'…'", head)
    head = _DIGITS.sub("N", head)
    return head[:60] or "unknown"


def dead_letter(stage: str, reason: str) -> None:
    """Count one dead letter; past MAX_REASONS distinct kinds, new kinds count as other."""
    kind = reason_kind(reason)
    with _reasons_lock:
        if kind not in _reasons:
            if len(_reasons) >= MAX_REASONS:
                kind = "other"
            else:
                _reasons.add(kind)
    DEAD_LETTERS.labels(stage, kind).inc()


class _Report(Protocol):
    """What the processor reports per batch (moodwire.process.batch.BatchReport)."""

    @property
    def received(self) -> int: ...
    @property
    def stored(self) -> int: ...
    @property
    def counted(self) -> int: ...
    @property
    def seconds(self) -> float: ...
    @property
    def stages(self) -> dict[str, float]: ...


# BatchReport's stage names -> the ``stage`` label (its "scored" is the Kafka send).
_STAGE_LABEL = {"scored": "kafka"}


def observe_batch(report: _Report, model_version: str, topic: str) -> None:
    """Everything one written micro-batch says: counts, size, latency per stage."""
    POSTS_CONSUMED.labels(topic).inc(report.received)
    BATCH_POSTS.observe(report.received)
    BATCH_SECONDS.observe(report.seconds)
    for stage, seconds in report.stages.items():
        BATCH_STAGE_SECONDS.labels(_STAGE_LABEL.get(stage, stage)).observe(seconds)
    if "score" in report.stages:
        POSTS_SCORED.labels(model_version).inc(report.stored)
    if report.stored:
        POSTS_WRITTEN.labels("postgres").inc(report.stored)
        POSTS_WRITTEN.labels("redis").inc(report.counted)
    if "scored" in report.stages:
        POSTS_WRITTEN.labels("kafka").inc(report.stored)


_lag_partitions: set[tuple[str, str]] = set()


def update_lag(consumer: Any, topic: str, next_offset: Mapping[int, int]) -> None:
    """Lag of each assigned partition of ``topic`` that has both a high watermark from a
    fetch response and a written offset; partitions no longer assigned are dropped."""
    live: set[tuple[str, str]] = set()
    try:
        assigned = [tp for tp in consumer.assignment() if tp.topic == topic]
    except Exception:  # the consumer is not started yet, or is stopping
        assigned = []
    for tp in assigned:
        done = next_offset.get(tp.partition)
        try:
            high = consumer.highwater(tp)
        except Exception:
            high = None
        if done is None or high is None or high < 0:
            continue
        key = (topic, str(tp.partition))
        CONSUMER_LAG.labels(*key).set(max(0, int(high) - done))
        live.add(key)
    for key in _lag_partitions - live:
        CONSUMER_LAG.remove(*key)
    _lag_partitions.clear()
    _lag_partitions.update(live)


# One ingest process runs one connector: its scheme labels the reconnects counted deep in
# the connectors' backoff (moodwire.connectors.backoff), which know no name of their own.
_connector = "unknown"


def set_connector(scheme: str) -> None:
    global _connector
    _connector = scheme or "unknown"


def reconnect() -> None:
    CONNECTOR_RECONNECTS.labels(_connector).inc()


def observe_request(scope: Mapping[str, Any], status: int, started: float) -> None:
    """One answered request of ``moodwire web``, by its route template (never the raw
    path, whose values are unbounded); ``started`` is its ``time.perf_counter()``."""
    route = getattr(scope.get("route"), "path", None) or "unmatched"
    HTTP_REQUESTS.labels(route, str(status)).inc()
    HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)


def set_model(model_version: str, device: str) -> None:
    MODEL_INFO.info({"model_version": model_version, "device": device})


@dataclass(frozen=True, slots=True)
class MetricsServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"


def serve(settings: Settings, command: str) -> MetricsServer | None:
    """Serve ``/metrics`` on ``metrics_host:metrics_port`` from a daemon thread.

    Port 0 binds any free port. A port already taken (several processes on one host with
    the default port) falls back to a free one with a warning: the metrics endpoint must
    never stop a pipeline process from running. Returns None only if nothing could bind.
    """
    PROCESS_INFO.info({"command": command, "version": __version__})
    host, port = settings.metrics_host, settings.metrics_port
    try:
        server, _ = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        if port == 0:
            log.error("metrics endpoint could not bind", extra={"host": host, "error": str(exc)})
            return None
        log.warning(
            "metrics port in use; serving on a free port instead",
            extra={"host": host, "port": port, "error": str(exc)},
        )
        try:
            server, _ = start_http_server(0, addr=host, registry=REGISTRY)
        except OSError as again:
            log.error("metrics endpoint could not bind", extra={"host": host, "error": str(again)})
            return None
    bound = MetricsServer(host, int(server.server_address[1]))
    log.info("metrics serving", extra={"command": command, "url": bound.url, "port": bound.port})
    return bound
