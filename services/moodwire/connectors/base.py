"""What a source connector is: built from a URL, it yields raw records with their origin.

A connector only reads; validation, dead letters and Kafka are the ingest loop's job, so
a third-party connector stays a few lines long (see the README, "Writing a connector").
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar
from urllib.parse import SplitResult


class ConnectorError(ValueError):
    """A connector URL or option that cannot work; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as the source gave it, before validation.

    ``payload`` is the record's original bytes (what a dead letter keeps). When the
    connector already parsed the record (a CSV row, a generated post), ``fields`` holds
    it and the payload is only kept for the dead letter; otherwise ``payload`` is the
    JSON of one post. ``error`` marks a record the connector already knows is bad (a
    CSV row with the wrong number of fields), with the reason.
    """

    payload: bytes
    origin: str
    fields: Mapping[str, Any] | None = None
    error: str | None = None


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

    def __init__(self, url: SplitResult, options: Mapping[str, str]) -> None:
        self.url = url
        self.options = dict(options)
        self._stop = threading.Event()

    @abc.abstractmethod
    def records(self) -> Iterator[RawRecord]:
        """Yield records until the source ends or :meth:`stop` is called."""

    def __iter__(self) -> Iterator[RawRecord]:
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
