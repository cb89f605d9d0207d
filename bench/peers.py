"""moodwire against what a user would pick instead: an idiomatic Quix Streams app.

In one invocation, on its own local stack (broker, PostgreSQL, Redis in a temporary state
dir, stopped at the end), the same N real tweets (sentiment140 + TweetEval, read in place
from ``../shared/data``) are pre-loaded once into the 4-partition raw-posts topic (gzip,
keyed by post, by ``moodwire ingest``), then drained by each system in turn, alternating,
each from launch with its own consumer group, a fresh database and an empty Redis db:

- ``quix-vader``: ``bench/quix_app.py``, Quix Streams 3.28, VADER per message;
- ``quix-moodwire``: the same app with moodwire's inference engine as its scorer;
- ``quix-none``: the same app with no scorer (``--systems`` only: the framework alone);
- ``moodwire-1`` / ``moodwire-2``: ``moodwire process`` with 1 and 2 workers, as shipped
  (it also writes every scored post to the scored-posts topic);
- ``moodwire-1-dbonly`` / ``moodwire-2-dbonly``: the same with
  ``MOODWIRE_PUBLISH_SCORED=false``, the Quix app's job exactly (Postgres and Redis only).

Every system reads JSON posts, tags brands, scores, upserts into Postgres, adds
per-brand-per-minute counts to Redis and commits about every second. Per run it prints
posts/s from launch and after the first row, launch to first row, CPU-s per 100k posts of
the app and of each server, and whether the rows and the per-brand-per-minute aggregates
equal what the corpus says; then the median per system and the ratios. Both kinds of
consumer get the same session timeout (the local broker makes a group join wait half of
it).

The Quix app needs its own venv (quixstreams pins pydantic < 2.14, which moodwire cannot
use); the first run creates ``.venv-quix`` from ``bench/requirements-quix.txt`` and lets it
import moodwire's engine from ``.venv``.

Usage: .venv/bin/python bench/peers.py [--posts 40000] [--rounds 2]
       [--systems quix-vader,quix-moodwire,moodwire-1,moodwire-2,moodwire-1-dbonly,...]
       [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psutil
import psycopg2
import redis
from sqlalchemy.engine import make_url

from moodwire.brands import BrandMatcher
from moodwire.db.migrate import upgrade
from moodwire.demo.local_pipeline import LocalPipeline, child_env
from moodwire.records import post_from_dict
from moodwire.settings import Settings
from moodwire.stack import manager
from moodwire.status import serving_model_version
from moodwire.training import data
from private_stack import use_private_stack

REPO = Path(__file__).resolve().parent.parent
QUIX_VENV = REPO / ".venv-quix"
QUIX_PYTHON = QUIX_VENV / "bin" / "python"
QUIX_APP = REPO / "bench" / "quix_app.py"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
SYSTEMS = (
    "quix-vader",
    "quix-moodwire",
    "moodwire-1",
    "moodwire-2",
    "moodwire-1-dbonly",
    "moodwire-2-dbonly",
)
REDIS_DB = 1


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- set-up --------------------------------------------------------------------------------


def ensure_quix_venv() -> None:
    """``.venv-quix``: quixstreams and its pins, plus a .pth that adds moodwire's venv
    after them (so its pydantic 2.13 wins, and torch, VADER, moodwire come from .venv)."""
    if QUIX_PYTHON.exists():
        return
    say(f"creating {QUIX_VENV} (quixstreams; once)")
    # CPython's interpreter outside any venv (not in typeshed, hence getattr).
    base_python = str(getattr(sys, "_base_executable", sys.executable))
    subprocess.run([base_python, "-m", "venv", str(QUIX_VENV)], check=True)
    subprocess.run(
        [
            str(QUIX_PYTHON),
            "-m",
            "pip",
            "install",
            "--quiet",
            "-r",
            str(REPO / "bench" / "requirements-quix.txt"),
        ],
        check=True,
    )
    ours = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    site = subprocess.run(
        [str(QUIX_PYTHON), "-c", "import site; print(site.getsitepackages()[0])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(site, "zz_moodwire_venv.pth").write_text(f"import site; site.addsitedir({ours!r})\n")


def real_posts(n: int) -> list[dict[str, Any]]:
    """The first ``n`` valid real tweets as English posts, 10 ms apart in event time."""
    data_dir = data.default_data_dir()
    if not (data_dir / "sentiment140").is_dir():
        sys.exit(f"real tweets not found in {data_dir}; set MOODWIRE_DATA_DIR")
    texts = [("sentiment140", t) for t in data.load_sentiment140(data_dir).texts]
    for split in ("train", "val", "test"):
        texts += [(f"tweeteval-{split}", t) for t in data.load_split(data_dir, split).texts]
    out: list[dict[str, Any]] = []
    for i, (source, body) in enumerate(texts):
        obj = {
            "id": f"p{i}",
            "source": source,
            "text": body,
            "created_at": (T0 + timedelta(milliseconds=10 * i)).isoformat(),
            # The datasets are English tweets and Twitter tags each tweet's language: every
            # system then scores every post (none runs a language identifier).
            "lang": "en",
        }
        try:
            post_from_dict(obj)
        except ValueError:
            continue
        out.append(obj)
        if len(out) == n:
            break
    if len(out) < n:
        sys.exit(f"only {len(out):,} usable tweets; ask for fewer posts")
    return out


def expected_counts(posts: list[dict[str, Any]], matcher: BrandMatcher) -> Counter[str]:
    """Posts per ``brand:minute`` (with ``*`` and ``(none)``), what every system must count."""
    want: Counter[str] = Counter()
    for p in posts:
        minute = int(datetime.fromisoformat(p["created_at"]).timestamp()) // 60 * 60
        for brand in (*(matcher.match(p["text"]) or ("(none)",)), "*"):
            want[f"{brand}:{minute}"] += 1
    return want


def fresh_database(url: str, name: str) -> str:
    """A new empty database beside ``url``'s, migrated; returns its SQLAlchemy URL."""
    parsed = make_url(url)
    conn = psycopg2.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname="postgres",
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    new_url = parsed.set(database=name).render_as_string(hide_password=False)
    upgrade(new_url)
    return new_url


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://")


