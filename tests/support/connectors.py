"""Narrowing what a connector yields, for connectors that never yield bare positions (a file,
demo://, a test's own): a bare position or an edit there is a test failure, not a skip."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from moodwire.connectors import Position, RawRecord
from moodwire.records import Post, PostChange


def raw_records(items: Iterable[RawRecord | Position]) -> Iterator[RawRecord]:
    """``items`` one by one (lazily, so records read before an error stay read), each
    asserted to be a record."""
    for item in items:
        assert isinstance(item, RawRecord), f"a bare position where a record was due: {item}"
        yield item


def as_post(change: Post | PostChange) -> Post:
    """A validated record that must be a new post, not an edit or a delete of one."""
    assert isinstance(change, Post), f"an edit or delete where a post was due: {change}"
    return change
