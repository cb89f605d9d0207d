"""Pipeline benchmark: moodwire end to end vs a naive consumer, and latency, in one run.

On its own local stack (broker, PostgreSQL, Redis started by ``moodwire.stack`` in a
temporary state dir, stopped at the end) it measures, on real tweets (sentiment140 100k
+ TweetEval, read in place from ``../shared/data``):

1. throughput: ``moodwire ingest file://corpus.jsonl`` (a child process) while
   ``moodwire process`` workers run; the clock stops when every post is a row in Postgres
   (scores of the serving model) AND counted in the Redis aggregates. Sustained end to
   end: the ingest runs concurrently with the processing, all on this machine.
2. latency at an offered 1,000 posts/s: real tweets stamped ``created_at`` = the moment
   they are sent, paced; p50/p99 of ``scores.scored_at - created_at`` (``scored_at`` is
   the writing transaction's start, so this slightly understates the commit time).
3. the naive baseline, same run, same servers, same model: a consumer that takes one post
   at a time from the raw topic through the model and writes it with one INSERT per row
   (posts, scores; one transaction per post) and its Redis counters.

Usage: .venv/bin/python bench/pipeline.py [--workers 2] [--limit 0] [--naive-seconds 15]
       [--latency-seconds 20] [--latency-rate 1000] [--json results.json]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson
import psutil
import psycopg2
import redis
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import func, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import make_url

from moodwire.brands import BrandMatcher
from moodwire.connectors import Connector, RawRecord
from moodwire.db import tables
from moodwire.db.engine import make_engine
from moodwire.db.migrate import upgrade
from moodwire.demo.local_pipeline import LocalPipeline
from moodwire.ingest import Ingest
from moodwire.model.engine import InferenceEngine
from moodwire.records import decode_post, post_from_dict, post_to_dict
from moodwire.settings import Settings
from moodwire.stack import manager
from moodwire.status import collect, serving_model_version
from moodwire.training import data
from private_stack import use_private_stack

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- corpus ------------------------------------------------------------------------------


def real_texts(data_dir: Path) -> list[tuple[str, str]]:
    """(source, text) of every usable real tweet: sentiment140 100k + TweetEval."""
    if not (data_dir / "sentiment140").is_dir():
        sys.exit(f"real tweets not found in {data_dir}; set MOODWIRE_DATA_DIR")
    out = [("sentiment140", t) for t in data.load_sentiment140(data_dir).texts]
    for split in ("train", "val", "test"):
        out += [(f"tweeteval-{split}", t) for t in data.load_split(data_dir, split).texts]
    return out


def write_corpus(path: Path, texts: list[tuple[str, str]], prefix: str) -> int:
    """JSON Lines of valid posts only, so that "every post" is an exact number."""
    n = 0
    with path.open("wb") as f:
        for i, (source, body) in enumerate(texts):
            obj = {
                "id": f"{prefix}{i}",
                "source": source,
                "text": body,
                "created_at": (T0 + timedelta(milliseconds=i)).isoformat(),
            }
            try:
                post_from_dict(obj)
            except ValueError:
                continue
            f.write(orjson.dumps(obj) + b"\n")
            n += 1
    return n


class PacedTweets(Connector):
    """Real tweets at ``rate`` posts/s, each stamped created_at = the moment it is sent."""

    def __init__(self, texts: list[str], rate: float, prefix: str) -> None:
        super().__init__(urlsplit("bench://paced"), {})
        self.texts, self.rate, self.prefix = texts, rate, prefix

    def records(self) -> Iterator[RawRecord]:
        start = time.monotonic()
        for n, body in enumerate(self.texts):
            ahead = start + n / self.rate - time.monotonic()
            if ahead > 0.0005 and self.sleep(ahead):
                return
            fields = {
                "id": f"{self.prefix}{n}",
                "source": "bench-latency",
                "text": body,
                "created_at": datetime.now(UTC).isoformat(),
            }
            yield RawRecord(payload=b"", origin=f"bench://{n}", fields=fields)


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds so far of each named process and its children."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        total = 0.0
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    continue
        except psutil.Error:
            pass
        out[name] = total
    return out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- waiting for the pipeline ---------------------------------------------------------------


def wait_until_counted(
    settings: Settings, total: int, timeout: float, pipeline: LocalPipeline
) -> float:
    """Block until ``total`` posts are scored rows AND in the aggregates; returns the time."""
    deadline = time.monotonic() + timeout
    last_report = 0.0
    while time.monotonic() < deadline:
        figures = collect(settings)
        scored, aggregated = figures["scored"] or 0, figures["aggregate_total"] or 0
        if scored >= total and aggregated >= total:
            return time.monotonic()
        dead = [c for c in pipeline.exited() if not c.name.startswith("ingest")]
        if dead:
            sys.exit(dead[0].describe_exit())
        if time.monotonic() - last_report > 5:
            say(f"  scored {scored:,} / aggregated {aggregated:,} of {total:,}")
            last_report = time.monotonic()
        time.sleep(0.25)  # each poll costs Postgres CPU that the pipeline would use
    sys.exit(f"timed out waiting for {total:,} posts (see logs in {pipeline.log_dir})")


# --- the naive baseline -------------------------------------------------------------------


def naive_baseline(
    settings: Settings, naive_db_url: str, naive_redis_url: str, seconds: float
) -> tuple[int, float]:
    """One post at a time: decode, brands, model, INSERT post, INSERT score, commit, Redis."""
    engine = InferenceEngine.load(settings.model_path, threads=settings.threads)
    matcher = BrandMatcher.from_settings(settings)
    db = make_engine(naive_db_url)
    rds = redis.Redis.from_url(naive_redis_url)
    # Partitions assigned by hand: a group join costs seconds that are not the naive
    # consumer's per-post cost, which is what is measured here.
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    ids = consumer.partitions_for_topic(settings.topic_raw) or set()
    consumer.assign([TopicPartition(settings.topic_raw, p) for p in sorted(ids)])
    consumer.seek_to_beginning()
    n = 0
    started = time.monotonic()
    try:
        with db.connect() as conn:
            for message in consumer:
                post = decode_post(message.value)
                brands = matcher.match(post.text)
                probs = engine.predict([post.text])[0]
                label = int(np.argmax(probs))
                row = post_to_dict(post)
                conn.execute(
                    pg_insert(tables.Post)
                    .values(
                        source=post.source,
                        source_id=post.id,
                        text=post.text,
                        created_at=post.created_at,
                        author=post.author,
                        url=post.url,
                        lang=post.lang,
                        brands=list(brands),
                        metadata_=row.get("metadata"),
                    )
                    .on_conflict_do_nothing()
                )
                conn.execute(
                    insert(tables.Score).values(
                        source=post.source,
                        source_id=post.id,
                        model_version=engine.model_version,
                        label=label,
                        p_negative=float(probs[0]),
                        p_neutral=float(probs[1]),
                        p_positive=float(probs[2]),
                        score=float(probs[2] - probs[0]),
                    )
                )
                conn.commit()
                minute = int(post.created_at.timestamp()) // 60 * 60
                pipe = rds.pipeline(transaction=False)
                for brand in (*(brands or ("(none)",)), "*"):
                    key = f"naive:{brand}:{post.source}:{minute}"
                    pipe.hincrby(key, "n", 1)
                    pipe.hincrby(key, ("neg", "neu", "pos")[label], 1)
                    pipe.hincrbyfloat(key, "score_sum", float(probs[2] - probs[0]))
                pipe.execute()
                n += 1
                if time.monotonic() - started >= seconds:
                    break
        elapsed = time.monotonic() - started
        with db.connect() as conn:
            rows = conn.scalar(select(func.count()).select_from(tables.Score))
        assert rows == n, f"naive wrote {rows} score rows for {n} posts"
        return n, elapsed
    finally:
        consumer.close()
        rds.close()
        db.dispose()


def create_database(url: str, name: str) -> str:
    """A fresh, migrated database next to ``url``'s; returns its URL."""
    parsed = make_url(url)
    conn = psycopg2.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, dbname="postgres"
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    new_url = parsed.set(database=name).render_as_string(hide_password=False)
    upgrade(new_url)
    return new_url


