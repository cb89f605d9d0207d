"""The one way to open the database: an Engine (and sessions) from the settings."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from moodwire.settings import Settings


def database_url(source: Settings | str) -> str:
    return source if isinstance(source, str) else source.require("database_url")


def connect_args(settings: Settings) -> dict[str, object]:
    """libpq options that keep a dead or half-open connection from hanging a process or
    holding row locks: a connect timeout; TCP keepalives and a TCP user timeout, so the
    client notices a server that vanished; and, on the server, ``statement_timeout`` and
    ``idle_in_transaction_session_timeout``, so a session whose client went silent
    mid-transaction is ended and its locks released."""
    args: dict[str, object] = {
        "connect_timeout": settings.db_connect_timeout,
        # Text always travels as UTF-8: a character the database's encoding cannot hold
        # is then the server's clear data error (22P05), the same on every driver.
        "client_encoding": "utf8",
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": 30_000,
    }
    timeout_ms = int(settings.db_statement_timeout * 1000)
    if timeout_ms > 0:
        args["options"] = (
            f"-c statement_timeout={timeout_ms} -c idle_in_transaction_session_timeout={timeout_ms}"
        )
    return args


def make_engine(source: Settings | str, **kwargs: object) -> Engine:
    """An Engine for the configured database (or an explicit SQLAlchemy URL, which gets
    no timeouts: migrations and tools may run long statements). ``connect_args`` given
    here are merged over the timeouts."""
    options: dict[str, object] = {"pool_pre_ping": True}
    if isinstance(source, Settings):
        given = kwargs.pop("connect_args", None)
        options["connect_args"] = {
            **connect_args(source),
            **(given if isinstance(given, dict) else {}),
        }
    options.update(kwargs)
    return create_engine(database_url(source), **options)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
