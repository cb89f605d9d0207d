"""Fixtures of the model tests: the shared data dir (skip when absent), the shipped engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from moodwire.model.engine import InferenceEngine
from moodwire.settings import DEFAULT_MODEL_DIR
from moodwire.training.data import TWEETEVAL, default_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = default_data_dir()
    if not (path / TWEETEVAL).is_dir():
        pytest.skip(f"shared data not found at {path} (set MOODWIRE_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def engine() -> InferenceEngine:
    if not (DEFAULT_MODEL_DIR / "weights.safetensors").is_file():
        pytest.fail(f"the shipped model is missing from {DEFAULT_MODEL_DIR}")
    return InferenceEngine.load(device="cpu", threads=2)