# --- latency -----------------------------------------------------------------------------


def latencies(settings: Settings, version: str) -> np.ndarray:
    db = make_engine(settings)
    try:
        with db.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT extract(epoch FROM s.scored_at - p.created_at) FROM posts p "
                    "JOIN scores s USING (source, source_id) "
                    "WHERE p.source = 'bench-latency' AND s.model_version = :v"
                ),
                {"v": version},
            ).all()
    finally:
        db.dispose()
    return np.array([float(r[0]) for r in rows])


# --- the run -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="moodwire process workers")
    parser.add_argument("--ingesters", type=int, default=1, help="ingest processes")
    parser.add_argument("--limit", type=int, default=0, help="cap the corpus (0: all)")
    parser.add_argument("--naive-seconds", type=float, default=15.0)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--latency-rate", type=float, default=1000.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the stack and its logs")
    args = parser.parse_args()

    # This run's own servers, whatever the environment points at.
    state_dir = use_private_stack("moodwire-bench-")
    settings = Settings()
    texts = real_texts(data.default_data_dir())
    if args.limit:
        texts = texts[: args.limit]
    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "ingesters": args.ingesters,
    }

    say(f"starting a private stack in {state_dir}")
    servers = manager.up(settings)
    settings = Settings()  # now with the stack's URLs
    version = serving_model_version(settings.model_path)
    if version is None:
        sys.exit(f"no model at {settings.model_path}")
    pipeline = LocalPipeline(settings, state_dir / "logs" / "bench")
    try:
        # Each ingest process gets every K-th tweet (K = --ingesters).
        corpora = [state_dir / f"corpus-{k}.jsonl" for k in range(args.ingesters)]
        n = sum(
            write_corpus(path, texts[k :: args.ingesters], f"t{k}-")
            for k, path in enumerate(corpora)
        )
        warm = state_dir / "warmup.jsonl"
        n_warm = write_corpus(warm, texts[:2000], "warm")

        # 1. throughput -----------------------------------------------------------------
        for i in range(args.workers):
            pipeline.start_worker(f"worker-{i + 1}")
        say(f"warming up {args.workers} worker(s) with {n_warm:,} posts")
        pipeline.start_ingest(f"file://{warm}", "--quiet", name="ingest-warmup")
        wait_until_counted(settings, n_warm, 180, pipeline)
        say(
            f"throughput: {args.ingesters} ingest process(es) send {n:,} real tweets while "
            "the worker(s) score them"
        )
        started = time.monotonic()
        ingests = [
            pipeline.start_ingest(f"file://{path}", "--quiet", name=f"ingest-{k + 1}")
            for k, path in enumerate(corpora)
        ]
        pids = {s.name: s.pid for s in servers}
        pids.update({c.name: c.process.pid for c in pipeline.children})
        pids.pop("ingest-warmup", None)
        cpu_before = cpu_seconds(pids)
        reaped_before = _children_cpu()
        machine_before = psutil.cpu_times()
        finished = wait_until_counted(settings, n_warm + n, 900, pipeline)
        cpu_after = cpu_seconds(pids)
        machine_after = psutil.cpu_times()
        for ingest in ingests:
            ingest.process.wait(60)
        # The ingest children have exited (and been reaped): their CPU is in our rusage.
        for name in [k for k in cpu_after if k.startswith("ingest-")]:
            del cpu_after[name]
        cpu_after["ingest"] = _children_cpu() - reaped_before
        seconds = finished - started
        busy = (machine_after.user + machine_after.system) - (
            machine_before.user + machine_before.system
        )
        results["cpu_seconds_per_10k"] = {
            name: round((cpu_after[name] - cpu_before.get(name, 0.0)) * 10_000 / n, 2)
            for name in cpu_after
        }
        results["machine_busy_cores"] = round(busy / seconds, 2)
        ingest_seconds: float | None = None
        for child in ingests:
            found = re.search(r"records in ([\d.]+) s", child.log.read_text())
            if found:
                ingest_seconds = max(ingest_seconds or 0.0, float(found.group(1)))
        figures = collect(settings)
        results["throughput"] = {
            "posts": n,
            "seconds": round(seconds, 2),
            "posts_per_s": round(n / seconds, 1),
            "rows": figures["scored"],
            "aggregate_total": figures["aggregate_total"],
            "ingest_exits": [i.process.returncode for i in ingests],
            "ingest_seconds": ingest_seconds,
        }
        exact = figures["scored"] == figures["aggregate_total"] == figures["posts"] == n + n_warm

        # 2. latency at an offered rate ---------------------------------------------------
        count = int(args.latency_rate * args.latency_seconds)
        lat_texts = [t for _, t in texts[-count:] if t.strip()]
        say(f"latency: {len(lat_texts):,} posts offered at {args.latency_rate:,.0f}/s")
        feed = PacedTweets(lat_texts, args.latency_rate, "lat")
        stats = Ingest(settings).run(feed)
        sent_rate = stats.sent / stats.elapsed
        wait_until_counted(settings, n_warm + n + stats.sent, 120, pipeline)
        lat = latencies(settings, version)
        results["latency"] = {
            "offered_per_s": args.latency_rate,
            "achieved_send_per_s": round(sent_rate, 1),
            "posts": int(lat.size),
            "p50_s": round(float(np.percentile(lat, 50)), 3),
            "p99_s": round(float(np.percentile(lat, 99)), 3),
            "max_s": round(float(lat.max()), 3),
        }
        pipeline.stop()

        # 3. naive baseline ----------------------------------------------------------------
        say(f"naive baseline: one post at a time for {args.naive_seconds:.0f} s")
        naive_db = create_database(settings.require("database_url"), "moodwire_bench_naive")
        naive_redis = settings.require("redis_url").rsplit("/", 1)[0] + "/1"
        done, took = naive_baseline(settings, naive_db, naive_redis, args.naive_seconds)
        results["naive"] = {
            "posts": done,
            "seconds": round(took, 2),
            "posts_per_s": round(done / took, 1),
        }
        results["ratio"] = round(
            results["throughput"]["posts_per_s"] / results["naive"]["posts_per_s"], 1
        )
        results["exact"] = exact
    finally:
        pipeline.stop()
        if not args.keep:
            manager.down(settings)
            shutil.rmtree(state_dir, ignore_errors=True)
        else:
            say(f"stack kept: MOODWIRE_STATE_DIR={state_dir} moodwire stack down")

    report(results)
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


