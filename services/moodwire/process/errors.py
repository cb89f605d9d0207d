"""Which write failures are the record's fault (permanent) and which the world's (transient).

A transient failure (a server down or restarting, a timeout, a lost connection) is
retried with backoff, offsets held: the same write succeeds later. A permanent one fails
the same way every time, so retrying it would hold every partition forever: the record
that causes it is dead-lettered with the reason instead (``BatchProcessor`` finds it by
splitting the batch).

Permanent:
- PostgreSQL SQLSTATE class 22 (data exception: a value the column or the database
  encoding cannot hold), 23 (integrity constraint violation) and 54 (program limit
  exceeded: an index row or a value too large);
- Kafka's "message too large" (client or broker);
- :class:`moodwire.records.InvalidRecord` or a ``UnicodeError`` raised while encoding.
Everything else is transient, including statement timeouts (57014) and serialization
failures (40001): they pass when the load or the lock that caused them does.
"""

from __future__ import annotations

import aiokafka.errors
import kafka.errors
from sqlalchemy.exc import DBAPIError

from moodwire.records import InvalidRecord

PERMANENT_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
_TOO_LARGE = (
    aiokafka.errors.MessageSizeTooLargeError,
    aiokafka.errors.RecordTooLargeError,
    aiokafka.errors.RecordListTooLargeError,
    kafka.errors.MessageSizeTooLargeError,
    kafka.errors.RecordListTooLargeError,
)


class PermanentError(Exception):
    """A write failed in a way a retry cannot fix; ``reason`` is one line for a dead letter."""

    def __init__(self, reason: str, cause: BaseException) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cause = cause


def sqlstate(exc: BaseException) -> str | None:
    """The PostgreSQL error code of ``exc`` (or of the DB-API error SQLAlchemy wraps)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def permanent_reason(exc: BaseException) -> str | None:
    """One line saying why ``exc`` is permanent, or None when it is transient."""
    if isinstance(exc, PermanentError):
        return exc.reason
    if isinstance(exc, InvalidRecord):
        return exc.reason
    if isinstance(exc, UnicodeError):  # a value the connection's encoding cannot carry
        return f"cannot encode the record: {exc}"[:500]
    if isinstance(exc, _TOO_LARGE):
        return f"kafka refused the record: {type(exc).__name__}: {exc}"[:500]
    code = sqlstate(exc)
    if code is not None and code[:2] in PERMANENT_SQLSTATE_CLASSES:
        orig = exc.orig if isinstance(exc, DBAPIError) else exc
        first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        return f"postgres refused the record ({code}): {first}"[:500]
    return None
