"""JSON Lines in, the same objects out with a sentiment added (``moodwire classify``).

Streams in chunks of lines, so memory stays flat however long the input is, and overlaps
its three stages: a reader thread reads and parses chunk k+1 while the engine scores chunk
k (its batches on all its worker threads; torch releases the GIL) and a writer thread
encodes and writes chunk k-1. Reading and writing JSON cost about as much as the model, so
done in turn they nearly halved the whole process's rate. Output order is input order. A
line that is not a JSON object with a string ``text`` is written back with an ``error``
field and the run goes on. Blank lines are skipped. An error reading or writing stops the
run and is raised to the caller.
"""

from __future__ import annotations

import json
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from moodwire.model.labels import LABELS
from moodwire.model.scorer import Scorer

MAX_ERROR_INPUT = 200  # characters of an unparseable line echoed back in its error record
# orjson reads integers beyond 64 bits as floats; such lines go through the stdlib parser so
# that every field comes back unchanged.
_BIG_INT = re.compile(rb"\d{19,}")
# Lines per chunk handed from stage to stage: several engine batches, so every engine
# worker has one, and few enough hand-offs that their cost does not show.
MIN_CHUNK = 4096
_DONE = object()


@dataclass
class Counts:
    scored: int = 0
    errors: int = 0


def score_fields(probs: npt.NDArray[np.float32], model_version: str) -> list[dict[str, Any]]:
    """The fields added to each scored post: sentiment, score, probs, model_version."""
    # Whole-array conversions: per-row numpy scalars cost more than the model's GRU step.
    labels = [LABELS[i] for i in probs.argmax(axis=1).tolist()]
    rounded = np.round(probs.astype(np.float64), 6).tolist()
    scores = np.round(probs[:, 2].astype(np.float64) - probs[:, 0], 6).tolist()
    return [
        {"sentiment": label, "score": score, "probs": row, "model_version": model_version}
        for label, score, row in zip(labels, scores, rounded, strict=True)
    ]


def _parse(line: bytes, number: int) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(post, None) for a good line, (None, error record) for a bad one."""
    try:
        if _BIG_INT.search(line):
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


def _dump(obj: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(obj) + b"\n"
    except TypeError:  # integers beyond 64 bits, lone surrogates: escaped, kept exactly
        return json.dumps(obj, ensure_ascii=True).encode("ascii") + b"\n"


def _numbered(lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, line


Parsed = list[tuple[dict[str, Any] | None, dict[str, Any] | None]]


def _encode(parsed: Parsed, fields: list[dict[str, Any]], counts: Counts) -> bytes:
    it = iter(fields)
    out = []
    for post, error in parsed:
        if post is not None:
            post.update(next(it))
            out.append(_dump(post))
            counts.scored += 1
        elif error is not None:
            out.append(_dump(error))
            counts.errors += 1
    return b"".join(out)


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


def classify_lines(
    lines: Iterable[bytes],
    write: Callable[[bytes], object],
    scorer: Scorer,
    batch_size: int = 512,
) -> Counts:
    counts = Counts()
    chunk = max(MIN_CHUNK, batch_size)
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
                parsed = [_parse(line, number) for number, line in batch]
                texts = [post["text"] for post, _ in parsed if post is not None]
                tokens = encode(texts) if encode is not None and texts else None
                if not _put(parsed_q, (parsed, texts, tokens), stop):
                    return
        finally:
            _put(parsed_q, _DONE, stop)

    def write_all() -> None:
        while (item := scored_q.get()) is not _DONE:
            parsed, fields = item
            write(_encode(parsed, fields, counts))

    # A read error ends the input: what was read before it is still scored and written.
    reader = _Stage("classify-read", read)
    writer = _Stage("classify-write", write_all, stop)
    reader.start()
    writer.start()
    try:
        while (item := parsed_q.get()) is not _DONE:
            parsed, texts, tokens = item
            fields: list[dict[str, Any]] = []
            if texts:
                probs = (
                    scorer.predict_encoded(tokens)  # type: ignore[attr-defined]
                    if tokens is not None
                    else scorer.predict(texts)
                )
                fields = score_fields(probs, scorer.model_version)
            if not _put(scored_q, (parsed, fields), stop) or not writer.is_alive():
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
