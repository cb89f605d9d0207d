"""Fixtures of the stream-processor tests (helpers live in process_support.py)."""

from process_support import spawn_worker

__all__ = ["spawn_worker"]
