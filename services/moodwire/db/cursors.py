"""Connector cursors in Postgres: load them at start, save them once the broker has the
records (the ingest loop decides when; this module only reads and writes)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.postgresql import insert

from moodwire.db.tables import ConnectorCursor


class CursorStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load(self, connector: str) -> dict[str, dict[str, Any]]:
        """Saved offsets of ``connector`` by source partition (empty on a first run)."""
        query = select(ConnectorCursor.partition, ConnectorCursor.cursor).where(
            ConnectorCursor.connector == connector
        )
        with self._engine.connect() as conn:
            return {row.partition: dict(row.cursor) for row in conn.execute(query)}

    def save(self, connector: str, offsets: Mapping[str, Mapping[str, Any]]) -> None:
        """Upsert the offsets of the given partitions, all in one transaction."""
        if not offsets:
            return
        rows = [
            {"connector": connector, "partition": part, "cursor": dict(offset)}
            for part, offset in offsets.items()
        ]
        statement = insert(ConnectorCursor).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=[ConnectorCursor.connector, ConnectorCursor.partition],
            set_={"cursor": statement.excluded.cursor, "updated_at": statement.excluded.updated_at},
        )
        with self._engine.begin() as conn:
            conn.execute(statement)

    def clear(self, connector: str) -> int:
        """Forget ``connector``'s cursors (it then starts from the source's default)."""
        with self._engine.begin() as conn:
            result = conn.execute(
                delete(ConnectorCursor).where(ConnectorCursor.connector == connector)
            )
        return int(result.rowcount or 0)
