"""`moodwire stack up | down | status`: the local servers as one unit.

``up`` starts only what no URL configures, records each PID, applies the migrations and
creates the topics; ``down`` stops exactly the recorded PIDs.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError

from moodwire.db.migrate import upgrade
from moodwire.logs import get_logger
from moodwire.settings import Settings
from moodwire.stack.broker import start_broker
from moodwire.stack.errors import StackError, first_line, redact_url
from moodwire.stack.health import PROBES
from moodwire.stack.ports import free_port
from moodwire.stack.postgres import STOP_SIGNAL as POSTGRES_STOP_SIGNAL
from moodwire.stack.postgres import start_postgres
from moodwire.stack.processes import ServerProcess, is_alive, stop
from moodwire.stack.redis import start_redis
from moodwire.stack.state import URL_FIELDS, StackState, locked, read_state, write_state
from moodwire.topics import ensure_topics

log = get_logger(__name__)

STOP_SIGNALS = {"broker": signal.SIGTERM, "postgres": POSTGRES_STOP_SIGNAL, "redis": signal.SIGTERM}


@dataclass(frozen=True)
class ServerStatus:
    name: str
    url: str | None
    origin: str  # "environment", "stack", "stack (stopped)" or "missing"
    pid: int | None
    answers: bool


def env_line(name: str, url: str) -> str:
    """``MOODWIRE_BROKER_URL=...``: one line per server, for ``eval "$(moodwire stack up)"``."""
    return f"MOODWIRE_{URL_FIELDS[name].upper()}={url}"


def up(settings: Settings) -> list[ServerProcess]:
    """Start what is neither configured by URL nor already running; returns the stack's servers.

    A failure part-way leaves what did start recorded, so `stack down` cleans up.
    """
    state_dir = settings.state_dir
    with locked(state_dir):
        state = read_state(settings.stack_file)
        for name, server in list(state.servers.items()):
            if not is_alive(server.pid, server.create_time):
                log.warning("recorded server is gone; starting it again", extra={"server": name})
                del state.servers[name]
        starters = _starters(settings, state_dir)
        for name, start in starters.items():
            if settings.configured_by_env(URL_FIELDS[name]):
                continue
            if name not in state.servers:
                state.servers[name] = start()
                write_state(settings.stack_file, state)
                log.info("started", extra={"server": name, "pid": state.servers[name].pid})
        write_state(settings.stack_file, state)
    prepare(_with_stack_urls(settings, state))
    # A recorded server that an environment URL now overrides is not what callers use.
    return [
        server
        for name, server in state.servers.items()
        if not settings.configured_by_env(URL_FIELDS[name])
    ]


def prepare(settings: Settings) -> None:
    """Apply the migrations and create the topics on whatever servers the settings name."""
    url = settings.require("database_url")
    broker = settings.require("broker_url")
    # A quick probe first: an unreachable broker would otherwise cost kafka-python's
    # 20-second bootstrap timeout before the same error.
    if not PROBES["broker_url"](settings):
        raise StackError(
            f"no broker answers at {broker}; start it or fix MOODWIRE_BROKER_URL "
            "(unset it to let `moodwire stack up` start a local one)"
        )
    try:
        upgrade(url)
    except SQLAlchemyError as err:
        raise StackError(
            f"cannot migrate the database at {redact_url(url)} ({first_line(err)}); "
            "check MOODWIRE_DATABASE_URL or run `moodwire stack status`"
        ) from None
    try:
        ensure_topics(settings)
    except KafkaError as err:
        raise StackError(
            f"cannot create topics on the broker at {broker} "
            f"({first_line(err)}); check MOODWIRE_BROKER_URL or run `moodwire stack status`"
        ) from None


def down(settings: Settings) -> list[ServerProcess]:
    """Stop exactly the recorded servers; returns the ones that were still running."""
    with locked(settings.state_dir):
        state = read_state(settings.stack_file)
        stopped = []
        # Reverse start order: the database goes last, after its clients would have.
        for name, server in reversed(list(state.servers.items())):
            if stop(server.pid, server.create_time, STOP_SIGNALS.get(name, signal.SIGTERM)):
                stopped.append(server)
            del state.servers[name]
            write_state(settings.stack_file, state)
        return stopped


def status(settings: Settings) -> list[ServerStatus]:
    """Where each server's URL comes from, its PID if ours, and whether it answers."""
    state = read_state(settings.stack_file)
    result = []
    for name, field in URL_FIELDS.items():
        url: str | None = getattr(settings, field)
        server = state.servers.get(name)
        if settings.configured_by_env(field):
            origin, pid = "environment", None
        elif server is not None:
            alive = is_alive(server.pid, server.create_time)
            origin, pid = ("stack" if alive else "stack (stopped)"), server.pid
        else:
            origin, pid = "missing", None
        answers = url is not None and PROBES[field](settings)
        result.append(ServerStatus(name, url, origin, pid, answers))
    return result


def _starters(settings: Settings, state_dir: Path) -> dict[str, Callable[[], ServerProcess]]:
    logs = state_dir / "logs"

    def port(configured: int) -> int:
        return configured or free_port()

    return {
        "broker": lambda: start_broker(port(settings.stack_broker_port), logs / "broker.log"),
        "postgres": lambda: start_postgres(
            state_dir / "postgres", port(settings.stack_postgres_port), logs / "postgres.log"
        ),
        "redis": lambda: start_redis(
            state_dir / "redis", port(settings.stack_redis_port), logs / "redis.log"
        ),
    }


def _with_stack_urls(settings: Settings, state: StackState) -> Settings:
    updates: dict[str, str] = {
        field: url for field, url in state.urls().items() if not settings.configured_by_env(field)
    }
    return settings.model_copy(update=updates)
