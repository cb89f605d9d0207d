"""The trainable network: embedding -> (Bi)GRU -> max+mean pooling -> dense softmax.

Training uses torch's own ``nn.GRU`` over padded, packed batches. Serving uses the same
weights folded (see ``fold``): the input half of every GRU gate depends on the token alone,
so ``W_ih @ embedding[token] + b_ih`` is precomputed once per vocabulary entry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


@dataclass(frozen=True)
class NetConfig:
    vocab_size: int
    embedding_dim: int = 384
    hidden: int = 64
    bidirectional: bool = True
    dropout: float = 0.3
    token_dim: int = 0  # >0: a per-token Linear+GELU layer before the GRU (folded away too)

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class GRUClassifier(nn.Module):
    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=0)
        self.embedding_dropout = nn.Dropout(config.dropout)
        gru_input = config.embedding_dim
        self.token_layer: nn.Module = nn.Identity()
        if config.token_dim > 0:
            self.token_layer = nn.Sequential(
                nn.Linear(config.embedding_dim, config.token_dim), nn.GELU()
            )
            gru_input = config.token_dim
        self.gru = nn.GRU(
            gru_input,
            config.hidden,
            batch_first=True,
            bidirectional=config.bidirectional,
        )
        self.head_dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * config.directions * config.hidden, 3)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (B, 3) of padded ids (B, T) with true lengths (B,) >= 1."""
        x = self.token_layer(self.embedding_dropout(self.embedding(ids)))
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
        pooled_max = out.masked_fill(~mask, -2.0).amax(dim=1)
        pooled_mean = out.sum(dim=1) / lengths[:, None].to(out.dtype)
        logits: torch.Tensor = self.head(
            self.head_dropout(torch.cat([pooled_max, pooled_mean], dim=1))
        )
        return logits


def fold(model: GRUClassifier) -> dict[str, torch.Tensor]:
    """The serving tensors: exactly the same function as ``model`` in eval mode.

    ``gates_x`` [D, V, 3H] = embedding @ W_ih^T + b_ih per direction (gate order r, z, n,
    as in ``nn.GRU``); ``w_hh`` [D, H, 3H]; ``b_hh`` [D, 1, 3H]; the head as is.
    """
    gru = model.gru
    suffixes = ["", "_reverse"][: model.config.directions]
    model.eval()
    with torch.no_grad():
        emb = model.token_layer(model.embedding.weight)
        gates_x = torch.stack(
            [
                emb @ getattr(gru, f"weight_ih_l0{s}").T + getattr(gru, f"bias_ih_l0{s}")
                for s in suffixes
            ]
        )
        w_hh = torch.stack([getattr(gru, f"weight_hh_l0{s}").T for s in suffixes])
        b_hh = torch.stack([getattr(gru, f"bias_hh_l0{s}")[None, :] for s in suffixes])
    return {
        "gates_x": gates_x.contiguous(),
        "w_hh": w_hh.contiguous(),
        "b_hh": b_hh.contiguous(),
        "head_weight": model.head.weight.detach().clone(),
        "head_bias": model.head.bias.detach().clone(),
    }
