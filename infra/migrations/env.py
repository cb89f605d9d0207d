"""Alembic environment: the URL comes from the caller or from moodwire's settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from moodwire.db.tables import Base
from moodwire.settings import Settings

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    # moodwire.db.migrate passes the URL as an attribute (no ini interpolation of '%').
    url = config.attributes.get("url")
    return str(url) if url else Settings().require("database_url")


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