# --- measuring -----------------------------------------------------------------------------


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its children, 0 when it is gone."""
    try:
        proc = psutil.Process(pid)
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
        return total
    except psutil.Error:
        return 0.0


@dataclass
class Run:
    system: str
    round: int
    posts: int
    first_row_s: float = 0.0
    done_s: float = 0.0
    rows_at_first: int = 0
    app_cpu: float = 0.0
    server_cpu: dict[str, float] = field(default_factory=dict)
    rows_exact: bool = False
    aggregates_exact: bool = False
    detail: str = ""

    @property
    def rate_from_launch(self) -> float:
        return self.posts / self.done_s

    @property
    def rate_after_first(self) -> float:
        return (self.posts - self.rows_at_first) / max(1e-9, self.done_s - self.first_row_s)

    def per_100k(self, cpu: float) -> float:
        return cpu * 100_000 / self.posts


class Target:
    """Where one run's system writes: how to count its rows and its aggregates."""

    def __init__(self, dsn: str, redis_url: str, kind: str, version: str) -> None:
        self.pg = psycopg2.connect(libpq(dsn))
        self.pg.autocommit = True
        self.redis = redis.Redis.from_url(redis_url)
        self.kind, self.version = kind, version

    def close(self) -> None:
        self.pg.close()
        self.redis.close()

    def _scalar(self, sql: str) -> int:
        try:
            with self.pg.cursor() as cur:
                cur.execute(sql)
                row = cur.fetchone()
                return int(row[0]) if row else 0
        except psycopg2.errors.UndefinedTable:  # the Quix app creates its table at start
            return 0

    def any_row(self) -> bool:
        table = "quix_posts" if self.kind == "quix" else "scores"
        return self._scalar(f"SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT 1) x") > 0

    def rows(self) -> int:
        table = "quix_posts" if self.kind == "quix" else "scores"
        return self._scalar(f"SELECT count(*) FROM {table}")

    def distinct_rows(self) -> tuple[int, int]:
        if self.kind == "quix":
            n = self._scalar("SELECT count(DISTINCT (source, source_id)) FROM quix_posts")
            return n, n
        return (
            self._scalar("SELECT count(DISTINCT (source, source_id)) FROM posts"),
            self._scalar("SELECT count(DISTINCT (source, source_id)) FROM scores"),
        )

    def aggregated(self) -> int:
        """Posts counted so far (the ``*`` brand)."""
        if self.kind == "quix":
            return sum(int(v) for v in self._buckets("quix:agg:\\*:*").values())
        return int(self.redis.hget(f"mw:totals:{self.version}:*", "n") or 0)

    def _buckets(self, pattern: str) -> dict[str, int]:
        keys = list(self.redis.scan_iter(match=pattern, count=1000))
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.hget(key, "n")
        return {k.decode(): int(v or 0) for k, v in zip(keys, pipe.execute(), strict=True)}

    def counts(self) -> Counter[str]:
        """``brand:minute`` -> posts counted (moodwire's buckets summed over sources)."""
        got: Counter[str] = Counter()
        if self.kind == "quix":
            for key, n in self._buckets("quix:agg:*").items():
                got[key.removeprefix("quix:agg:")] += n
        else:
            for key, n in self._buckets(f"mw:agg:{self.version}:*").items():
                rest = key.removeprefix(f"mw:agg:{self.version}:")
                brand, _source, minute = rest.rsplit(":", 2)
                got[f"{brand}:{minute}"] += n
        return got