def report(r: dict[str, Any]) -> None:
    t, lat, naive = r["throughput"], r["latency"], r["naive"]
    print(
        f"moodwire pipeline benchmark (one run; {r['cpus']} CPUs; {r['workers']} worker(s), "
        f"{r['ingesters']} ingest process(es))"
    )
    print(
        f"  end to end  {t['posts']:>8,} real tweets in {t['seconds']:6.1f} s = "
        f"{t['posts_per_s']:>8,.0f} posts/s  (ingest -> Postgres rows + Redis aggregates)"
    )
    if t["ingest_seconds"]:
        print(
            f"  of which   ingest took {t['ingest_seconds']:.1f} s "
            f"({t['posts'] / t['ingest_seconds']:,.0f} posts/s into the raw topic)"
        )
    print(
        f"  naive       {naive['posts']:>8,} posts       in {naive['seconds']:6.1f} s = "
        f"{naive['posts_per_s']:>8,.0f} posts/s  (one post at a time, one INSERT per row)"
    )
    print(f"  ratio       {r['ratio']:.1f}x  (moodwire / naive)")
    cpu = "  ".join(f"{k} {v:.2f}" for k, v in r["cpu_seconds_per_10k"].items())
    print(f"  CPU-s/10k   {cpu}  (machine busy: {r['machine_busy_cores']:.2f} cores)")
    print(
        f"  latency     at {lat['offered_per_s']:,.0f} posts/s offered "
        f"({lat['achieved_send_per_s']:,.0f} sent/s, {lat['posts']:,} posts): "
        f"p50 {lat['p50_s']:.3f} s  p99 {lat['p99_s']:.3f} s  max {lat['max_s']:.3f} s"
    )
    print(
        f"  exact       rows = aggregate_total = posts sent: {'yes' if r['exact'] else 'NO'} "
        f"({t['rows']:,} rows, {t['aggregate_total']:,} aggregated, incl. warm-up)"
    )


if __name__ == "__main__":
    main()
