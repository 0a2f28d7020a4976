"""SASRec: Kang & McAuley 2018, "Self-Attentive Sequential Recommendation" (ICDM).

Mechanism: item embeddings (times sqrt(d)) + learned absolute positions go through causal multi-head
softmax self-attention blocks with point-wise feed-forward layers; the state at position t predicts
item t + 1, scored by a dot product with the same item embedding table.

Interpretations (config flags):
- loss: "ce" full softmax (default; the strong reproductions, e.g. RecBole CE and Klenitskiy &
  Vasilev 2023), "sampled_softmax" with logQ, or "bce" with one negative (the paper).
- norm_first: pre-LN blocks (default) or post-LN (the Transformer of the paper).
- position_from: positions counted from the most recent item ("end", the paper's left-padded
  arrays) or from the oldest item in the window ("start").
- activation: GELU (default) or ReLU (the paper) in the feed-forward layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from recstack.errors import ConfigError
from recstack.nn.attention import TransformerBlock
from recstack.nn.sequence_encoder import CausalSequenceEncoder
from recstack.registry import register
from recstack.retrieval.sequential.common import SequentialConfig, SequentialRetriever


@dataclass
class SASRecConfig(SequentialConfig):
    """dim 64, 2 layers, 2 heads, max_len 50 (Amazon; use 200 for ML-1M), dropout 0.2-0.5."""

    layers: int = 2
    heads: int = 2
    ffn_dim: int | None = None  # None = dim (the paper); 4 * dim is the usual Transformer width
    attn_dropout: float | None = None  # None = dropout
    norm_first: bool = True
    position_from: Literal["end", "start"] = "end"
    activation: Literal["gelu", "relu"] = "gelu"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layers <= 0 or self.heads <= 0:
            raise ConfigError(f"layers and heads must be > 0, got {self.layers} and {self.heads}")
        if self.dim % self.heads:
            raise ConfigError(f"dim {self.dim} must be divisible by heads {self.heads}")


@register("retriever", "sasrec", config=SASRecConfig)
class SASRec(SequentialRetriever):
    name = "sasrec"
    config: SASRecConfig

    def __init__(self, config: SASRecConfig | None = None) -> None:
        super().__init__(config or SASRecConfig())

    def build_encoder(self, num_items: int, use_time: bool) -> CausalSequenceEncoder:
        c = self.config
        attn_dropout = c.dropout if c.attn_dropout is None else c.attn_dropout
        blocks = [
            TransformerBlock(c.dim, c.heads, c.ffn_dim or c.dim, c.dropout, attn_dropout, c.norm_first, c.activation)
            for _ in range(c.layers)
        ]
        return CausalSequenceEncoder(
            num_items,
            c.dim,
            c.max_len,
            blocks,
            c.dropout,
            "learned",
            c.position_from,
            c.scale_embedding,
            final_norm=True,
            init_std=c.init_std,
        )
