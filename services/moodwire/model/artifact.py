"""The on-disk model: ``weights.safetensors`` + ``vocab.txt`` + ``config.json`` (+ card).

Only the folded serving tensors are stored (see ``network.fold``); the per-token input
table is kept in float16 to fit the 20 MB budget and widened to float32 on load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

# The model shipped in the repo (services/moodwire/model/artifact.py -> repo root), the
# same directory as ``moodwire.settings.DEFAULT_MODEL_DIR``, which may not import this.
SHIPPED_MODEL_DIR = Path(__file__).resolve().parents[3] / "models" / "moodwire-gru"

WEIGHTS = "weights.safetensors"
VOCAB = "vocab.txt"
CONFIG = "config.json"
CARD = "README.md"
EVAL = "eval.json"  # outside the model-version hash: evaluating must not change the model
MODEL_NAME = "moodwire-gru"
MODEL_SEMVER = "1.2.0"
_HALF = ("gates_x",)


@dataclass
class Artifact:
    tensors: dict[str, torch.Tensor]
    vocab: list[str]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def temperature(self) -> float:
        return float(self.config.get("temperature", 1.0))


def save(artifact: Artifact, out_dir: Path) -> str:
    """Write the model files; returns the model version string."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.to(torch.float16) if k in _HALF else v.to(torch.float32)).contiguous()
        for k, v in artifact.tensors.items()
    }
    save_file(tensors, str(out_dir / WEIGHTS))
    (out_dir / WEIGHTS).chmod(0o644)  # safetensors writes 0600; the model is shipped
    (out_dir / VOCAB).write_text("\n".join(artifact.vocab) + "\n", encoding="utf-8")
    config = {"name": MODEL_NAME, "semver": MODEL_SEMVER, **artifact.config}
    (out_dir / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return model_version(out_dir)


def load(model_dir: Path) -> Artifact:
    if not (model_dir / WEIGHTS).is_file():
        raise FileNotFoundError(f"no model at {model_dir} (missing {WEIGHTS})")
    tensors = {k: v.to(torch.float32) for k, v in load_file(str(model_dir / WEIGHTS)).items()}
    vocab = (model_dir / VOCAB).read_text(encoding="utf-8").split("\n")
    if vocab and vocab[-1] == "":
        vocab.pop()
    config = json.loads((model_dir / CONFIG).read_text())
    return Artifact(tensors, vocab, config)


# The config keys that change a score; the rest (history, timings) is documentation.
SERVING_KEYS = ("name", "semver", "temperature", "subwords", "hashtags")


def model_version(model_dir: Path) -> str:
    """``<name>-<semver>+<8 hex>``: a content hash of everything that changes a score, so
    a bit-identical retraining gets the same version."""
    config = json.loads((model_dir / CONFIG).read_text())
    digest = hashlib.sha256()
    for name in (WEIGHTS, VOCAB):
        digest.update((model_dir / name).read_bytes())
    # A key a model's config lacks is left out, so adding keys keeps older versions.
    serving = {k: config[k] for k in SERVING_KEYS if k in config}
    digest.update(json.dumps(serving, sort_keys=True).encode())
    name = config.get("name", MODEL_NAME)
    return f"{name}-{config.get('semver', MODEL_SEMVER)}+{digest.hexdigest()[:8]}"
