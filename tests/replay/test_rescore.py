"""`moodwire rescore` on real Postgres and Redis: stored posts re-scored under a new
version, each exactly once, also when a run is killed and started again."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import redis
from typer.testing import CliRunner

from moodwire.aggregates.keys import ALL_BRANDS
from moodwire.aggregates.redis_copy import RedisCopy
from moodwire.cli.app import app
from moodwire.db.engine import make_engine
from moodwire.model import artifact
from moodwire.model.engine import InferenceEngine
from moodwire.records import Post
from moodwire.replay.posts import Scope
from moodwire.replay.rescore import RescoreBusy, exclusive, rescore
from moodwire.settings import Settings, get_settings
from moodwire.status import collect
from support.pipeline import (
    MOODWIRE,
    assert_aggregates_exact,
    count_scores,
    redis_buckets,
    sql_buckets,
    worker_env,
)

from .conftest import N, source_of


def run_cli(settings: Settings, model: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(MOODWIRE), "rescore", "--model", str(model), "--source", source_of(settings), *args],
        env=worker_env(settings, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def snapshot(settings: Settings, client: redis.Redis, version: str) -> tuple[object, ...]:
    """Everything a rerun must leave unchanged: rows, buckets, totals."""
    return (
        count_scores(settings, version),
        redis_buckets(settings, version),
        RedisCopy(client).totals(version),
    )


def test_rescore_adds_one_row_per_post_and_exact_aggregates_for_the_new_version(
    settings: Settings,
    redis_client: redis.Redis,
    stored: list[Post],
    model_b: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    version_a = artifact.model_version(settings.model_path)
    engine = InferenceEngine.load(path=model_b, device="cpu")
    version_b = engine.model_version
    scope = Scope(source=source_of(settings))

    report = rescore(settings, engine, scope, batch_size=128)

    assert (report.posts, report.stored, report.counted) == (N, N, N)
    assert report.chunks == -(-N // 128)
    assert count_scores(settings, version_b) == N
    assert count_scores(settings, version_a) == N  # the old version's rows stay
    assert_aggregates_exact(settings, version_b, N)
    assert_aggregates_exact(settings, version_a, N)
    # Another model: same posts, other scores (a halved temperature sharpens them).
    sum_a = sum(b.score_sum for k, b in sql_buckets(settings, version_a).items() if k[0] == "*")
    sum_b = sum(b.score_sum for k, b in sql_buckets(settings, version_b).items() if k[0] == "*")
    assert abs(sum_a - sum_b) > 1.0
    assert {version_a, version_b} <= set(redis_client.smembers("mw:versions"))
    # `moodwire status --model-version` shows the new version's figures.
    for name in ("broker_url", "database_url", "redis_url"):
        monkeypatch.setenv(f"MOODWIRE_{name.upper()}", str(getattr(settings, name)))
    get_settings.cache_clear()
    try:
        shown = CliRunner().invoke(app, ["status", "--json", "--model-version", version_b])
    finally:
        get_settings.cache_clear()
    assert shown.exit_code == 0, shown.output
    figures = orjson.loads(shown.stdout)
    assert figures == collect(settings, version_b)
    assert figures["errors"] == []
    assert (figures["model_version"], figures["scored"], figures["aggregate_total"]) == (
        version_b,
        N,
        N,
    )
    assert figures["brands"]["acme"]["posts"] == sum(
        b.n for k, b in sql_buckets(settings, version_b).items() if k[0] == "acme"
    )

    before = snapshot(settings, redis_client, version_b)
    again = rescore(settings, engine, scope, batch_size=128)
    assert (again.posts, again.stored, again.counted, again.chunks) == (0, 0, 0, 0)
    assert snapshot(settings, redis_client, version_b) == before


def test_since_until_and_source_bound_what_is_rescored(
    settings: Settings, redis_client: redis.Redis, stored: list[Post], model_b: Path
) -> None:
    engine = InferenceEngine.load(path=model_b, device="cpu")
    since = datetime(2009, 5, 11, 3, 5, tzinfo=UTC)
    until = datetime(2009, 5, 11, 3, 10, tzinfo=UTC)
    inside = sum(since <= p.created_at < until for p in stored)
    assert 0 < inside < N

    elsewhere = rescore(settings, engine, Scope(since, until, "no-such-source"), batch_size=50)
    assert elsewhere.posts == 0
    report = rescore(settings, engine, Scope(since, until, source_of(settings)), batch_size=50)

    assert report.posts == report.stored == report.counted == inside
    assert count_scores(settings, engine.model_version) == inside
    assert_aggregates_exact(settings, engine.model_version, inside)
    minutes = {k[2] for k in redis_buckets(settings, engine.model_version)}
    assert min(minutes) >= since.timestamp() and max(minutes) < until.timestamp()


def test_killed_between_commit_and_redis_then_rerun_counts_each_post_once(
    settings: Settings, redis_client: redis.Redis, stored: list[Post], model_b: Path
) -> None:
    version_b = artifact.model_version(model_b)
    # The worst window: the first chunk is committed (rows and rollups), Redis not written.
    crashed = run_cli(
        settings, model_b, "--batch-size", "100", MOODWIRE_FAULT_CRASH_AFTER="postgres"
    )
    out, _ = crashed.communicate(timeout=60)
    assert crashed.returncode == -signal.SIGKILL, out
    assert count_scores(settings, version_b) == 100
    # Redis shows less than Postgres holds, never more.
    assert ALL_BRANDS not in RedisCopy(redis_client).totals(version_b)

    engine = InferenceEngine.load(path=model_b, device="cpu")
    rerun = rescore(settings, engine, Scope(source=source_of(settings)), batch_size=100)
    # The committed chunk is not scored or counted again; the killed run is noticed and
    # the version's Redis copy rebuilt from the rollups.
    assert (rerun.rebuilt, rerun.stored, rerun.counted) == (True, N - 100, N - 100)
    assert count_scores(settings, version_b) == N
    assert_aggregates_exact(settings, version_b, N)


def test_sigkill_mid_run_then_rerun_is_exact_and_a_finished_run_is_a_no_op(
    settings: Settings, redis_client: redis.Redis, stored: list[Post], model_b: Path
) -> None:
    version_b = artifact.model_version(model_b)
    run = run_cli(settings, model_b, "--batch-size", "10")
    deadline = time.monotonic() + 60
    while count_scores(settings, version_b) < 50 and run.poll() is None:
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.01)
    os.kill(run.pid, signal.SIGKILL)
    run.communicate(timeout=30)
    assert run.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    partial = count_scores(settings, version_b)
    assert 50 <= partial < N

    rerun = run_cli(settings, model_b, "--batch-size", "64")
    out, _ = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, out
    assert f"rescored {N - partial:,} posts into {version_b}" in out, out
    assert count_scores(settings, version_b) == N
    assert_aggregates_exact(settings, version_b, N)

    before = snapshot(settings, redis_client, version_b)
    engine = InferenceEngine.load(path=model_b, device="cpu")
    last = rescore(settings, engine, Scope(source=source_of(settings)))
    assert (last.posts, last.stored, last.counted) == (0, 0, 0)
    assert snapshot(settings, redis_client, version_b) == before


def test_a_second_run_into_the_same_version_is_refused_while_one_runs(
    settings: Settings, redis_client: redis.Redis, model_b: Path
) -> None:
    engine = InferenceEngine.load(path=model_b, device="cpu")
    db = make_engine(settings)
    try:
        with (
            exclusive(db, engine.model_version),
            pytest.raises(RescoreBusy, match="another rescore"),
        ):
            rescore(settings, engine, Scope(source=source_of(settings)))
        # Released: the next run goes ahead (nothing in scope, so nothing to do).
        assert rescore(settings, engine, Scope(source=source_of(settings))).posts == 0
    finally:
        db.dispose()
