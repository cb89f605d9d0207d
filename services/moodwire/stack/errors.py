"""The one error the local stack raises (a single line naming the cause and the fix), and
the helpers that keep the causes it quotes to one line."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import make_url


class StackError(RuntimeError):
    """Starting or stopping a local server failed; ``str(err)`` is meant for the user."""


def redact_url(url: str) -> str:
    """A database URL fit for an error message: its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable URL>"


def first_line(err: BaseException) -> str:
    """The first line of an error's message (clipped), for one-line messages."""
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def mask_password(url: str) -> str:
    """Any server URL (database, Redis, broker) with its password shown as ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.netloc.rsplit("@", 1)[0].split(":", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
    except ValueError:
        return "<unparseable URL>"