def run_once(
    system: str,
    k: int,
    round_no: int,
    posts: int,
    want: Counter[str],
    settings: Settings,
    servers: dict[str, int],
    version: str,
    log_dir: Path,
    timeout: float,
) -> Run:
    dsn = fresh_database(settings.require("database_url"), f"peers_{k}")
    redis_url = settings.require("redis_url").rsplit("/", 1)[0] + f"/{REDIS_DB}"
    flush = redis.Redis.from_url(redis_url)
    flush.flushdb()
    flush.close()
    group = f"peers-{k}-{system}"
    kind = "quix" if system.startswith("quix") else "moodwire"
    target = Target(dsn, redis_url, kind, version)
    run = Run(system, round_no, posts)
    pipeline: LocalPipeline | None = None
    quix: subprocess.Popen[bytes] | None = None
    server_before = {name: tree_cpu(pid) for name, pid in servers.items()}
    launched = time.monotonic()
    try:
        if kind == "quix":
            log = (log_dir / f"{k}-{system}.log").open("wb")
            quix = subprocess.Popen(
                [
                    str(QUIX_PYTHON),
                    "-W",
                    "ignore",
                    str(QUIX_APP),
                    "--broker",
                    ",".join(settings.bootstrap_servers),
                    "--topic",
                    settings.topic_raw,
                    "--group",
                    group,
                    "--dsn",
                    libpq(dsn),
                    "--redis",
                    redis_url,
                    "--session-timeout",
                    str(settings.session_timeout),
                    "--scorer",
                    system.removeprefix("quix-"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env(settings),
            )
            pids = [quix.pid]
        else:
            pipeline = LocalPipeline(
                settings,
                log_dir / f"{k}-{system}",
                env={
                    "MOODWIRE_DATABASE_URL": dsn,
                    "MOODWIRE_REDIS_URL": redis_url,
                    "MOODWIRE_CONSUMER_GROUP": group,
                    "MOODWIRE_PUBLISH_SCORED": str(not system.endswith("-dbonly")).lower(),
                },
            )
            workers = int(system.split("-")[1])
            pids = [pipeline.start_worker(f"worker-{i + 1}").process.pid for i in range(workers)]
        deadline = launched + timeout

        def alive() -> None:
            if quix is not None and quix.poll() is not None:
                sys.exit(f"{system} exited with {quix.returncode}; see {log_dir}")
            if pipeline is not None and pipeline.exited():
                sys.exit(pipeline.exited()[0].describe_exit())
            if time.monotonic() > deadline:
                sys.exit(f"{system} did not finish {posts:,} posts in {timeout:.0f} s")

        while not target.any_row():
            alive()
            time.sleep(0.02)
        run.first_row_s = time.monotonic() - launched
        run.rows_at_first = target.rows()
        while True:
            rows = target.rows()
            if rows >= posts and target.aggregated() >= posts:
                break
            alive()
            time.sleep(0.1)  # each poll costs Postgres CPU that the system would use
        run.done_s = time.monotonic() - launched
        run.app_cpu = sum(tree_cpu(pid) for pid in pids)
        run.server_cpu = {
            name: tree_cpu(pid) - server_before[name] for name, pid in servers.items()
        }
        time.sleep(1.5)  # anything written twice would show now
        posts_rows, score_rows = target.distinct_rows()
        total = target.rows()
        run.rows_exact = posts_rows == score_rows == total == posts
        got = target.counts()
        run.aggregates_exact = got == want
        if not run.aggregates_exact:
            diff = {k: (got.get(k, 0), want.get(k, 0)) for k in set(got) | set(want)}
            bad = {k: v for k, v in diff.items() if v[0] != v[1]}
            run.detail = f"{len(bad)} buckets differ, e.g. {list(bad.items())[:3]}"
        if not run.rows_exact:
            run.detail += f" rows {total} (distinct {posts_rows}/{score_rows}) of {posts}"
    finally:
        if quix is not None:
            quix.send_signal(signal.SIGTERM)
            try:
                quix.wait(20)
            except subprocess.TimeoutExpired:
                quix.kill()
                quix.wait(5)
        if pipeline is not None:
            pipeline.stop()
        target.close()
    return run


# --- the run -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=40_000, help="real tweets per run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each system")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument(
        "--session-timeout",
        type=float,
        default=None,
        help="consumer session timeout of every system (default: moodwire's)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="most seconds per run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the stack and its logs")
    args = parser.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for s in systems:
        if s not in (*SYSTEMS, "quix-none"):
            sys.exit(f"unknown system {s!r}")
    if any(s.startswith("quix") for s in systems):
        ensure_quix_venv()

    state_dir = use_private_stack("moodwire-peers-")
    if args.session_timeout is not None:
        os.environ["MOODWIRE_SESSION_TIMEOUT"] = str(args.session_timeout)
    else:
        os.environ.pop("MOODWIRE_SESSION_TIMEOUT", None)  # moodwire's default, for both
    os.environ["MOODWIRE_INGEST_COMPRESSION"] = "gzip"
    settings = Settings()
    say(f"starting a private stack in {state_dir}")
    started = manager.up(settings)
    settings = Settings()
    version = serving_model_version(settings.model_path)
    if version is None:
        sys.exit(f"no model at {settings.model_path}")
    servers = {s.name: s.pid for s in started}
    log_dir = state_dir / "logs" / "peers"
    log_dir.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    try:
        posts = real_posts(args.posts)
        corpus = state_dir / "corpus.jsonl"
        corpus.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in posts))
        want = expected_counts(posts, BrandMatcher.from_settings(settings))
        say(f"pre-loading {len(posts):,} real tweets into {settings.topic_raw} (gzip)")
        loader = LocalPipeline(settings, log_dir)
        ingest = loader.start_ingest(f"file://{corpus}", "--quiet", name="preload")
        if ingest.process.wait(600) != 0:
            sys.exit(ingest.describe_exit())
        k = 0
        for round_no in range(1, args.rounds + 1):
            order = systems if round_no % 2 else systems[::-1]
            for system in order:
                k += 1
                say(f"round {round_no}: {system}")
                run = run_once(
                    system,
                    k,
                    round_no,
                    len(posts),
                    want,
                    settings,
                    servers,
                    version,
                    log_dir,
                    args.timeout,
                )
                runs.append(run)
                say(
                    f"  {run.rate_from_launch:,.0f} posts/s from launch, first row "
                    f"{run.first_row_s:.1f} s, app {run.per_100k(run.app_cpu):.1f} CPU-s/100k, "
                    f"exact {run.rows_exact and run.aggregates_exact} {run.detail}"
                )
    finally:
        if not args.keep:
            manager.down(settings)
            shutil.rmtree(state_dir, ignore_errors=True)
        else:
            say(f"stack kept: MOODWIRE_STATE_DIR={state_dir} moodwire stack down")
    results = report(runs, systems, settings.session_timeout)
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


