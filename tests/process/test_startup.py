"""Start-up: a worker scores its first post seconds after launch (issue 18).

The model loads on a thread while Faust starts and joins the group, Faust's one-second
table wait is skipped, and the default session timeout (6 s) keeps the local broker's
join wait at 3 s. On a quiet host the first row comes about 5 s after launch
(``bench/peers.py`` measures it); the bound here leaves room for a test suite sharing
two cores.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import text

from moodwire.db.engine import make_engine
from moodwire.settings import Settings
from support.pipeline import (
    Worker,
    post_dicts,
    produce_posts,
    real_tweets,
    serving_version,
    tag_of,
    wait_until,
)

FIRST_ROW_BOUND_S = 10.0


def test_default_session_timeout_keeps_the_join_short() -> None:
    assert Settings.model_fields["session_timeout"].default == 6.0


def test_a_worker_scores_its_first_post_within_seconds_of_launch(
    settings: Settings, spawn_worker: Callable[..., Worker]
) -> None:
    tag = tag_of(settings)
    produce_posts(settings, post_dicts(real_tweets(200), tag))
    version = serving_version()
    db = make_engine(settings)

    def first_row() -> bool:
        with db.connect() as conn:
            return bool(
                conn.scalar(
                    text(
                        "SELECT EXISTS (SELECT 1 FROM scores "
                        "WHERE source LIKE :s AND model_version = :v)"
                    ),
                    {"s": f"%.{tag}", "v": version},
                )
            )

    launched = time.monotonic()
    worker = spawn_worker(MOODWIRE_SESSION_TIMEOUT="6")
    try:
        wait_until(lambda: first_row() or not worker.alive(), 60, "the first row", 0.05)
        took = time.monotonic() - launched
        assert worker.alive(), worker.tail()
        assert took < FIRST_ROW_BOUND_S, f"first row {took:.1f} s after launch"
        # The model loaded while the worker started, not before it: its load is logged
        # after the worker began starting Faust.
        names = [e.get("event") for e in worker.events()]
        assert "worker starting" in names and "model loaded" in names
        assert names.index("model loaded") > names.index("worker starting")
        patches = next(e for e in worker.events() if e.get("event") == "faust patches")
        assert patches["no_table_wait"] and patches["no_scan"] and patches["lean_handler"]
        # No terminal escapes (Faust's spinner) fused into the JSON log lines.
        assert b"\x1b[" not in worker.log_path.read_bytes()
    finally:
        db.dispose()
