"""HSTU: Zhai et al. 2024, "Actions Speak Louder than Words: Trillion-Parameter Sequential
Transducers for Generative Recommendations" (ICML), as a sequential U2I retriever (METHODS.md §1.2).

Mechanism: each layer computes U, V, Q, K = split(SiLU(f1(X))), pointwise attention
A = SiLU(Q Kᵀ + rab) / N under a causal mask (no softmax), and Y = f2(LayerNorm(A V) ⊙ U) + X;
rab is a learned relative bias over position buckets and log-bucketed time gaps |t_i - t_j|.
The last state · the (tied) item table scores every item.

Interpretations (config flags):
- normalization: N = padded length "max_len" (Meta's code), the user's "length", or per-query "causal".
- position_bias / time_bias: the two parts of rab; the time part is switched off automatically
  when the dataset has order-only timestamps (`timestamp_kind == "order"`).
- input_norm: LayerNorm before f1 (Meta's code); absolute learned positions at the input (Meta's
  code; `absolute_positions`).
- l2_normalize + temperature: cosine scores / 0.05 as in Meta's ML-1M configs.
- loss: "ce" full softmax (default) or "sampled_softmax" (Meta's code, 128 negatives) or "bce".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError
from recstack.nn.hstu import HSTUBlock
from recstack.nn.positional import RelativeAttentionBias
from recstack.nn.sequence_encoder import CausalSequenceEncoder
from recstack.registry import register
from recstack.retrieval.sequential.common import SequentialConfig, SequentialRetriever


@dataclass
class HSTUConfig(SequentialConfig):
    """Meta's ML-1M "HSTU" row: 2 layers, 1 head, Dqk = Dv = 25 at dim 50; here dim 64, Dqk = Dv = 32."""

    layers: int = 2
    heads: int = 1
    attention_dim: int = 32  # Q, K width per head
    linear_dim: int = 32  # U, V width per head
    attn_dropout: float = 0.0
    normalization: Literal["max_len", "length", "causal"] = "max_len"
    position_bias: bool = True
    time_bias: bool = True
    num_time_buckets: int = 128
    time_bucket_scale: float = 0.301  # bucket = floor(ln(gap) / scale), Meta's divisor
    input_norm: bool = True
    absolute_positions: bool = True
    final_norm: bool = False
    alpha: float = 1.0  # logit scale before the SiLU
    l2_normalize: bool = True
    temperature: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("layers", "heads", "attention_dim", "linear_dim", "num_time_buckets"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)!r}")


@register("retriever", "hstu", config=HSTUConfig)
class HSTU(SequentialRetriever):
    name = "hstu"
    config: HSTUConfig

    def __init__(self, config: HSTUConfig | None = None) -> None:
        super().__init__(config or HSTUConfig())

    def wants_time(self, dataset: Dataset) -> bool:
        return self.config.time_bias and dataset.meta.get("timestamp_kind") != "order"

    def build_encoder(self, num_items: int, use_time: bool) -> CausalSequenceEncoder:
        c = self.config
        blocks = [
            HSTUBlock(
                c.dim,
                c.heads,
                c.attention_dim,
                c.linear_dim,
                c.dropout,
                c.attn_dropout,
                c.normalization,
                c.input_norm,
                c.alpha,
                c.max_len,
            )
            for _ in range(c.layers)
        ]
        bias = None
        if c.position_bias or use_time:
            bias = RelativeAttentionBias(c.max_len, c.num_time_buckets, c.position_bias, use_time, c.time_bucket_scale)
        return CausalSequenceEncoder(
            num_items,
            c.dim,
            c.max_len,
            blocks,
            c.dropout,
            "learned" if c.absolute_positions else "none",
            "end",
            c.scale_embedding,
            c.final_norm,
            bias,
            c.init_std,
        )
