"""JSON Lines in, the same objects out with a sentiment added (``moodwire classify``).

Streams: reads ``batch_size`` lines, scores them, writes them, repeats, so memory stays
flat however long the input is. Output order is input order. A line that is not a JSON
object with a string ``text`` is written back with an ``error`` field and the run goes on.
Blank lines are skipped.
"""

from __future__ import annotations

import json
import re
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


@dataclass
class Counts:
    scored: int = 0
    errors: int = 0


def score_fields(probs: npt.NDArray[np.float32], model_version: str) -> list[dict[str, Any]]:
    """The fields added to each scored post: sentiment, score, probs, model_version."""
    labels = probs.argmax(axis=1)
    rounded = np.round(probs.astype(np.float64), 6)
    scores = np.round(probs[:, 2].astype(np.float64) - probs[:, 0], 6)
    return [
        {
            "sentiment": LABELS[int(label)],
            "score": float(score),
            "probs": row.tolist(),
            "model_version": model_version,
        }
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


def classify_lines(
    lines: Iterable[bytes],
    write: Callable[[bytes], object],
    scorer: Scorer,
    batch_size: int = 512,
) -> Counts:
    counts = Counts()
    numbered = _numbered(lines)
    while batch := list(islice(numbered, max(1, batch_size))):
        parsed = [_parse(line, number) for number, line in batch]
        posts = [post for post, _ in parsed if post is not None]
        fields = iter(
            score_fields(scorer.predict([p["text"] for p in posts]), scorer.model_version)
            if posts
            else []
        )
        out = []
        for post, error in parsed:
            if post is not None:
                post.update(next(fields))
                out.append(_dump(post))
                counts.scored += 1
            elif error is not None:
                out.append(_dump(error))
                counts.errors += 1
        write(b"".join(out))
    return counts
