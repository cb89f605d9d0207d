"""The peer: an idiomatic Quix Streams 3.28 app doing moodwire's job, for bench/peers.py.

Read JSON posts from the raw-posts topic, score each, upsert it into PostgreSQL, add it
to per-brand-per-minute counts in Redis, commit every second. Written the way the Quix
docs show it: a ``StreamingDataFrame`` with ``apply`` steps and custom ``BatchingSink``s
(Quix flushes every sink at each checkpoint, before it commits the offsets: at-least-once,
like moodwire).

- ``--scorer vader``: VADER (compound +-0.05) in a per-message ``apply``, the way a Quix
  user adds a Python scorer.
- ``--scorer moodwire``: moodwire's own inference engine. One call per message costs
  about 0.4 ms (the engine is built for batches), so this variant scores in the sink, one
  engine call per partition batch at each checkpoint: the fairest use of the engine Quix
  allows, and what "framework against framework" compares.
- ``--scorer none``: no scoring (label neutral), the framework's own cost.

It runs in its own virtualenv (``.venv-quix``; see bench/peers.py): quixstreams pins
pydantic < 2.14, which moodwire's runtime cannot use. The engine and the brand matcher
come from moodwire's venv, added to ``sys.path`` by that venv's ``.pth`` file.

    .venv-quix/bin/python bench/quix_app.py --broker HOST:PORT --topic T --group G \
        --dsn postgresql://... --redis redis://... --scorer vader
"""

from __future__ import annotations

import argparse
import logging
from datetime import datetime
from typing import Any

import psycopg2
import redis
from psycopg2.extras import execute_values
from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBatch

LABELS = ("neg", "neu", "pos")

DDL = """
CREATE TABLE IF NOT EXISTS quix_posts (
    source text NOT NULL,
    source_id text NOT NULL,
    text text NOT NULL,
    created_at timestamptz NOT NULL,
    brands text[] NOT NULL,
    label smallint NOT NULL,
    score real NOT NULL,
    PRIMARY KEY (source, source_id)
)
"""
UPSERT = (
    "INSERT INTO quix_posts (source, source_id, text, created_at, brands, label, score) "
    "VALUES %s ON CONFLICT (source, source_id) DO UPDATE SET "
    "label = EXCLUDED.label, score = EXCLUDED.score, brands = EXCLUDED.brands"
)


def minute_of(created_at: str) -> int:
    return int(datetime.fromisoformat(created_at).timestamp()) // 60 * 60


class BatchScorer:
    """moodwire's engine, one call per batch."""

    def __init__(self) -> None:
        from moodwire.model.engine import InferenceEngine

        self.engine = InferenceEngine.load(None, device="cpu", threads=1)

    def __call__(self, texts: list[str]) -> list[tuple[int, float]]:
        probs = self.engine.predict(texts)
        return [(int(p.argmax()), float(p[2] - p[0])) for p in probs]


# quixstreams is installed in .venv-quix only, so in moodwire's venv mypy sees it as Any.
class PostsSink(BatchingSink):  # type: ignore[misc]
    """Upsert the batch into Postgres and count it in Redis (one pipeline), per checkpoint."""

    def __init__(self, dsn: str, redis_url: str, scorer: BatchScorer | None) -> None:
        super().__init__()
        self.dsn, self.redis_url, self.scorer = dsn, redis_url, scorer

    def setup(self) -> None:
        self.pg = psycopg2.connect(self.dsn)
        with self.pg, self.pg.cursor() as cur:
            cur.execute(DDL)
        self.redis = redis.Redis.from_url(self.redis_url)

    def write(self, batch: SinkBatch) -> None:
        values = [item.value for item in batch]
        if self.scorer is not None:
            for value, (label, score) in zip(
                values, self.scorer([v["text"] for v in values]), strict=True
            ):
                value["label"], value["score"] = label, score
        rows = [
            (
                v["source"],
                v["id"],
                v["text"],
                v["created_at"],
                v["brands"],
                v["label"],
                v["score"],
            )
            for v in values
        ]
        with self.pg, self.pg.cursor() as cur:
            execute_values(cur, UPSERT, rows, page_size=1000)
        pipe = self.redis.pipeline(transaction=False)
        for v in values:
            minute = minute_of(v["created_at"])
            for brand in (*(v["brands"] or ("(none)",)), "*"):
                key = f"quix:agg:{brand}:{minute}"
                pipe.hincrby(key, "n", 1)
                pipe.hincrby(key, LABELS[v["label"]], 1)
                pipe.hincrbyfloat(key, "score_sum", v["score"])
        pipe.execute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--session-timeout", type=float, default=45.0, help="seconds")
    parser.add_argument("--scorer", choices=("vader", "moodwire", "none"), default="vader")
    args = parser.parse_args()

    from moodwire.brands import BrandMatcher

    match = BrandMatcher.load().match
    batch_scorer = BatchScorer() if args.scorer == "moodwire" else None

    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        loglevel="WARNING",
        # The same session timeout as moodwire's workers in the comparison: on the local
        # broker a group join waits half of it.
        consumer_extra_config={"session.timeout.ms": int(args.session_timeout * 1000)},
    )
    topic = app.topic(args.topic, value_deserializer="json", key_deserializer="bytes")
    sdf = app.dataframe(topic)

    def tag(post: dict[str, Any]) -> dict[str, Any]:
        post["brands"] = list(match(post["text"]))
        return post

    sdf = sdf.apply(tag)
    if args.scorer == "vader":
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        polarity = SentimentIntensityAnalyzer().polarity_scores

        def score(post: dict[str, Any]) -> dict[str, Any]:
            c = polarity(post["text"])["compound"]
            post["label"] = 2 if c >= 0.05 else (0 if c <= -0.05 else 1)
            post["score"] = c
            return post

        sdf = sdf.apply(score)
    elif args.scorer == "none":

        def neutral(post: dict[str, Any]) -> dict[str, Any]:
            post["label"], post["score"] = 1, 0.0
            return post

        sdf = sdf.apply(neutral)
    sdf.sink(PostsSink(args.dsn, args.redis, batch_scorer))
    logging.getLogger("quixstreams").setLevel(logging.WARNING)
    app.run()


if __name__ == "__main__":
    main()
