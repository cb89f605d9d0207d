"""What a source connector is: built from a URL, it yields raw records with their origin.

A connector only reads; validation, dead letters, Kafka and saving cursors are the ingest
loop's job, so a third-party connector stays a few lines long (see the README, "Writing a
connector").

Positions follow Kafka Connect's source partitions and offsets. A record may carry a
:class:`Position`: the source partition it came from (one Jetstream host, one feed, one
subreddit) and the offset to resume from *after* it (``{"time_us": ...}``). The ingest loop
saves an offset only once the broker has acknowledged that record and every record of the
same partition before it, and hands the saved offsets back through :meth:`Connector.resume`
before :meth:`Connector.records` is called again. A connector that reads events it does not
turn into records (likes, follows) yields a bare :class:`Position` so that the cursor still
moves past them.
"""

from __future__ import annotations

import abc
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import SplitResult

#: A source offset: a small JSON object (``{"time_us": 1725911162329308}``).
Offset = Mapping[str, Any]


class ConnectorError(ValueError):
    """A connector URL or option that cannot work; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where the source stands after a record: ``partition`` names one stream of the
    source (a host, a feed URL, a subreddit), ``offset`` is what to resume from."""

    partition: str
    offset: Offset


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as the source gave it, before validation.

    ``payload`` is the record's original bytes (what a dead letter keeps). When the
    connector already parsed the record (a CSV row, a generated post), ``fields`` holds
    it and the payload is only kept for the dead letter; otherwise ``payload`` is the
    JSON of one post. ``error`` marks a record the connector already knows is bad (a
    CSV row with the wrong number of fields), with the reason.

    ``position``: see the module docstring. ``ticket``: when set, the ingest loop calls
    :meth:`Connector.acknowledge` with it once the broker has the record (or it failed),
    for sources that must answer their sender (a webhook replies 2xx only then).
    """

    payload: bytes
    origin: str
    fields: Mapping[str, Any] | None = None
    error: str | None = None
    position: Position | None = None
    ticket: Any = None


class Connector(abc.ABC):
    """Base class of source connectors, found by URL scheme (entry-point group
    ``moodwire.connectors``).

    Subclasses implement :meth:`records`; they read their settings from ``self.url``
    and ``self.options`` (the URL's query, plus options given in code) through the
    ``option_*`` helpers, and should call :meth:`check_options` so a typo in an option
    name is an error rather than silently ignored.
    """

    #: Filled by the registry with the scheme the connector was found under.
    scheme: ClassVar[str] = ""
    #: One line for ``moodwire connectors list`` (default: the docstring's first line).
    description: ClassVar[str] = ""
    #: True when the connector resumes from saved cursors (the ingest loop then needs
    #: Postgres to keep them); a file or a generated feed does not.
    resumable: ClassVar[bool] = False

    def __init__(self, url: SplitResult, options: Mapping[str, str]) -> None:
        self.url = url
        self.options = dict(options)
        self._stop = threading.Event()
        #: Saved offsets by source partition, filled by :meth:`resume` before reading.
        self.cursors: dict[str, Offset] = {}

    @abc.abstractmethod
    def records(self) -> Iterator[RawRecord | Position]:
        """Yield records (and bare positions) until the source ends or :meth:`stop`."""

    def resume(self, cursors: Mapping[str, Offset]) -> None:
        """Take the offsets saved by an earlier run (partition -> offset); called once,
        before :meth:`records`. The default keeps them in ``self.cursors``."""
        self.cursors = dict(cursors)

    def acknowledge(self, ticket: Any, error: str | None) -> None:
        """The record that carried ``ticket`` is in the broker (``error`` None) or could
        not be delivered. Called from the producer's I/O thread: do not block."""
        return None

    @property
    def cursor_name(self) -> str:
        """The name its cursors are saved under: scheme, host and path, without the query
        (options such as a filter do not move a source's position)."""
        return f"{self.url.scheme.lower()}://{self.url.netloc}{self.url.path}"

    @classmethod
    def summary(cls) -> str:
        if cls.description:
            return cls.description
        doc = (cls.__doc__ or "").strip()
        module = sys.modules.get(cls.__module__)
        if not doc and module is not None:
            doc = (module.__doc__ or "").strip()
        return doc.splitlines()[0].strip().replace("``", "") if doc else ""

    def __iter__(self) -> Iterator[RawRecord | Position]:
        return self.records()

    @property
    def display_url(self) -> str:
        return self.url.geturl()

    # --- stopping --------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the connector to end soon (from a signal handler or another thread)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep, waking early on :meth:`stop`; True when the connector was stopped."""
        if seconds <= 0:
            return self._stop.is_set()
        return self._stop.wait(seconds)

    def close(self) -> None:
        """Release what the connector holds (files, sockets). Called once, at the end."""
        return None

    def __enter__(self) -> Connector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- options -----------------------------------------------------------------------

    def check_options(self, known: set[str]) -> None:
        unknown = sorted(set(self.options) - known)
        if unknown:
            expected = ", ".join(sorted(known)) or "none"
            raise ConnectorError(
                f"{self.url.scheme}:// does not know option(s) {', '.join(unknown)} "
                f"(known: {expected})"
            )

    def option_str(self, name: str, default: str | None = None) -> str | None:
        value = self.options.get(name)
        return default if value is None or value == "" else value

    def option_float(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self.options.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConnectorError(f"option {name}={raw!r} is not a number") from None
        if not value >= minimum or value == float("inf"):
            raise ConnectorError(f"option {name}={raw!r} must be a finite number >= {minimum:g}")
        return value

    def option_int(self, name: str, default: int | None, *, minimum: int = 0) -> int | None:
        raw = self.options.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConnectorError(f"option {name}={raw!r} is not an integer") from None
        if value < minimum:
            raise ConnectorError(f"option {name}={raw!r} must be >= {minimum}")
        return value
