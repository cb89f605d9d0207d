"""Shared by the benchmarks: point this process (and its children) at a private local stack."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def use_private_stack(prefix: str) -> Path:
    """A fresh state dir and free ports for ``moodwire stack up``, whatever the environment
    points at, so a benchmark never measures (or writes into) someone's servers."""
    for var in ("MOODWIRE_BROKER_URL", "MOODWIRE_DATABASE_URL", "MOODWIRE_REDIS_URL"):
        os.environ.pop(var, None)
    state_dir = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.update(
        MOODWIRE_STATE_DIR=str(state_dir),
        MOODWIRE_STACK_BROKER_PORT="0",
        MOODWIRE_STACK_POSTGRES_PORT="0",
        MOODWIRE_STACK_REDIS_PORT="0",
        MOODWIRE_SESSION_TIMEOUT=os.environ.get("MOODWIRE_SESSION_TIMEOUT", "6"),
    )
    return state_dir
