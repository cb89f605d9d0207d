"""Moved: the aggregates' key layout, writer, reader and rebuild live in
``moodwire.aggregates``. These names stay importable from here for code not yet moved."""

from __future__ import annotations

from moodwire.aggregates.keys import (
    ALL_BRANDS,
    NO_BRAND,
    Bucket,
    as_text,
    brand_keys,
    bucket_from_hash,
)

__all__ = ["ALL_BRANDS", "NO_BRAND", "Bucket", "as_text", "brand_keys", "bucket_from_hash"]
