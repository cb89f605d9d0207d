"""JSON Lines in, the same objects out with a sentiment added (``moodwire classify``).

Streams in chunks of lines, so memory stays flat however long the input is, and overlaps
its three stages: a reader thread reads and parses chunk k+1 while the engine scores chunk
k (its batches on all its worker threads; torch releases the GIL) and a writer thread
encodes and writes chunk k-1. Reading and writing JSON cost about as much as the model, so
done in turn they nearly halved the whole process's rate. Output order is input order. A
line that is not a JSON object with a string ``text`` is written back with an ``error``
field and the run goes on. Blank lines are skipped. An error reading or writing stops the
run and is raised to the caller.

With ``workers`` > 1, chunks are scored in that many forked processes instead (see
``_classify_in_workers``): the work above holds the GIL most of the time, so one process
runs on about one core however many threads it has.
"""

from __future__ import annotations

import ctypes
import gc
import json
import multiprocessing
import os
import queue
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from moodwire.model.labels import LABELS
from moodwire.model.scorer import Scorer

MAX_ERROR_INPUT = 200  # characters of an unparseable line echoed back in its error record
# Lines per chunk handed from stage to stage: several engine batches, so every engine
# worker has one, and few enough hand-offs that their cost does not show.
MIN_CHUNK = 4096
# Chunks handed to worker processes and not yet written, per worker: one being scored, one
# queued behind it, so no worker waits for the parent; the bound keeps memory flat.
_IN_FLIGHT_PER_WORKER = 2
_GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections (Python's: 700)
_PR_SET_PDEATHSIG = 1  # prctl(2) option: the signal a process gets when its parent dies
_DONE = object()


@dataclass
class Counts:
    scored: int = 0
    errors: int = 0


# orjson reads integers beyond 64 bits as floats; lines with a run of 19 or more digits go
# through the stdlib parser so that every field comes back unchanged. Digits -> "0", every
# other byte -> " ": such a run becomes a substring that ``in`` finds at memchr speed,
# where a regex search cost ~2 us over a tweet's line.
_DIGIT_RUNS = bytes(b"0"[0] if 48 <= c <= 57 else b" "[0] for c in range(256))
_LONG_RUN = b"0" * 19


def _long_digit_run(line: bytes) -> bool:
    return _LONG_RUN in line.translate(_DIGIT_RUNS)


def _parse(line: bytes, number: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(post, None) for a good line, (None, error record) for a bad one."""
    try:
        if _long_digit_run(line):
            raise orjson.JSONDecodeError("big integer", "", 0)
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:  # orjson rejects a few things the JSON grammar allows (NaN, 65-bit ints)
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raw = line.decode("utf-8", "replace").strip()[:MAX_ERROR_INPUT]
            return None, {"line": number, "error": f"invalid JSON: {exc}", "input": raw}
    if not isinstance(obj, dict):
        return None, {"line": number, "error": "not a JSON object", "input": obj}
    if not isinstance(obj.get("text"), str):
        reason = "missing field 'text'" if "text" not in obj else "field 'text' is not a string"
        return None, {**obj, "error": reason}
    return obj, None


def _parse_chunk(
    batch: list[tuple[int, bytes]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What to write back for each line (the post itself, or its error record) and the
    posts to score, both in input order. A good line with no long digit run takes one
    orjson call; any other goes through ``_parse``, which decides exactly as before."""
    records: list[dict[str, Any]] = []
    posts: list[dict[str, Any]] = []
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for number, line in batch:
        if not _long_digit_run(line):
            try:
                obj = loads(line)
            except decode_error:
                obj = None
            if type(obj) is dict and type(obj.get("text")) is str:
                records.append(obj)
                posts.append(obj)
                continue
        post, error = _parse(line, number)
        if post is not None:
            posts.append(post)
            records.append(post)
        elif error is not None:
            records.append(error)
    return records, posts


def _dump(obj: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(obj) + b"\n"
    except TypeError:  # integers beyond 64 bits, lone surrogates: escaped, kept exactly
        return json.dumps(obj, ensure_ascii=True).encode("ascii") + b"\n"


def _encode_chunk(
    records: list[dict[str, Any]],
    posts: list[dict[str, Any]],
    probs: npt.NDArray[np.float32] | None,
    model_version: str,
    counts: Counts,
) -> bytes:
    """Every record as one JSON line, each post with sentiment, score, probs and
    model_version added in that order (in place, where the post had them already)."""
    if posts:
        assert probs is not None
        # Whole-array conversions: per-row numpy scalars cost more than the GRU step.
        labels = list(map(LABELS.__getitem__, probs.argmax(axis=1).tolist()))
        rounded = np.round(probs.astype(np.float64), 6).tolist()
        scores = np.round(probs[:, 2].astype(np.float64) - probs[:, 0], 6).tolist()
        for post, label, score, row in zip(posts, labels, scores, rounded, strict=True):
            post["sentiment"] = label
            post["score"] = score
            post["probs"] = row
            post["model_version"] = model_version
    counts.scored += len(posts)
    counts.errors += len(records) - len(posts)
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    try:
        return b"".join([dumps(record, option=newline) for record in records])
    except TypeError:  # a record orjson cannot hold: the chunk again, line by line
        return b"".join([_dump(record) for record in records])


def _numbered(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, line


def _predict(scorer: Scorer, texts: list[str], tokens: Any) -> npt.NDArray[np.float32] | None:
    if not texts:
        return None
    if tokens is not None:
        return scorer.predict_encoded(tokens)  # type: ignore[attr-defined,no-any-return]
    return scorer.predict(texts)


class _Stage(threading.Thread):
    """A daemon thread running ``work``; what it raised is kept for the caller and, when
    ``stop`` is given, stops the other stages."""

    def __init__(
        self, name: str, work: Callable[[], None], stop: threading.Event | None = None
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._work = work
        self._stop_all = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as exc:
            self.error = exc
            if self._stop_all is not None:
                self._stop_all.set()


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put unless the run is stopping; False when it is."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    """The next item, or ``_DONE`` once the run is stopping: a reader that saw the stop
    gives up without handing on ``_DONE`` (its queue may be full), and waiting for that
    hung the run when the writer failed while this side waited for the reader."""
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return _DONE


def classify_lines(
    lines: Iterable[bytes],
    write: Callable[[bytes], object],
    scorer: Scorer,
    batch_size: int = 512,
    workers: int = 1,
    chunk_lines: int | None = None,
) -> Counts:
    """Score ``lines`` and ``write`` them back in input order; ``workers`` > 1 scores in
    that many forked processes (``scorer`` must be safe to fork: torch single-threaded, no
    GPU). ``chunk_lines`` (non-blank lines per chunk) only exists for tests: the engine
    sorts and batches within a chunk, so the same chunks give the same bytes."""
    chunk = chunk_lines or max(MIN_CHUNK, batch_size)
    if workers > 1:
        return _classify_in_workers(lines, write, scorer, chunk, workers)
    return _classify_in_threads(lines, write, scorer, chunk)


def _classify_in_threads(
    lines: Iterable[bytes], write: Callable[[bytes], object], scorer: Scorer, chunk: int
) -> Counts:
    counts = Counts()
    stop = threading.Event()
    # Two chunks waiting per hand-off at most: memory stays bounded, stages stay busy.
    parsed_q: queue.Queue[Any] = queue.Queue(maxsize=2)
    scored_q: queue.Queue[Any] = queue.Queue(maxsize=2)

    # The tokenizer runs here too when the scorer offers it (pure Python, like parsing),
    # so the main thread only drives the network, whose ops release the GIL.
    encode = getattr(scorer, "encode", None)

    def read() -> None:
        numbered = _numbered(lines)
        try:
            while batch := list(islice(numbered, chunk)):
                records, posts = _parse_chunk(batch)
                texts = [post["text"] for post in posts]
                tokens = encode(texts) if encode is not None and texts else None
                if not _put(parsed_q, (records, posts, texts, tokens), stop):
                    return
        finally:
            _put(parsed_q, _DONE, stop)

    def write_all() -> None:
        while (item := scored_q.get()) is not _DONE:
            records, posts, probs = item
            write(_encode_chunk(records, posts, probs, scorer.model_version, counts))

    # A read error ends the input: what was read before it is still scored and written.
    reader = _Stage("classify-read", read)
    writer = _Stage("classify-write", write_all, stop)
    reader.start()
    writer.start()
    try:
        while (item := _get(parsed_q, stop)) is not _DONE:
            records, posts, texts, tokens = item
            probs = _predict(scorer, texts, tokens)
            if not _put(scored_q, (records, posts, probs), stop) or not writer.is_alive():
                break
    finally:
        while writer.is_alive():  # it drains what is queued, then stops
            try:
                scored_q.put(_DONE, timeout=0.1)
                break
            except queue.Full:
                continue
        writer.join()
        stop.set()  # a reader still blocked on a full queue gives up
        reader.join()
    for stage in (reader, writer):
        if stage.error is not None:
            raise stage.error
    return counts


# The scorer of a worker process: set in the parent just before the workers fork, so each
# inherits the loaded model (copy-on-write) instead of loading its own.
_worker_scorer: Scorer | None = None


def _start_worker(parent: int) -> None:
    # Ctrl-C reaches the whole process group; the parent alone handles it (it stops the
    # pool), so a worker never dies mid-chunk with a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with(parent)
    # The scorer's own worker threads stayed behind in the parent: a pool of them here
    # would wait forever. Closing this copy makes it score on the worker's one thread.
    if _worker_scorer is not None:
        _worker_scorer.close()
    collect_less()  # and the model's pages stay shared with the parent


def collect_less() -> None:
    """Garbage-collector settings for a process that runs a classify (the CLI's, a
    worker): every chunk makes thousands of dicts and lists, each a tick of the cyclic
    collector, whose full passes walked all of torch and the model's vocabulary again
    and again. Frozen, those stay out of its passes; collecting less often costs
    nothing, as a chunk's objects hold no cycles. In one process: 23 -> 19 CPU-s on
    393k posts; parsing and encoding alone ~40% less."""
    gc.freeze()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, 10, 10)


def _die_with(parent: int) -> None:
    """Linux: a parent killed outright (SIGKILL, no cleanup) takes its workers with it;
    otherwise they would wait for chunks forever, as every worker keeps the task pipe
    open."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's shutdown still reaps them
        return
    if os.getppid() != parent:  # the parent died before prctl took hold
        os._exit(1)


def _score_chunk(batch: list[tuple[int, bytes]]) -> tuple[bytes, int, int]:
    """One chunk in a worker: parse, score, encode. The encoded lines and the counts."""
    scorer = _worker_scorer
    assert scorer is not None, "a worker process forked without its scorer"
    records, posts = _parse_chunk(batch)
    texts = [post["text"] for post in posts]
    encode = getattr(scorer, "encode", None)
    tokens = encode(texts) if encode is not None and texts else None
    counts = Counts()
    data = _encode_chunk(
        records, posts, _predict(scorer, texts, tokens), scorer.model_version, counts
    )
    return data, counts.scored, counts.errors


def _write_result(
    future: Future[tuple[bytes, int, int]], write: Callable[[bytes], object], counts: Counts
) -> None:
    data, scored, errors = future.result()
    write(data)
    counts.scored += scored
    counts.errors += errors


def _batches(
    numbered: Iterator[tuple[int, bytes]], chunk: int, errors: list[Exception]
) -> Iterator[list[tuple[int, bytes]]]:
    """Chunks of numbered lines; a read error ends them and is kept in ``errors``, so
    that what was read before it is still scored and written."""
    while True:
        try:
            batch = list(islice(numbered, chunk))
        except Exception as exc:
            errors.append(exc)
            return
        if not batch:
            return
        yield batch


def _first_submit(
    pool: ProcessPoolExecutor, batch: list[tuple[int, bytes]]
) -> Future[tuple[bytes, int, int]]:
    """The workers fork at the first submit, before the pool starts its own threads.
    SIGINT stays blocked across the fork until each worker has set it to be ignored."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return pool.submit(_score_chunk, batch)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _classify_in_workers(
    lines: Iterable[bytes],
    write: Callable[[bytes], object],
    scorer: Scorer,
    chunk: int,
    workers: int,
) -> Counts:
    """The parent reads chunks of numbered lines and writes each chunk's bytes back in
    input order; ``workers`` forked processes parse, score and encode them. Fork, not
    spawn: a spawned worker imports torch and loads the model again (~2.5 CPU-s each); a
    forked one inherits them, which is safe as torch runs single-threaded (no thread pool
    to lose) and on CPU."""
    global _worker_scorer
    counts = Counts()
    pending: deque[Future[tuple[bytes, int, int]]] = deque()
    read_errors: list[Exception] = []
    _worker_scorer = scorer
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start_worker,
        initargs=(os.getpid(),),
    )
    forked = False
    try:
        for batch in _batches(_numbered(lines), chunk, read_errors):
            if forked:
                pending.append(pool.submit(_score_chunk, batch))
            else:
                pending.append(_first_submit(pool, batch))
                forked = True
            if len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
                _write_result(pending.popleft(), write, counts)
        while pending:
            _write_result(pending.popleft(), write, counts)
    finally:
        # A write error or Ctrl-C: drop what is queued, let running chunks end, reap all.
        pool.shutdown(wait=True, cancel_futures=True)
        _worker_scorer = None
    if read_errors:
        raise read_errors[0]
    return counts
