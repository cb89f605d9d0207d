"""Streaming connectors at full speed: posts/s into Kafka and CPU per post.

On a private local stack (broker and PostgreSQL for the cursors, started by
``moodwire.stack``), each streaming connector runs as a real ``moodwire ingest`` process
against its local replay server from ``moodwire.connectors.kit`` (in this process, so its
CPU is not counted) until N posts are in Kafka. It prints, per connector: posts/s from
launch to exit (start-up included) and after the first post, ingest CPU-ms per 1,000 posts,
and beside it the rate the real service emits, as the headroom ratio.

    .venv/bin/python bench/connectors.py [--posts 20000] [--only bluesky,mastodon,webhook]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from kafka import KafkaConsumer, TopicPartition

from moodwire.settings import Settings
from moodwire.stack import manager
from moodwire.stack.ports import free_port
from private_stack import use_private_stack

MOODWIRE = Path(sys.executable).with_name("moodwire")
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TEXTS = [
    "the new acme phone is wonderful, best camera I have had",
    "globex support left me on hold for an hour, never again",
    "is anyone else seeing the initech outage this morning?",
    "loving the sunny weather and a good coffee",
]


@dataclass
class Result:
    name: str
    posts: int
    wall_s: float
    loop_s: float
    cpu_s: float
    real_rate: float  # posts (or events) per second the real service emits
    real_what: str

    @property
    def rate(self) -> float:
        return self.posts / self.wall_s

    @property
    def steady_rate(self) -> float:
        return self.posts / max(1e-9, self.loop_s)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _raw_count(settings: Settings) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False)
    try:
        parts = [TopicPartition(settings.topic_raw, p) for p in range(settings.partitions)]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        total = 0
        while True:
            batch = consumer.poll(timeout_ms=300, max_records=100_000)
            if not batch:
                return total
            total += sum(len(v) for v in batch.values())
    finally:
        consumer.close()


def run_ingest(
    settings: Settings, url: str, posts: int, env: dict[str, str], feed: Callable[[], None] | None
) -> tuple[float, float, float]:
    """(wall seconds from launch, seconds of the read loop itself, ingest CPU seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(MOODWIRE), "ingest", url, "--limit", str(posts), "--quiet", "--name", url],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if feed is not None:
        threading.Thread(target=feed, daemon=True).start()
    out, err = proc.communicate(timeout=600)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"ingest {url} failed: {err.decode()[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # The summary line: "... N records in S s (R/s)": the read loop, start-up excluded.
    found = re.search(rb"records in ([0-9.]+) s", out)
    loop_s = float(found.group(1)) if found else wall
    sent = _raw_count(settings)
    if sent < posts:
        sys.exit(f"{url}: only {sent} of {posts} posts reached Kafka")
    return wall, loop_s, cpu


def _post(i: int, source: str) -> dict[str, Any]:
    return {
        "id": f"w{i}",
        "source": source,
        "text": TEXTS[i % len(TEXTS)] + f" #{i}",
        "created_at": (T0 + timedelta(milliseconds=i)).isoformat(),
    }


# --- one function per connector: a server, the URL, what feeds it ------------------------


