"""Stream-processor benchmark: Faust with moodwire's patches vs stock Faust, one run.

On a private local stack (``moodwire.stack``, temporary state dir, stopped at the end):
for each variant, M real tweets (sentiment140, read in place from ``../shared/data``) are
loaded into a fresh raw topic first, then ONE ``moodwire process`` worker drains them into
Postgres and Redis. Printed per variant: posts/s from the first row to the last, the
worker's CPU seconds per 100k posts, and where its batches spent their time; then the
ratios patched / stock. The variants differ only in ``MOODWIRE_FAUST_SPEEDUPS``.

Usage: .venv/bin/python bench/processor.py [--posts 100000] [--variants patched,stock]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psutil
from kafka import KafkaProducer
from sqlalchemy import text

from moodwire.db.engine import make_engine
from moodwire.settings import Settings
from moodwire.stack import manager
from moodwire.topics import ensure_topics
from moodwire.training import data
from private_stack import use_private_stack

MOODWIRE = Path(sys.executable).with_name("moodwire")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_topic(settings: Settings, texts: list[str], n: int) -> None:
    start = datetime(2009, 5, 11, tzinfo=UTC)
    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_idempotence=False,
        linger_ms=20,
        batch_size=256 * 1024,
    )
    for i in range(n):
        post = {
            "id": str(i),
            "source": "sentiment140",
            "text": texts[i % len(texts)],
            "created_at": (start + timedelta(seconds=i / 100)).isoformat(),
        }
        producer.send(settings.topic_raw, key=str(i).encode(), value=orjson.dumps(post))
    producer.flush()
    producer.close()


def last_progress(log: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for line in log.read_bytes().splitlines():
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(event, dict) and event.get("event") == "progress":
            found = event
    return found


def drain(settings: Settings, variant: str, texts: list[str], n: int, logs: Path) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    s = settings.model_copy(
        update={
            "topic_raw": f"bench.raw.{suffix}",
            "topic_scored": f"bench.scored.{suffix}",
            "topic_dead_letters": f"bench.dlq.{suffix}",
            "topic_alerts": f"bench.alerts.{suffix}",
            "consumer_group": f"bench-{suffix}",
        }
    )
    ensure_topics(s)
    engine = make_engine(s)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE posts, scores CASCADE"))
    say(f"[{variant}] loading {n:,} posts into {s.topic_raw}")
    load_topic(s, texts, n)
    env = dict(os.environ)
    env.update(
        MOODWIRE_TOPIC_RAW=s.topic_raw,
        MOODWIRE_TOPIC_SCORED=s.topic_scored,
        MOODWIRE_TOPIC_DEAD_LETTERS=s.topic_dead_letters,
        MOODWIRE_TOPIC_ALERTS=s.topic_alerts,
        MOODWIRE_CONSUMER_GROUP=s.consumer_group,
        MOODWIRE_FAUST_SPEEDUPS="true" if variant == "patched" else "false",
        MOODWIRE_LOG_FORMAT="json",
    )
    log = logs / f"worker-{variant}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(MOODWIRE), "process"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    worker = psutil.Process(proc.pid)
    count = text("SELECT count(*) FROM scores")
    first: tuple[float, int, float] | None = None
    try:
        while True:
            with engine.connect() as conn:
                rows = int(conn.scalar(count) or 0)
            now = time.perf_counter()
            if rows and first is None:
                cpu = worker.cpu_times()
                first = (now, rows, cpu.user + cpu.system)
            if rows >= n:
                break
            if proc.poll() is not None:
                sys.exit(f"worker exited; see {log}")
            time.sleep(0.2)
        cpu = worker.cpu_times()
    finally:
        proc.terminate()
        proc.wait(30)
        engine.dispose()
    assert first is not None
    posts = n - first[1]
    seconds = now - first[0]
    if posts <= 0 or seconds <= 0:
        sys.exit("the worker drained every post before the first sample; raise --posts")
    worker_cpu = cpu.user + cpu.system - first[2]
    progress = last_progress(log)
    stages = {k[:-2]: v for k, v in progress.items() if k.endswith("_s") and k != "busy_s"}
    return {
        "posts": posts,
        "posts_per_s": round(posts / seconds, 1),
        "worker_cpu_s_per_100k": round(worker_cpu / posts * 100_000, 2),
        "stage_seconds_per_10k": {
            k: round(v / max(1, progress.get("posts", 1)) * 10_000, 3) for k, v in stages.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--variants", default="patched,stock")
    args = parser.parse_args()

    state_dir = use_private_stack("moodwire-bench-proc-")
    texts = [t for t in data.load_sentiment140(data.default_data_dir()).texts if t.strip()]
    say(f"starting a private stack in {state_dir}")
    manager.up(Settings())
    settings = Settings()
    results: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}
    try:
        for variant in args.variants.split(","):
            results[variant] = drain(settings, variant, texts, args.posts, state_dir)
            say(f"[{variant}] {results[variant]}")
    finally:
        manager.down(settings)
        shutil.rmtree(state_dir, ignore_errors=True)
    if "patched" in results and "stock" in results:
        p, s = results["patched"], results["stock"]
        results["ratio_posts_per_s"] = round(p["posts_per_s"] / s["posts_per_s"], 2)
        results["ratio_worker_cpu"] = round(
            s["worker_cpu_s_per_100k"] / p["worker_cpu_s_per_100k"], 2
        )
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
