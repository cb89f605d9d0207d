"""`moodwire classify`: fields and order kept, bad lines reported in place, exit codes."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from moodwire.model.classify import classify_lines
from moodwire.model.engine import InferenceEngine

LINES = [
    b'{"id": 1, "text": "I love it :)", "user": {"name": "a"}, "tags": [1, 2]}',
    b"not json at all",
    b"",
    b'{"id": 3}',
    b'{"id": 4, "text": null}',
    b"[1, 2, 3]",
    b'{"id": 6, "text": "terrible, never again", "sentiment": "stale"}',
    b"\xff\xfe{",
    b'{"id": 8, "text": ""}',
]


def _run(engine: InferenceEngine, batch_size: int) -> list[dict[str, object]]:
    out = io.BytesIO()
    counts = classify_lines(LINES, out.write, engine, batch_size=batch_size)
    assert (counts.scored, counts.errors) == (3, 5)
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_round_trip_and_bad_lines(engine: InferenceEngine) -> None:
    rows = _run(engine, batch_size=2)
    assert len(rows) == 8  # the blank line is skipped, nothing else is
    assert [r.get("id", r.get("line")) for r in rows] == [1, 2, 3, 4, 6, 6, 8, 8]
    first = rows[0]
    assert list(first)[:4] == ["id", "text", "user", "tags"]
    assert first["user"] == {"name": "a"} and first["tags"] == [1, 2]
    assert first["sentiment"] == "positive" and first["model_version"] == engine.model_version
    probs = first["probs"]
    assert isinstance(probs, list) and abs(sum(probs) - 1) < 1e-4
    assert abs(first["score"] - (probs[2] - probs[0])) < 1e-5  # type: ignore[operator]
    assert str(rows[1]["error"]).startswith("invalid JSON")
    assert rows[2] == {"id": 3, "error": "missing field 'text'"}
    assert rows[3]["error"] == "field 'text' is not a string"
    assert rows[4] == {"line": 6, "error": "not a JSON object", "input": [1, 2, 3]}
    assert rows[5]["sentiment"] == "negative"  # an existing field is overwritten
    assert rows[6]["line"] == 8 and "invalid JSON" in rows[6]["error"]  # type: ignore[operator]
    assert rows[7]["sentiment"] in ("negative", "neutral", "positive")
    assert _run(engine, batch_size=100) == rows


def _cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    code = "from moodwire.cli.app import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, "classify", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
    )


def test_cli_files_and_exit_codes(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(LINES) + b"\n")
    dst = tmp_path / "out.jsonl"
    done = _cli("--input", str(src), "--output", str(dst), "--batch-size", "3")
    assert done.returncode == 0, done.stderr
    assert len(dst.read_bytes().splitlines()) == 8
    piped = _cli(stdin=b'{"text": "what a great game"}\n')
    assert piped.returncode == 0
    assert orjson.loads(piped.stdout)["text"] == "what a great game"
    missing = _cli("--input", str(tmp_path / "nope.jsonl"))
    assert missing.returncode != 0 and b"cannot read" in missing.stderr
    no_model = _cli("--model", str(tmp_path), stdin=b'{"text": "hi"}\n')
    assert no_model.returncode == 2 and b"error: cannot load the model" in no_model.stderr
    assert b"Traceback" not in no_model.stderr
    unwritable = _cli("--input", str(src), "--output", str(tmp_path / "no" / "out.jsonl"))
    assert unwritable.returncode == 2 and b"cannot write" in unwritable.stderr


def test_fields_orjson_cannot_hold_come_back_unchanged(engine: InferenceEngine) -> None:
    import json

    lines = [
        b'{"id": 123456789012345678901234567890, "text": "great", "x": 1.5}',
        b'{"text": "lone \\ud800 surrogate", "id": 2}',
    ]
    out = io.BytesIO()
    classify_lines(lines, out.write, engine)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert rows[0]["id"] == 123456789012345678901234567890 and rows[0]["x"] == 1.5
    assert rows[1]["text"] == "lone \ud800 surrogate" and "sentiment" in rows[1]


def test_model_eval_reports_a_missing_model_or_split_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from moodwire.cli.app import app
    from moodwire.settings import DEFAULT_MODEL_DIR

    runner = CliRunner()
    missing = runner.invoke(
        app, ["model", "eval", "--model", str(tmp_path), "--data", str(tmp_path)]
    )
    assert missing.exit_code == 2 and "error: no model at" in missing.output
    bogus = ["model", "eval", "--model", str(DEFAULT_MODEL_DIR), "--data", str(tmp_path)]
    unknown = runner.invoke(app, [*bogus, "--split", "bogus"])
    assert unknown.exit_code == 2 and "unknown split 'bogus'" in unknown.output
    assert missing.exception is None or isinstance(missing.exception, SystemExit)


def _full_disk_after_one_write(written: list[bytes]) -> Callable[[bytes], None]:
    """A sink that takes one write (into ``written``), then fails as a full disk does."""

    def write(data: bytes) -> None:
        if written:
            raise OSError(28, "No space left on device")
        written.append(data)

    return write


def test_a_failing_write_or_read_stops_the_run_with_its_error(engine: InferenceEngine) -> None:
    """The stages run on threads: an error in any of them reaches the caller, nothing hangs."""
    lines = [orjson.dumps({"id": i, "text": f"post {i} is great"}) for i in range(20_000)]
    written: list[bytes] = []
    failing_write = _full_disk_after_one_write(written)

    try:
        classify_lines(lines, failing_write, engine)
    except OSError as exc:
        assert exc.errno == 28
    else:
        raise AssertionError("the write error was swallowed")
    assert len(written) == 1

    def failing_read() -> Iterator[bytes]:
        yield from lines[:5000]
        raise OSError(5, "Input/output error")

    out = io.BytesIO()
    try:
        classify_lines(failing_read(), out.write, engine)
    except OSError as exc:
        assert exc.errno == 5
    else:
        raise AssertionError("the read error was swallowed")
    # What was read before the error was scored and written, in order.
    done = [orjson.loads(line)["id"] for line in out.getvalue().splitlines()]
    assert done == list(range(len(done))) and len(done) == 4096


def test_large_input_keeps_order_across_chunks(engine: InferenceEngine) -> None:
    lines = [
        orjson.dumps({"id": i, "text": f"I {'love' if i % 2 else 'hate'} it"})
        for i in range(10_000)
    ]
    out = io.BytesIO()
    counts = classify_lines(lines, out.write, engine, batch_size=256)
    rows = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert counts.scored == 10_000 and [r["id"] for r in rows] == list(range(10_000))
    assert {r["sentiment"] for r in rows[1::2]} == {"positive"}
    assert {r["sentiment"] for r in rows[0::2]} == {"negative"}


def _numbered_fixture(copies: int) -> list[bytes]:
    """LINES (bad lines and a blank one among them) again and again, each copy's posts
    numbered, so order and line numbers can be checked across many chunks."""
    out = []
    for copy in range(copies):
        for line in LINES:
            out.append(line.replace(b'"id": ', b'"id": %d' % (copy * 100)) if copy else line)
    return out


def _classify(
    engine: InferenceEngine, lines: list[bytes], workers: int, chunk_lines: int = 7
) -> tuple[bytes, tuple[int, int]]:
    out = io.BytesIO()
    counts = classify_lines(lines, out.write, engine, workers=workers, chunk_lines=chunk_lines)
    return out.getvalue(), (counts.scored, counts.errors)


def test_several_workers_write_the_bytes_of_one(engine: InferenceEngine) -> None:
    """The engine sorts and batches within a chunk; the same chunks in worker processes
    give the same bytes, in input order, bad lines numbered as in one process."""
    lines = _numbered_fixture(40)
    one, counts = _classify(engine, lines, workers=1)
    assert counts == (3 * 40, 5 * 40)
    for workers in (2, 3):
        assert _classify(engine, lines, workers) == (one, counts)
    rows = [orjson.loads(line) for line in one.splitlines()]
    bad_numbers = [r["line"] for r in rows if "line" in r]
    assert bad_numbers == [n + 9 * copy for copy in range(40) for n in (2, 6, 8)]
    assert sum("sentiment" in r for r in rows) == 3 * 40  # every good line once


def test_workers_keep_what_was_read_before_a_read_error(engine: InferenceEngine) -> None:
    lines = [orjson.dumps({"id": i, "text": f"post {i} is great"}) for i in range(100)]

    def failing_read() -> Iterator[bytes]:
        yield from lines[:50]
        raise OSError(5, "Input/output error")

    out = io.BytesIO()
    try:
        classify_lines(failing_read(), out.write, engine, workers=2, chunk_lines=8)
    except OSError as exc:
        assert exc.errno == 5
    else:
        raise AssertionError("the read error was swallowed")
    # The chunk being read when it failed is lost, as in one process; all before it stays.
    assert [orjson.loads(line)["id"] for line in out.getvalue().splitlines()] == list(range(48))


def test_workers_stop_at_a_write_error(engine: InferenceEngine) -> None:
    lines = [orjson.dumps({"id": i, "text": f"post {i}"}) for i in range(200)]
    written: list[bytes] = []
    failing_write = _full_disk_after_one_write(written)

    try:
        classify_lines(lines, failing_write, engine, workers=2, chunk_lines=10)
    except OSError as exc:
        assert exc.errno == 28
    else:
        raise AssertionError("the write error was swallowed")
    assert len(written) == 1 and written[0].count(b"\n") == 10


def test_cli_workers_and_a_full_disk(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(_numbered_fixture(3)) + b"\n")
    outs = []
    for workers in ("1", "2"):
        dst = tmp_path / f"out{workers}.jsonl"
        done = _cli("-i", str(src), "-o", str(dst), "--workers", workers)
        assert done.returncode == 0, done.stderr
        assert b"classified 9 posts, 15 bad lines" in done.stderr
        outs.append(dst.read_bytes())
    assert outs[0] == outs[1]
    # Small output meets the full disk at the last flush, big output at a chunk's write.
    for lines in (3, 20_000):
        big = tmp_path / "big.jsonl"
        big.write_bytes(b'{"text": "what a game"}\n' * lines)
        full = _cli("-i", str(big), "-o", "/dev/full", "--workers", "2")
        assert full.returncode == 2, full.stderr
        assert b"error: classify stopped: [Errno 28]" in full.stderr
        assert b"Traceback" not in full.stderr