@contextmanager
def webhook(posts: int) -> Iterator[tuple[str, dict[str, str], Callable[[], None]]]:
    port = free_port()
    url = f"webhook://127.0.0.1:{port}?insecure=1"
    lines = [orjson.dumps(_post(i, "webhook")) for i in range(posts)]

    def feed() -> None:
        # Senders batch: 500 posts a request, 4 requests in flight, as a busy desk would.
        bodies = [b"\n".join(lines[k : k + 500]) for k in range(0, len(lines), 500)]
        with httpx.Client(timeout=60) as client:
            while True:
                try:
                    client.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.05)

        def send(chunk: list[bytes]) -> None:
            with httpx.Client(timeout=60) as client:
                for body in chunk:
                    client.post(
                        f"http://127.0.0.1:{port}/",
                        content=body,
                        headers={"Content-Type": "application/x-ndjson"},
                    )

        threads = [threading.Thread(target=send, args=(bodies[k::4],)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    yield url, {}, feed


@contextmanager
def bluesky(posts: int) -> Iterator[tuple[str, dict[str, str], Callable[[], None] | None]]:
    from moodwire.connectors.kit.jetstream_server import JetstreamServer

    start_us = int(T0.timestamp() * 1e6)
    events = [
        {
            "did": f"did:plc:user{i % 997:04d}",
            "time_us": start_us + i * 300,
            "kind": "commit",
            "commit": {
                "rev": f"3k{i:08d}",
                "operation": "create",
                "collection": "app.bsky.feed.post",
                "rkey": f"3kpost{i:08d}",
                "record": {
                    "$type": "app.bsky.feed.post",
                    "createdAt": (T0 + timedelta(microseconds=i * 300)).isoformat(),
                    "langs": ["en"],
                    "text": TEXTS[i % len(TEXTS)] + f" #{i}",
                },
                "cid": f"bafy{i}",
            },
        }
        for i in range(posts)
    ]
    with JetstreamServer(events) as server:
        yield f"bluesky://{server.address}?tls=0", {}, None


@contextmanager
def mastodon(posts: int) -> Iterator[tuple[str, dict[str, str], Callable[[], None] | None]]:
    from moodwire.connectors.kit.mastodon_server import MastodonServer, make_status

    statuses = [
        make_status(
            f"<p>{TEXTS[i % len(TEXTS)]} <a href='https://x.example/tags/n{i}'>#{i}</a></p>",
            acct=f"user{i % 997}@remote.example",
            created_at=(T0 + timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z"),
        )
        for i in range(posts)
    ]
    with MastodonServer() as server:

        def feed() -> None:
            # The stream carries only what is posted while it is open, as Mastodon's does.
            while server.live_streams == 0:
                time.sleep(0.02)
            for status in statuses:
                server.publish(status)

        yield (
            f"mastodon://{server.address}/public?tls=0",
            {"MOODWIRE_MASTODON_TOKEN": server.token},
            feed,
        )


CONNECTORS: dict[str, tuple[Callable[..., Any], float, str]] = {
    "bluesky": (bluesky, 3000.0, "events/s of Jetstream's whole firehose"),
    # name: (setup, the real service's rate, what that rate counts)
    "mastodon": (mastodon, 50.0, "statuses/s of a big instance's federated timeline (estimate)"),
    "webhook": (webhook, 50.0, "posts/s a busy support desk pushes"),
}


def language_cost(n: int = 20_000) -> float:
    """CPU microseconds a post without a language tag costs ingest to identify it."""
    from moodwire.language import LanguageIdentifier
    from moodwire.records import Post

    ident = LanguageIdentifier()
    ident.identify("warm up the model")
    posts = [
        Post(id=str(i), source="b", text=TEXTS[i % len(TEXTS)] + f" #{i}", created_at=T0)
        for i in range(n)
    ]
    started = time.process_time()
    for post in posts:
        ident.assign(post)
    return (time.process_time() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--only", default="", help="comma-separated connector names")
    args = parser.parse_args()
    chosen = [n for n in CONNECTORS if not args.only or n in args.only.split(",")]
    state_dir = use_private_stack("moodwire-bench-connectors-")
    settings = Settings()
    say(f"starting a private stack in {state_dir}")
    manager.up(settings)
    results: list[Result] = []
    try:
        for name in chosen:
            setup, real_rate, real_what = CONNECTORS[name]
            settings = Settings(topic_raw=f"bench.{name}.{os.urandom(3).hex()}")
            env = {"MOODWIRE_TOPIC_RAW": settings.topic_raw}
            with setup(args.posts) as (url, extra_env, feed):
                say(f"{name}: {args.posts:,} posts from {url}")
                wall, loop_s, cpu = run_ingest(
                    settings, url, args.posts, {**env, **extra_env}, feed
                )
            results.append(Result(name, args.posts, wall, loop_s, cpu, real_rate, real_what))
    finally:
        manager.down(Settings())
    print(
        f"{'connector':<10} {'posts/s':>9} {'in loop':>10} {'CPU-ms/1k':>10} "
        f"{'real rate':>10}  headroom"
    )
    for r in results:
        print(
            f"{r.name:<10} {r.rate:>9,.0f} {r.steady_rate:>10,.0f} "
            f"{1e6 * r.cpu_s / r.posts:>10,.0f} {r.real_rate:>10,.0f}  "
            f"{r.steady_rate / r.real_rate:,.1f}x the {r.real_what}"
        )
    print(
        f"language identification (posts without a tag: webhook here, not bluesky or "
        f"mastodon, whose posts carry one): {language_cost():.1f} CPU-us a post"
    )


if __name__ == "__main__":
    main()
