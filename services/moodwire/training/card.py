"""The model card ``README.md``: a generated block of numbers inside hand-written prose.

Only the text between the two markers is rewritten (by ``moodwire model train`` and
``moodwire model eval``); everything around it (design, intended use, limits) is kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moodwire.model import artifact
from moodwire.model.labels import LABELS

BEGIN = "<!-- numbers:begin (written by `moodwire model eval`; edits here are overwritten) -->"
END = "<!-- numbers:end -->"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _split_table(name: str, r: dict[str, Any]) -> list[str]:
    lines = [
        f"### {name} ({r['n']} tweets)",
        "",
        f"macro-recall **{_pct(r['macro_recall'])}** · accuracy {_pct(r['accuracy'])} · "
        f"macro-F1 {_pct(r['macro_f1'])} · ECE {r['ece']:.4f}",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    for i, label in enumerate(LABELS):
        lines.append(
            f"| {label} | {_pct(r['precision'][i])} | {_pct(r['recall'][i])} | "
            f"{_pct(r['f1'][i])} | {r['support'][i]} |"
        )
    lines += ["", "Confusion matrix (rows: true, columns: predicted):", ""]
    lines += ["| true \\ pred | " + " | ".join(LABELS) + " |", "|---|---:|---:|---:|"]
    for i, label in enumerate(LABELS):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in r["confusion"][i]) + " |")
    return [*lines, ""]


def render_numbers(model_dir: Path) -> str:
    config = json.loads((model_dir / artifact.CONFIG).read_text())
    train = config.get("train", {})
    lines = [
        BEGIN,
        "",
        f"Model version: `{artifact.model_version(model_dir)}`",
        "",
        f"- architecture: word embedding ({config.get('embedding_dim', 384)}-d) -> "
        f"{'bidirectional ' if config.get('directions') == 2 else ''}GRU, hidden "
        f"{config.get('hidden')} -> max+mean pooling -> dense softmax (3 classes)",
        f"- vocabulary: {config.get('vocab_size')} tokens; temperature "
        f"{config.get('temperature', 1.0):.2f} (fitted on "
        f"{' + '.join(train.get('select') or ['val'])})",
        f"- training: {config.get('train_rows')} tweets, best epoch {config.get('best_epoch')}, "
        f"{config.get('train_seconds')} s on this machine, torch {config.get('torch')}",
        "- settings: " + ", ".join(f"{k}={v}" for k, v in sorted(train.items())),
        "",
        "| epoch | train loss | val macro-recall |",
        "|---:|---:|---:|",
    ]
    for h in config.get("history", []):
        lines.append(f"| {h['epoch']} | {h['loss']:.4f} | {_pct(h['val_macro_recall'])} |")
    lines.append("")
    eval_file = model_dir / artifact.EVAL
    if eval_file.is_file():
        record = json.loads(eval_file.read_text())
        lines += [f"## Evaluation ({record['evaluated_at']})", ""]
        for name, r in record["splits"].items():
            lines += _split_table(name, r)
    lines.append(END)
    return "\n".join(lines)


def write(model_dir: Path) -> Path:
    path = model_dir / artifact.CARD
    numbers = render_numbers(model_dir)
    old = path.read_text() if path.is_file() else f"# {model_dir.name}\n\n{BEGIN}\n{END}\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + numbers + tail
    else:
        text = old.rstrip() + "\n\n" + numbers + "\n"
    path.write_text(text)
    return path
