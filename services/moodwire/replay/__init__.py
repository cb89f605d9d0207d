"""Replay of what the pipeline already holds: re-scoring stored posts with another model.

Backfill of a historical feed needs nothing here: ``moodwire ingest file://feed.jsonl
--speed 0`` through the normal processor puts every post in the minute of its own
``created_at``. ``rescore`` scores the posts already in Postgres again under a new model
version, writing rows and Redis aggregates exactly once (see ``rescore``'s docstring).
"""
