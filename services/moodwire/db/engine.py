"""The one way to open the database: an Engine (and sessions) from the settings."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from moodwire.settings import Settings


def database_url(source: Settings | str) -> str:
    return source if isinstance(source, str) else source.require("database_url")


def make_engine(source: Settings | str, **kwargs: object) -> Engine:
    """An Engine for the configured database (or an explicit SQLAlchemy URL)."""
    options: dict[str, object] = {"pool_pre_ping": True}
    options.update(kwargs)
    return create_engine(database_url(source), **options)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