def report(runs: list[Run], systems: list[str], session_timeout: float) -> dict[str, Any]:
    n = runs[0].posts
    print(
        f"peers benchmark: {n:,} real tweets per run, {os.cpu_count()} CPUs, session timeout "
        f"{session_timeout:g} s for every consumer, runs alternating"
    )
    print(
        f"  {'system':<18} {'rnd':>3} {'posts/s launch':>14} {'after 1st row':>13} "
        f"{'1st row s':>9} {'app CPU-s/100k':>14} {'servers CPU-s/100k':>30}  exact"
    )
    for r in runs:
        srv = " ".join(f"{k[:5]} {r.per_100k(v):4.1f}" for k, v in r.server_cpu.items())
        print(
            f"  {r.system:<18} {r.round:>3} {r.rate_from_launch:>14,.0f} "
            f"{r.rate_after_first:>13,.0f} {r.first_row_s:>9.2f} "
            f"{r.per_100k(r.app_cpu):>14.1f} {srv:>30}  "
            f"{'yes' if r.rows_exact and r.aggregates_exact else 'NO ' + r.detail}"
        )
    med: dict[str, dict[str, float]] = {}
    for s in systems:
        mine = [r for r in runs if r.system == s]
        med[s] = {
            "posts_per_s": statistics.median(r.rate_from_launch for r in mine),
            "posts_per_s_after_first_row": statistics.median(r.rate_after_first for r in mine),
            "first_row_s": statistics.median(r.first_row_s for r in mine),
            "app_cpu_per_100k": statistics.median(r.per_100k(r.app_cpu) for r in mine),
            "servers_cpu_per_100k": statistics.median(
                r.per_100k(sum(r.server_cpu.values())) for r in mine
            ),
        }
    print("  median per system:")
    for s, m in med.items():
        print(
            f"    {s:<18} {m['posts_per_s']:>8,.0f} posts/s from launch, "
            f"{m['posts_per_s_after_first_row']:>8,.0f} after the first row, first row "
            f"{m['first_row_s']:.2f} s, app {m['app_cpu_per_100k']:.1f} CPU-s/100k, servers "
            f"{m['servers_cpu_per_100k']:.1f}"
        )
    ratios: dict[str, float] = {}
    for mw in (s for s in systems if s.startswith("moodwire")):
        for peer in (s for s in systems if s.startswith("quix")):
            rate = med[mw]["posts_per_s"] / med[peer]["posts_per_s"]
            cpu = med[mw]["app_cpu_per_100k"] / med[peer]["app_cpu_per_100k"]
            ratios[f"{mw}/{peer}"] = round(rate, 2)
            ratios[f"{mw}/{peer} cpu"] = round(cpu, 2)
            print(f"  {mw} / {peer}: {rate:.2f}x posts/s from launch, {cpu:.2f}x app CPU per post")
    exact = all(r.rows_exact and r.aggregates_exact for r in runs)
    print(f"  rows and aggregates exact in every run: {'yes' if exact else 'NO'}")
    return {
        "posts": n,
        "session_timeout": session_timeout,
        "runs": [
            {**asdict(r), "posts_per_s": r.rate_from_launch, "after_first": r.rate_after_first}
            for r in runs
        ],
        "median": med,
        "ratios": ratios,
        "exact": exact,
    }


if __name__ == "__main__":
    main()
