"""The one settings object. Every knob is an environment variable prefixed ``MOODWIRE_``.

Server URLs left unset are filled from the local stack's state file
(``$MOODWIRE_STATE_DIR/stack.json``, written by ``moodwire stack up``), so that
``moodwire stack up`` followed by any other command just works.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

# services/moodwire/settings.py -> repo root (editable install); the shipped model lives there.
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "moodwire-gru"
STACK_FILE_NAME = "stack.json"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Marks a field as test-only (fault injection for the crash tests): a real setting, so a
# test can reach a worker subprocess through its environment, but left out of the
# README's settings table (moodwire.settings_doc) and listed under "Tests" instead.
TEST_ONLY: dict[str, Any] = {"test_only": True}


def default_state_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "moodwire"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MOODWIRE_", env_file=None, extra="ignore", protected_namespaces=()
    )

    # --- servers -------------------------------------------------------------------
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Where the local stack keeps its data, logs, PIDs and URLs.",
    )
    broker_url: str | None = Field(
        default=None,
        description="Kafka bootstrap servers: kafka://host:port or host:port[,host:port].",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of PostgreSQL (postgresql+psycopg2://...)."
    )
    redis_url: str | None = Field(
        default=None, description="Redis URL, e.g. redis://127.0.0.1:6379/0."
    )
    stack_broker_port: int = Field(
        default=19092,
        ge=0,
        le=65535,
        description="Port `moodwire stack up` gives the local broker (0: any free port).",
    )
    stack_postgres_port: int = Field(
        default=15432,
        ge=0,
        le=65535,
        description="Port `moodwire stack up` gives the local PostgreSQL (0: any free port).",
    )
    stack_redis_port: int = Field(
        default=16379,
        ge=0,
        le=65535,
        description="Port `moodwire stack up` gives the local Redis (0: any free port).",
    )

    # --- topics ----------------------------------------------------------------------
    topic_raw: str = Field(default="moodwire.posts.raw", description="Raw posts topic.")
    topic_scored: str = Field(default="moodwire.posts.scored", description="Scored posts topic.")
    topic_alerts: str = Field(default="moodwire.alerts", description="Alerts topic.")
    topic_dead_letters: str = Field(
        default="moodwire.dead-letters", description="Dead-letter topic (bad input, with reason)."
    )
    partitions: int = Field(default=4, ge=1, description="Partitions per topic when created.")
    replication_factor: int = Field(default=1, ge=1, description="Replication factor when created.")

    # --- ingest ------------------------------------------------------------------------
    ingest_compression: Literal["auto", "lz4", "zstd", "snappy", "gzip", "none"] = Field(
        default="auto",
        description="Compression of produced batches; auto: lz4, else zstd, else gzip.",
    )
    ingest_linger_ms: int = Field(
        default=20, ge=0, description="How long the producer waits to fill a batch (ms)."
    )
    ingest_cursor_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between saves of a connector's cursor (only ever saved once "
        "the broker has acknowledged the records before it).",
    )
    ingest_queue_size: int = Field(
        default=10_000,
        ge=1,
        description="Records a connector may read ahead of the producer (a bounded queue, so "
        "a network read never waits on Kafka or Postgres until it is full).",
    )
    mastodon_token: SecretStr | None = Field(
        default=None, description="Mastodon user token (scope read:statuses) for mastodon://."
    )
    reddit_client_id: str | None = Field(
        default=None, description="Reddit OAuth client id (an approved API client) for reddit://."
    )
    reddit_client_secret: SecretStr | None = Field(
        default=None, description="Reddit OAuth client secret for reddit://."
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Shared secret of webhook:// (GitHub-style sha256 HMAC, or a Standard "
        "Webhooks whsec_... key); required unless the receiver binds loopback with "
        "?insecure=1.",
    )

    # --- processing --------------------------------------------------------------------
    consumer_group: str = Field(
        default="moodwire-process", description="Faust app id / consumer group."
    )
    max_batch: int = Field(
        default=1000, ge=1, description="Most posts per micro-batch (stream.take)."
    )
    max_wait: float = Field(
        default=0.05, gt=0, description="Seconds to wait filling a micro-batch."
    )
    max_text_chars: int = Field(
        default=20_000, ge=1, description="Longer post texts are refused to the dead-letter topic."
    )
    # --- bounds on input (records.Bounds): refused records become dead letters -----------
    max_record_bytes: int = Field(
        default=1_040_000,
        ge=1024,
        description="Largest encoded record (bytes) accepted on the raw topic and written to "
        "the scored topic; keep it under the broker's message.max.bytes (Kafka: 1 MiB).",
    )
    max_future_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Posts stamped further than this ahead of the clock (s) are refused.",
    )
    min_created_at: datetime = Field(
        default=datetime(2000, 1, 1, tzinfo=UTC),
        description="Posts stamped before this time (ISO 8601 with a zone) are refused.",
    )
    sources: str = Field(
        default="",
        description="Comma-separated source names the pipeline accepts (empty: any name of "
        "letters, digits and ._@+-, at most 64 characters).",
    )
    replay_max_wait: float = Field(
        default=60.0,
        gt=0,
        description="Longest wait between two posts of a paced replay (`--speed N`), in s; a "
        "longer gap in event time is cut to it.",
    )
    db_connect_timeout: int = Field(
        default=5, ge=1, description="Seconds to open a PostgreSQL connection before failing."
    )
    db_statement_timeout: float = Field(
        default=60.0,
        ge=0,
        description="PostgreSQL statement_timeout and idle_in_transaction_session_timeout (s; "
        "0: none): a half-open client cannot hold row locks longer.",
    )
    redis_socket_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a Redis command may wait on the socket."
    )
    redis_connect_timeout: float = Field(
        default=5.0, gt=0, description="Seconds to open a Redis connection before failing."
    )
    scored_languages: str = Field(
        default="en",
        description="Comma-separated languages the model reads (ISO 639-1). Posts in another "
        "language are stored and counted with their language but get no sentiment; posts "
        "whose language is undetermined (`und`) are scored.",
    )
    language_min_confidence: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="A post without its own language tag gets the identifier's guess when it "
        "is at least this sure, else `und`.",
    )
    session_timeout: float = Field(
        # 6 s is Apache Kafka's smallest allowed (group.min.session.timeout.ms); the local
        # broker makes a join wait half of it, so a worker scores within seconds of launch.
        # The model and the sinks run on threads, so the loop heartbeats through batches.
        default=6.0,
        gt=0,
        description="Consumer-group session timeout (s): a dead worker's partitions move after "
        "it; on the local broker a join waits half of it.",
    )
    fetch_max_wait_ms: int = Field(
        default=50,
        ge=1,
        description="Longest a fetch waits on the broker for data (Faust hard-codes 1500).",
    )
    faust_speedups: bool = Field(
        default=True,
        description="Apply moodwire.process.faust_patches (measured per-event cost cuts).",
    )
    process_threads: int = Field(
        default=1,
        ge=1,
        description="Torch threads of the stream processor's model. The broker, Postgres and "
        "Redis share the cores; on 2 busy cores 2 threads measured 40x slower than 1.",
    )
    publish_scored: bool = Field(
        default=True,
        description="Also write every scored post to MOODWIRE_TOPIC_SCORED, for consumers "
        "outside moodwire; false: Postgres and Redis only (nothing in moodwire reads the "
        "topic; it costs about a tenth of a worker's CPU).",
    )
    overlap_batches: bool = Field(
        default=True,
        description="Score the next micro-batch while the previous one is being written "
        "(its offsets are acked only once written); false: one batch at a time.",
    )
    sink_retry_max: float = Field(
        default=10.0,
        gt=0,
        description="Longest pause (s) between retries while Postgres or Redis is down.",
    )
    fault_crash_after: Literal["postgres", "redis", "scored", "dead-letters"] | None = Field(
        default=None,
        description="FAULT INJECTION, for tests only: the worker kills itself (exit 137, no "
        "cleanup, no offset commit) right after this write of its first non-empty batch.",
        json_schema_extra=TEST_ONLY,
    )
    brands_file: Path | None = Field(
        default=None, description="YAML file of brands; default: the bundled demo brands."
    )

    # --- alerts (negative spikes) and the live web page ----------------------------------
    alert_window_minutes: int = Field(
        default=1,
        ge=1,
        le=60,
        description="Length of an alert window (event-time minutes; must divide 60).",
    )
    alert_lateness_minutes: int = Field(
        default=1,
        ge=0,
        description="A window is judged once the newest event minute is this far past its end.",
    )
    alert_lookback_minutes: int = Field(
        default=30, ge=1, description="Closed windows of this many recent minutes are checked."
    )
    alert_shift_points: float = Field(
        default=0.10,
        gt=0,
        le=0.5,
        description="Smallest negative-share shift (share points) the CUSUM is designed for; "
        "shifts under half of it never add up.",
    )
    alert_threshold: float = Field(
        default=8.0,
        gt=0,
        description="Evidence (nats of the over-dispersed binomial CUSUM) that raises a "
        "negative-shift alert.",
    )
    alert_baseline_hours: int = Field(
        default=8,
        ge=5,
        description="Clock hours before a window whose trimmed, pooled share is its baseline.",
    )
    alert_min_baseline_posts: int = Field(
        default=50, ge=1, description="A baseline with fewer posts is too thin to judge against."
    )
    alert_surge_minutes: int = Field(
        default=5, ge=1, description="A volume surge is judged over this many recent minutes."
    )
    alert_surge_min_ratio: float = Field(
        default=3.0, ge=1, description="Volume surge: at least this x the past hour's rate."
    )
    alert_interval: float = Field(
        default=10.0, gt=0, description="Seconds between detection runs of `moodwire alerts`."
    )
    alert_rules_file: Path | None = Field(
        default=None,
        description="YAML alert rules (channels, per-brand cooldown, quiet hours, detection); "
        "default: the `alerts:` section of the brands file, else alerts are sent nowhere.",
    )
    alert_delivery_interval: float = Field(
        default=1.0, gt=0, description="Seconds between looks at the delivery outbox."
    )
    alert_delivery_timeout: float = Field(
        default=10.0, gt=0, description="Longest one delivery attempt may take (s)."
    )
    alert_retry_initial: float = Field(
        default=5.0, gt=0, description="First pause before retrying a failed delivery (s)."
    )
    alert_retry_max: float = Field(
        default=900.0, gt=0, description="Longest pause between delivery retries (s)."
    )
    alert_max_attempts: int = Field(
        default=12, ge=1, description="Attempts before a delivery is given up as failed."
    )
    alert_fault_crash: Literal["after_enqueue", "after_claim", "after_send"] | None = Field(
        default=None,
        description="FAULT INJECTION, for tests only: `moodwire alerts` SIGKILLs itself at "
        "this point of its first delivery.",
        json_schema_extra=TEST_ONLY,
    )
    web_api_host: str = Field(
        default="127.0.0.1", description="Bind address of `moodwire web` (the live page)."
    )
    web_api_port: int = Field(
        default=8080, ge=0, le=65535, description="Port of `moodwire web` (the live page)."
    )
    web_refresh_seconds: float = Field(
        default=3.0, gt=0, description="How often the live page polls for new figures."
    )
    web_token: SecretStr | None = Field(
        default=None,
        description="Token of `moodwire web` (at least 16 characters): the page's login and "
        "the API's `Authorization: Bearer`. Required when it binds a non-loopback address; "
        "without it a loopback page asks for no login.",
    )
    web_allowed_hosts: str = Field(
        default="localhost,127.0.0.1,::1",
        description="Comma-separated host names `moodwire web` answers to (the Host header, "
        "against DNS rebinding); the bind address is added; `*` allows any.",
    )

    # --- model -------------------------------------------------------------------------
    model_path: Path = Field(
        default=DEFAULT_MODEL_DIR, description="Directory of the serving model."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Inference device: auto picks CUDA when present."
    )
    threads: int | None = Field(
        default=None, ge=1, description="CPU threads for inference (default: all cores)."
    )
    batch_size: int = Field(default=512, ge=1, description="Model batch size inside the engine.")

    # --- metrics (moodwire.metrics) ------------------------------------------------------
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Bind address of the Prometheus /metrics endpoint of every long-running "
        "process (process, ingest, alerts, web).",
    )
    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Port of that endpoint (0: any free port; the bound port is logged). A "
        "port already in use falls back to a free one, with a warning, so that several "
        "processes on one host all serve.",
    )

    # --- logs ----------------------------------------------------------------------------
    log_level: str = Field(default="INFO", description="Log level.")
    log_format: Literal["console", "json"] = Field(default="console", description="Log format.")

    @field_validator("database_url")
    @classmethod
    def _psycopg2_driver(cls, value: str | None) -> str | None:
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which moodwire does not
        # install; the plain URL most tools hand out must still work.
        if value is not None:
            for bare in ("postgresql://", "postgres://"):
                if value.startswith(bare):
                    return "postgresql+psycopg2://" + value[len(bare) :]
        return value

    @field_validator("min_created_at")
    @classmethod
    def _zoned_floor(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must have a time zone (e.g. 2000-01-01T00:00:00Z)")
        return value

    @property
    def allowed_sources(self) -> frozenset[str] | None:
        """The ``sources`` allowlist as a set; None when any valid name is accepted."""
        names = frozenset(n.strip() for n in self.sources.split(",") if n.strip())
        return names or None

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        # Checked here, not when logging is configured: a typo is then a settings error
        # naming the variable, like every other bad value.
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @property
    def model_languages(self) -> frozenset[str]:
        """``scored_languages`` as a set of lower-case codes."""
        return frozenset(
            code.strip().lower() for code in self.scored_languages.split(",") if code.strip()
        )

    @property
    def bootstrap_servers(self) -> list[str]:
        """``host:port`` entries of the broker URL, for kafka-python and aiokafka."""
        url = self.require("broker_url").replace(";", ",")
        return [part.strip().split("://", 1)[-1] for part in url.split(",") if part.strip()]

    @property
    def faust_broker(self) -> str:
        """The broker URL in Faust's ``kafka://host:port;host:port`` form."""
        return "kafka://" + ";".join(self.bootstrap_servers)

    # Names of the URLs that came from the stack file rather than the environment.
    _from_stack: set[str] = PrivateAttr(default_factory=set)

    @property
    def stack_file(self) -> Path:
        return self.state_dir / STACK_FILE_NAME

    @model_validator(mode="after")
    def _fill_from_running_stack(self) -> Settings:
        # URLs in the environment always win; the stack file only fills the gaps.
        try:
            urls = json.loads(self.stack_file.read_text())["urls"]
        except (OSError, ValueError, KeyError, TypeError):
            return self
        for name in ("broker_url", "database_url", "redis_url"):
            if getattr(self, name) is None and isinstance(urls.get(name), str):
                setattr(self, name, urls[name])
                self._from_stack.add(name)
        return self

    def configured_by_env(self, name: Literal["broker_url", "database_url", "redis_url"]) -> bool:
        """True when the URL was given explicitly, not filled in from a running local stack."""
        return getattr(self, name) is not None and name not in self._from_stack

    def require(self, name: Literal["broker_url", "database_url", "redis_url"]) -> str:
        """The URL, or a one-line error that says how to get one."""
        value = getattr(self, name)
        if not value:
            env = "MOODWIRE_" + name.upper()
            raise MissingServerError(
                f"no {name.replace('_url', '')} configured: run `moodwire stack up` or set {env}"
            )
        return str(value)


class MissingServerError(RuntimeError):
    pass


def invalid_settings(err: ValidationError) -> list[str]:
    """One line per bad value, naming the environment variable to fix."""
    lines = []
    for error in err.errors():
        name = "MOODWIRE_" + "_".join(str(part) for part in error["loc"]).upper()
        got = error.get("input")
        shown = f" (got {got!r})" if isinstance(got, str | int | float) else ""
        lines.append(f"{name}: {error['msg']}{shown}")
    return lines


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
