"""The Alembic migrations build exactly the schema of ``moodwire.db.tables``."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from moodwire.db.engine import make_engine
from moodwire.db.migrate import current, head, upgrade
from moodwire.db.tables import Base


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], f"tables.py and infra/migrations disagree: {diff}"


def test_upgrade_is_idempotent_and_reaches_head(database_url: str) -> None:
    assert head() is not None
    upgrade(database_url)
    assert current(database_url) == head()
