"""Apply the Alembic migrations in ``infra/migrations`` from code (CLI, stack, tests)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool

from moodwire.settings import REPO_ROOT

ALEMBIC_INI = REPO_ROOT / "infra" / "alembic.ini"
MIGRATIONS_DIR = REPO_ROOT / "infra" / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """Alembic's config for our migrations; ``url`` overrides MOODWIRE_DATABASE_URL."""
    cfg = Config(str(ALEMBIC_INI)) if ALEMBIC_INI.exists() else Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (idempotent)."""
    # Alembic logs two INFO lines per connection; our callers report the outcome themselves.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    command.upgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """The revision the database is at, or None before the first migration."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    """The newest revision in the migrations directory."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def migrations_dir() -> Path:
    return MIGRATIONS_DIR
