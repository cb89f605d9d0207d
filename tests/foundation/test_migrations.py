"""The Alembic migrations build exactly the schema of ``moodwire.db.tables``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def test_db_commands_report_and_apply_revisions(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOODWIRE_")}
    env["MOODWIRE_DATABASE_URL"] = database_url
    moodwire = str(Path(sys.executable).with_name("moodwire"))
    upgraded = subprocess.run(
        [moodwire, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == f"database at revision {head()}"
    env.pop("MOODWIRE_DATABASE_URL")
    env["MOODWIRE_STATE_DIR"] = str(Path(sys.prefix) / "no-such-state")
    missing = subprocess.run(
        [moodwire, "db", "current"], env=env, capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 1
    assert "MOODWIRE_DATABASE_URL" in missing.stderr and "stack up" in missing.stderr
