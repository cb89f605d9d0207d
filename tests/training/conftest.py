"""Fixtures of the training tests: the shared data dir (skip when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from moodwire.training.data import TWEETEVAL, default_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = default_data_dir()
    if not (path / TWEETEVAL).is_dir():
        pytest.skip(f"shared data not found at {path} (set MOODWIRE_DATA_DIR)")
    return path
