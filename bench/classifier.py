"""Classifier benchmark: moodwire's engine vs VADER, side by side, in one run.

On the 12,284 TweetEval test texts it prints posts/s of the engine (CPU, 2 threads,
tokenizing included) and of VADER (``vadersentiment``, compound +-0.05), their ratio,
each one's macro-recall, and the engine's peak RSS. Runs alternate (engine, VADER, engine,
...) so both see the same machine load; the median run counts.

``--classify N`` also pipes N sentiment140 posts through ``moodwire classify`` in a child
process and prints that process's peak RSS.

``--whole N`` compares whole processes on the same JSON Lines file of N real tweets
(sentiment140 + TweetEval, cycled to N; 393,216 by default with ``--whole 0``): ``moodwire
classify -i in -o out`` against a VADER script doing the same job (read each line, score
it, write it back with its sentiment), each a child process timed from launch to exit
(start-up and model load included), alternating, ``--repeats`` times; the median counts.

Usage: .venv/bin/python bench/classifier.py [--repeats 5] [--classify 100000] [--whole 0]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from moodwire.model.engine import InferenceEngine
from moodwire.training import data, metrics


def _mib(kib: int) -> float:
    return kib / 1024  # ru_maxrss is in KiB on Linux


def vader_labels(analyzer: object, texts: list[str]) -> np.ndarray:
    polarity = analyzer.polarity_scores  # type: ignore[attr-defined]
    out = np.ones(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        c = polarity(text)["compound"]
        out[i] = 2 if c >= 0.05 else (0 if c <= -0.05 else 1)
    return out


def classify_rss(n: int, data_dir: Path, model: str | None) -> None:
    s140 = data.load_sentiment140(data_dir)
    texts = (s140.texts * (n // len(s140.texts) + 1))[:n]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        with src.open("wb") as f:
            for i, t in enumerate(texts):
                f.write(orjson.dumps({"id": i, "text": t}) + b"\n")
        cmd = [
            sys.executable,
            "-c",
            "from moodwire.cli.app import main; main()",
            "classify",
            "-i",
            str(src),
            "-o",
            str(dst),
        ]
        cmd += ["--model", model] if model else []
        env = {**os.environ, "MOODWIRE_THREADS": "2"}
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        rss = _mib(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        with dst.open("rb") as f:
            lines = sum(1 for _ in f)
    print(
        f"moodwire classify, {n} posts: {seconds:.1f} s ({n / seconds:,.0f} posts/s end to end), "
        f"{lines} lines out, peak RSS {rss:,.0f} MiB"
    )


# The peer of ``moodwire classify``: what a user would write with VADER for the same job.
VADER_CLASSIFY = """
import sys, orjson
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
polarity = SentimentIntensityAnalyzer().polarity_scores
with open(sys.argv[1], "rb") as src, open(sys.argv[2], "wb") as dst:
    for line in src:
        post = orjson.loads(line)
        s = polarity(post["text"])
        c = s["compound"]
        post["sentiment"] = "positive" if c >= 0.05 else ("negative" if c <= -0.05 else "neutral")
        post["score"] = c
        post["probs"] = [s["neg"], s["neu"], s["pos"]]
        dst.write(orjson.dumps(post) + b"\\n")
"""


def whole_processes(n: int, data_dir: Path, model: str | None, repeats: int) -> None:
    texts = data.load_sentiment140(data_dir).texts
    for split in ("train", "val", "test"):
        texts += data.load_split(data_dir, split).texts
    texts = [t for t in texts if t.strip()]
    n = n or 393_216
    texts = (texts * (n // len(texts) + 1))[:n]
    cli = [sys.executable, "-c", "from moodwire.cli.app import main; main()", "classify"]
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        with src.open("wb") as f:
            for i, t in enumerate(texts):
                f.write(orjson.dumps({"id": i, "text": t}) + b"\n")
        commands = {
            "moodwire classify": [*cli, "-i", str(src), "-o", str(dst)]
            + (["--model", model] if model else []),
            "VADER script": [sys.executable, "-c", VADER_CLASSIFY, str(src), str(dst)],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(repeats):
            for name, cmd in commands.items():
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                subprocess.run(cmd, check=True, stderr=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - start)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append(
                    after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
                )
                with dst.open("rb") as f:
                    lines = sum(1 for _ in f)
                if lines != n:
                    sys.exit(f"{name} wrote {lines} lines for {n} posts")
    rates = {name: n / statistics.median(t) for name, t in times.items()}
    print(
        f"Whole processes on {n:,} real tweets (JSON Lines in and out, start-up included), "
        f"{repeats} alternating runs, median:"
    )
    for name, rate in rates.items():
        print(
            f"  {name}: {rate:,.0f} posts/s ({statistics.median(times[name]):.1f} s, "
            f"{statistics.median(cpu[name]):.1f} CPU-s)"
        )
    print(
        "  whole-process ratio moodwire / VADER: "
        f"{rates['moodwire classify'] / rates['VADER script']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=data.default_data_dir())
    parser.add_argument("--model", default=None, help="model dir (default: shipped model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--classify", type=int, default=0, metavar="N")
    parser.add_argument(
        "--whole", type=int, default=None, metavar="N", help="only the whole-process comparison"
    )
    args = parser.parse_args()
    if args.whole is not None:
        whole_processes(args.whole, args.data, args.model, args.repeats)
        return

    test = data.load_split(args.data, "test")
    texts, labels = test.texts, np.asarray(test.labels)
    engine = InferenceEngine.load(args.model, device="cpu", threads=args.threads)
    start = time.perf_counter()
    probs = engine.predict(texts)  # also the warm-up
    cold_rate = len(texts) / (time.perf_counter() - start)
    engine_rss = _mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    engine_mr = metrics.macro_recall(labels, probs.argmax(axis=1))

    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()
    vader_mr = metrics.macro_recall(labels, vader_labels(vader, texts))

    engine_times, vader_times = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        engine.predict(texts)
        engine_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        vader_labels(vader, texts)
        vader_times.append(time.perf_counter() - start)
    n = len(texts)
    engine_rate = n / statistics.median(engine_times)
    vader_rate = n / statistics.median(vader_times)
    print(f"TweetEval sentiment test: {n} texts, {args.repeats} alternating runs, median")
    print(
        f"  moodwire {engine.model_version} ({engine.device}, {args.threads} threads): "
        f"{engine_rate:,.0f} posts/s, macro-recall {engine_mr:.4f}"
    )
    print(
        f"  VADER 3.3.2 (compound +-0.05): {vader_rate:,.0f} posts/s, macro-recall {vader_mr:.4f}"
    )
    print(f"  speed ratio moodwire / VADER: {engine_rate / vader_rate:.2f}x")
    # The first pass also splits every unknown word and hashtag once (cached after that).
    print(
        f"  moodwire first pass (cold caches): {cold_rate:,.0f} posts/s, "
        f"{cold_rate / vader_rate:.2f}x VADER's median"
    )
    print(f"  engine peak RSS (after load + one pass): {engine_rss:,.0f} MiB")
    if args.classify:
        classify_rss(args.classify, args.data, args.model)


if __name__ == "__main__":
    main()
