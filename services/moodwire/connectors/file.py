"""``file://PATH``: posts from a JSON Lines or CSV file (optionally gzip-compressed).

``file:///abs/feed.jsonl``, ``file://relative/feed.csv``, ``file:///dev/stdin?format=jsonl``.
Options: ``format=jsonl|csv`` (default: from the extension), ``source=NAME`` (the
``source`` of CSV rows that have no ``source`` column).

JSON Lines: one post object per line (schema ``post.v1``); blank lines are skipped.
CSV: a header row naming the post fields (``id, source, text, created_at, author, url,
lang``); other columns go into ``metadata``; empty optional cells are absent. A bad
row's dead-letter payload is the row written back as CSV (the csv module does not give
the raw bytes of a row that may span lines); invalid UTF-8 in it is kept byte for byte.

Every record carries its origin, ``file:///abs/path:LINE``; a line that cannot be a
post becomes a dead letter downstream and the file goes on.
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import SplitResult, unquote

from moodwire.connectors.base import Connector, ConnectorError, RawRecord

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
# Longer lines are refused without being held in memory: far above any valid post
# (20k characters by default), far below what would hurt the process.
MAX_LINE_BYTES = 8 * 1024 * 1024
# The csv module's default field limit (128 KiB) would end the whole file at one long
# text (it cannot resynchronise after that error); with the JSONL line limit instead, such
# a row reaches validation and becomes a dead letter like any other too-long post.
csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))
_POST_COLUMNS = ("id", "source", "text", "created_at", "author", "url", "lang")
_UTF8_BOM = b"\xef\xbb\xbf"


def path_of(url: SplitResult) -> Path:
    # file:///abs/x -> /abs/x; file://rel/x (netloc "rel") -> rel/x; file://localhost/x -> /x.
    netloc = "" if url.netloc in ("", "localhost") else url.netloc
    raw = unquote(netloc + url.path)
    if not raw:
        raise ConnectorError("file:// needs a path, e.g. file:///data/posts.jsonl")
    return Path(raw).expanduser()


class FileConnector(Connector):
    def __init__(self, url: SplitResult, options: dict[str, str]) -> None:
        super().__init__(url, options)
        self.check_options({"format", "source"})
        self.path = path_of(url)
        self.format = self._format()
        self.default_source = self.option_str("source")
        if not (self.path.exists() or str(self.path).startswith("/dev/")):
            raise ConnectorError(f"file not found: {self.path}")
        if self.path.is_dir():
            raise ConnectorError(f"{self.path} is a directory, not a file")
        self._origin_prefix = "file://" + (
            str(self.path.resolve()) if self.path.exists() else str(self.path)
        )
        if self.format == "csv" and self.path.is_file():
            # Fail at start, not after the producer is up, when the header cannot work.
            with self._reading(), self._open() as stream:
                self._csv_header(csv.reader(_text(stream)))

    def _format(self) -> str:
        chosen = self.option_str("format")
        if chosen is not None:
            if chosen not in ("jsonl", "csv"):
                raise ConnectorError(f"format={chosen!r} is not one of: jsonl, csv")
            return chosen
        suffixes = [s.lower() for s in self.path.suffixes]
        if suffixes and suffixes[-1] == ".gz":
            suffixes.pop()
        found = FORMATS.get(suffixes[-1]) if suffixes else None
        if found is None:
            raise ConnectorError(
                f"cannot tell the format of {self.path.name} from its extension "
                f"({', '.join(FORMATS)}); add ?format=jsonl or ?format=csv"
            )
        return found

    def _open(self) -> IO[bytes]:
        if str(self.path) == "/dev/stdin":
            return sys.stdin.buffer
        try:
            raw: IO[bytes] = self.path.open("rb")
        except OSError as exc:
            raise ConnectorError(f"cannot open {self.path}: {exc.strerror}") from None
        if self.path.suffix.lower() == ".gz":
            return gzip.open(raw, "rb")  # type: ignore[return-value]
        return raw

    def records(self) -> Iterator[RawRecord]:
        with self._reading(), self._open() as stream:
            if self.format == "csv":
                yield from self._csv_records(stream)
            else:
                yield from self._jsonl_records(stream)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        # A truncated or corrupt .gz (or a failing disk) ends the file; records already
        # yielded stay sent, and the error names the file instead of being a traceback.
        try:
            yield
        except (OSError, EOFError, zlib.error) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConnectorError(
                f"cannot read {self.path}: {detail or type(exc).__name__}"
            ) from None

    def _origin(self, line: int) -> str:
        return f"{self._origin_prefix}:{line}"

    def _jsonl_records(self, stream: IO[bytes]) -> Iterator[RawRecord]:
        number = 0
        while not self.stopped:
            line = stream.readline(MAX_LINE_BYTES)
            if not line:
                return
            number += 1
            if number == 1 and line.startswith(_UTF8_BOM):
                line = line[len(_UTF8_BOM) :]
            if not line.endswith(b"\n") and len(line) >= MAX_LINE_BYTES:
                total = len(line) + _skip_rest_of_line(stream)
                yield RawRecord(
                    payload=line,
                    origin=self._origin(number),
                    error=f"line has {total} bytes (limit {MAX_LINE_BYTES}); payload truncated",
                )
                continue
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            yield RawRecord(payload=line, origin=self._origin(number))

    def _csv_records(self, stream: IO[bytes]) -> Iterator[RawRecord]:
        reader = csv.reader(_text(stream))
        columns = self._csv_header(reader)
        if columns is None:
            return
        start = reader.line_num + 1
        while not self.stopped:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                # The csv module cannot resynchronise after this; the rest is unreadable.
                raise ConnectorError(f"{self._origin(start)}: CSV error: {exc}") from None
            origin = self._origin(start)
            start = reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            yield self._csv_record(columns, row, origin)

    def _csv_header(self, reader: Any) -> list[str] | None:
        try:
            header = next(reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            raise ConnectorError(f"{self.path}: cannot read the CSV header: {exc}") from None
        columns = [str(c).strip() for c in header]
        missing = [c for c in ("id", "text", "created_at") if c not in columns]
        if "source" not in columns and self.default_source is None:
            missing.append("source (or ?source=NAME)")
        if missing:
            raise ConnectorError(f"{self.path}: CSV header lacks column(s): {', '.join(missing)}")
        return columns

    def _csv_record(self, columns: list[str], row: list[str], origin: str) -> RawRecord:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow(row)
        payload = buffer.getvalue().encode("utf-8", errors="surrogateescape")
        if len(row) != len(columns):
            return RawRecord(
                payload, origin, error=f"row has {len(row)} fields, header has {len(columns)}"
            )
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            return RawRecord(payload, origin, error=f"invalid UTF-8 at byte {exc.start}")
        fields: dict[str, Any] = {}
        metadata: dict[str, str] = {}
        for name, cell in zip(columns, row, strict=True):
            if name in _POST_COLUMNS:
                if cell != "" or name in ("id", "text", "created_at", "source"):
                    fields[name] = cell
            elif name and cell != "":
                metadata[name] = cell
        if not fields.get("source") and self.default_source is not None:
            fields["source"] = self.default_source
        if metadata:
            fields["metadata"] = metadata
        return RawRecord(payload, origin, fields=fields)


def _text(stream: IO[bytes]) -> io.TextIOWrapper:
    # surrogateescape keeps invalid UTF-8 visible (as lone surrogates) instead of failing
    # the whole file; such a row becomes a dead letter with its own bytes.
    return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _skip_rest_of_line(stream: IO[bytes]) -> int:
    skipped = 0
    while True:
        chunk = stream.readline(MAX_LINE_BYTES)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped
