"""Fixtures of the model tests: the shipped engine (``data_dir`` is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from moodwire.model.engine import InferenceEngine
from moodwire.settings import DEFAULT_MODEL_DIR


@pytest.fixture(scope="session")
def engine() -> InferenceEngine:
    if not (DEFAULT_MODEL_DIR / "weights.safetensors").is_file():
        pytest.fail(f"the shipped model is missing from {DEFAULT_MODEL_DIR}")
    return InferenceEngine.load(device="cpu", threads=2)
