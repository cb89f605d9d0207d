"""Helpers shared by the alerts, api and e2e tests: aggregates and rows on real servers.

``write_minutes`` feeds the real Redis copy writer synthetic per-minute counts
(exact control over shares, for the detector); ``run_real_batch`` puts real tweets
through the real batch step of the processor (real model, brand matcher, Postgres,
Redis and Kafka sinks), for the API and the browser test.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from sqlalchemy import text

from moodwire.aggregates.keys import as_text, bucket_from_hash
from moodwire.aggregates.keys import bucket as bucket_key
from moodwire.aggregates.rebuild import mark_whole
from moodwire.aggregates.redis_copy import APPLIED, RedisCopy
from moodwire.aggregates.rollup import RollupRow
from moodwire.db.engine import make_engine
from moodwire.redis_client import connect
from moodwire.settings import Settings
from moodwire.status import serving_model_version
from moodwire.training.data import default_data_dir as data_dir
from support.settings import unique_settings

# A fixed event-time origin, 2026-01-01 00:00 UTC: detection follows event time only.
T0 = 1_767_225_600
SOURCES = ("twitter", "reddit")


def model_version(settings: Settings) -> str:
    version = serving_model_version(settings.model_path)
    if version is None:
        pytest.skip(f"no serving model at {settings.model_path}")
    return version


def write_minutes(
    client: redis.Redis,
    version: str,
    topic: str,
    plan: Iterable[tuple[str, int, int, int]],
) -> int:
    """Add ``(brand, minute index from T0, posts, negatives)`` to the Redis copy through
    its real writer (as rows of a newer revision than those there), each post also under
    ``*``; returns the posts added.

    Non-negative posts alternate neutral / positive; sources alternate too.
    """
    add: dict[tuple[str, str, int], list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0.0])
    posts_added = 0
    for brand, minute, posts, negatives in plan:
        for i in range(posts):
            label = 0 if i < negatives else 1 + (i % 2)
            for b in (brand, "*"):
                acc = add[(b, SOURCES[i % 2], T0 + minute * 60)]
                acc[0] += 1
                acc[1 + label] += 1
                acc[4] += (-0.8, 0.0, 0.8)[label]
            posts_added += 1
    keys = sorted(add)
    pipe = client.pipeline(transaction=False)
    for b, s, m in keys:
        pipe.hgetall(bucket_key(version, b, s, m))
    rows: list[RollupRow] = []
    for (b, s, m), raw in zip(keys, pipe.execute(), strict=True):
        old, acc = bucket_from_hash(raw), add[(b, s, m)]
        rev = int({as_text(k): as_text(v) for k, v in raw.items()}.get("rev", "0")) + 1
        rows.append(
            RollupRow(
                version,
                b,
                s,
                m,
                old.n + int(acc[0]),
                old.neg + int(acc[1]),
                old.neu + int(acc[2]),
                old.pos + int(acc[3]),
                old.score_sum + acc[4],
                rev,
            )
        )
    status, _ = RedisCopy(client).write(rows)
    assert status == APPLIED, f"the Redis copy refused the write ({status})"
    return posts_added


def clear_alerts(settings: Settings) -> None:
    engine = make_engine(settings)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM alerts"))
    finally:
        engine.dispose()


def semeval_by_brand() -> dict[tuple[tuple[str, ...], str], list[str]]:
    """Real SemEval tweets keyed by (brands they name, gold label), in file order."""
    root = data_dir() / "semeval2017-task4a-english"
    if not root.is_dir():
        pytest.skip(f"real tweets not found at {root} (set MOODWIRE_DATA_DIR)")
    from moodwire.brands import BrandMatcher

    matcher = BrandMatcher.load(None)
    out: dict[tuple[tuple[str, ...], str], list[str]] = defaultdict(list)
    seen: set[str] = set()
    for path in sorted(root.glob("twitter-*-A.txt")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) < 3 or parts[2] in seen:
                continue
            brands = matcher.match(parts[2])
            if brands:
                seen.add(parts[2])
                out[(brands, parts[1])].append(parts[2])
    return out


def clear_aggregates(client: redis.Redis) -> None:
    """Drop moodwire's keys only (the test session's claim on the db index stays)."""
    keys = list(client.scan_iter(match="mw:*", count=1000))
    if keys:
        client.delete(*keys)
    mark_whole(client)  # empty and whole: no rebuild of other tests' rollups into it


@dataclass(frozen=True)
class Seeded:
    """What ``seed_live_data`` wrote: ids share ``prefix``; apple spikes at ``spike``."""

    prefix: str
    posts: int
    watermark: int
    spike: int
    spike_texts: list[str]
    alerts: list[dict[str, Any]]


def seed_live_data(settings: Settings, now: float | None = None) -> Seeded:
    """41 minutes of real brand tweets up to now, apple turning negative 4 minutes ago,
    through the real processor batch step, then one real detection pass."""
    by_key = semeval_by_brand()
    calm = by_key[(("apple",), "positive")] + by_key[(("apple",), "neutral")]
    angry = by_key[(("apple",), "negative")][:40]
    others = [
        t for (brands, _), texts in sorted(by_key.items()) if "apple" not in brands for t in texts
    ]
    random.Random(5).shuffle(calm)
    random.Random(6).shuffle(others)
    now = time.time() if now is None else now
    top = int(now) // 60 * 60
    spike = (top - 4 * 60) // 120 * 120
    prefix = f"web-{uuid.uuid4().hex[:8]}-"
    values: list[bytes] = []

    def add(text_: str, created: float) -> None:
        i = len(values)
        values.append(
            raw_post(prefix + str(i), text_, created, ("twitter", "reddit", "mastodon")[i % 3])
        )

    for minute in range(top - 40 * 60, top + 60, 60):
        texts = [calm.pop(), *(others.pop() for _ in range(7)), calm.pop(), calm.pop()]
        if spike <= minute < spike + 120:
            texts += angry[:20] if minute == spike else angry[20:]
        for j, t in enumerate(texts):
            created = minute + (j * 59 / len(texts) if minute < top else 0)
            add(t, min(created, now))
    # Posts the English model does not read: stored and counted, shown as not scored.
    for k, french in enumerate(FRENCH_APPLE):
        values.append(raw_post(f"{prefix}fr{k}", french, top - 90 + k, "mastodon", lang="fr-FR"))
    client = connect(settings)
    try:
        clear_aggregates(client)
    finally:
        client.close()
    clear_alerts(settings)
    stored = run_real_batch(settings, values)
    assert stored == len(values) - len(FRENCH_APPLE)
    from moodwire.alerts.runner import AlertRunner

    runner = AlertRunner(settings)
    try:
        report = runner.run_once(now=now)
    finally:
        runner.close()
    return Seeded(prefix, stored, top, spike, angry, report.new_alerts)


FRENCH_APPLE = [
    "Mon nouvel iPhone est vraiment génial, la photo est superbe",
    "L'iPhone est beaucoup trop cher cette année, quelle déception",
    "Mon iPhone ne charge plus depuis la mise à jour, c'est nul",
]


def raw_post(
    post_id: str, text_: str, created: float, source: str, lang: str | None = None
) -> bytes:
    return orjson.dumps(
        {
            "id": post_id,
            "source": source,
            "text": text_,
            "created_at": datetime.fromtimestamp(created, tz=UTC).isoformat(),
            "author": f"user{len(text_) % 41}",
            **({"lang": lang} if lang else {}),
        }
    )


def run_real_batch(settings: Settings, values: list[bytes]) -> int:
    """Put raw post bytes through the processor's real batch step; returns rows stored."""
    from moodwire.aggregates.writer import AggregatesWriter
    from moodwire.brands import BrandMatcher
    from moodwire.model.engine import InferenceEngine
    from moodwire.process.batch import BatchProcessor, RawRecord
    from moodwire.sinks.kafka import KafkaWriter
    from moodwire.sinks.postgres import PostgresSink

    async def go() -> int:
        engine = make_engine(settings)
        client = connect(settings)
        kafka = KafkaWriter(settings)
        await kafka.start()
        processor = BatchProcessor(
            settings,
            InferenceEngine.load(settings.model_path, device="cpu", threads=1),
            BrandMatcher.load(None),
            PostgresSink(engine),
            AggregatesWriter(engine, client),
            kafka,
        )
        try:
            records = [
                RawRecord(settings.topic_raw, 0, offset, value)
                for offset, value in enumerate(values)
            ]
            report = await processor.process(records)
            return report.stored
        finally:
            processor.close()
            await kafka.stop()
            client.close()
            engine.dispose()

    return asyncio.run(go())


def module_settings(
    broker_url: str, database_url: str, redis_url: str, state_dir: Path, **overrides: Any
) -> Settings:
    """Settings like the per-test ``settings`` fixture, for a module that seeds once."""
    return unique_settings(broker_url, database_url, redis_url, state_dir, **overrides)


def unseen_model(root: Path) -> Path:
    """A copy of the serving model under a new version: one with no data anywhere yet."""
    import json
    import shutil

    target = root / "unseen-model"
    shutil.copytree(Settings().model_path, target)
    config = json.loads((target / "config.json").read_text())
    config["semver"] = "0.0.0-unseen"
    (target / "config.json").write_text(json.dumps(config))
    return target


def wait_healthy(url: str, process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """Poll ``url``/healthz until it answers 200; fail at once, with the server's stderr
    when it was piped, if the process exits first, or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            err = process.stderr.read() if process.stderr else b""
            text_ = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
            raise AssertionError(f"moodwire web exited ({process.returncode}): {text_[-2000:]}")
        assert time.monotonic() < deadline, f"moodwire web did not answer in {timeout:.0f} s"
        time.sleep(0.2)
