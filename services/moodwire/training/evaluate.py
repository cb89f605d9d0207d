"""Scoring a saved model on TweetEval splits; results go to ``eval.json`` and the card."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from moodwire.model import artifact
from moodwire.model.engine import InferenceEngine
from moodwire.training import card, data, metrics


def evaluate(
    model_dir: Path, data_dir: Path, splits: tuple[str, ...] = ("val", "test")
) -> dict[str, metrics.Report]:
    engine = InferenceEngine.load(model_dir, device="cpu")
    reports: dict[str, metrics.Report] = {}
    for name in splits:
        split = data.load_split(data_dir, name)
        reports[name] = metrics.report(engine.predict(split.texts), split.labels)
    record: dict[str, Any] = {
        "model_version": engine.model_version,
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "splits": {name: asdict(r) for name, r in reports.items()},
    }
    (model_dir / artifact.EVAL).write_text(json.dumps(record, indent=2) + "\n")
    card.write(model_dir)
    return reports
