"""TIGER: Rajput et al. 2023, "Recommender Systems with Generative Retrieval" (NeurIPS; METHODS.md §1.4).

Mechanism: every history item is written as its semantic ID (C codes, each level with its own
tokens); a Transformer encoder reads the history tokens (plus a hashed user token); a decoder with
causal self-attention and cross-attention to the encoder emits the next item's code tuple one code
at a time, trained with next-token cross-entropy; retrieval is trie-constrained beam search.
Paper defaults: 4 + 4 layers, 6 heads of width 64, model width 128, FFN 1024, dropout 0.1, user ids
hashed into 2,000 tokens, up to 20 history items.

Interpretations (config flags):
- positions: T5's relative position bias is replaced by learned embeddings of the item's distance
  from the most recent item plus a level embedding per code (`positions: "learned"`).
- norms: pre-LN LayerNorm blocks (T5 uses RMSNorm, also pre-norm); activation ReLU (T5 v1.0).
- tie_embeddings: decoder input and output share the encoder's code-token table (T5 ties them).
- user_hash: user token = a fixed multiplicative hash of the user id mod user_buckets (0 = no token;
  a learned "start" token then keeps the memory non-empty).
- training: AdamW + warm-up + cosine from the shared Trainer (the paper: Adagrad-style lr 0.01, inverse
  square-root decay, 200k steps); samples = every train prefix (`train_targets: "all"`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from recstack.errors import ConfigError
from recstack.nn.transformer import DecoderLayer, EncoderLayer
from recstack.registry import register
from recstack.retrieval.generative.base import (DecodeState, GenerativeConfig, GenerativeModel, GenerativeRetriever,
                                                ModelShape)


@dataclass
class TigerConfig(GenerativeConfig):
    dim: int = 128
    heads: int = 6
    head_dim: int = 64
    ffn_dim: int = 1024
    encoder_layers: int = 4
    decoder_layers: int = 4
    dropout: float = 0.1
    activation: Literal["relu", "gelu"] = "relu"
    user_buckets: int = 2000
    tie_embeddings: bool = True
    positions: Literal["learned", "none"] = "learned"
    init_std: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("dim", "heads", "head_dim", "ffn_dim", "encoder_layers", "decoder_layers"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)!r}")
        if self.user_buckets < 0:
            raise ConfigError(f"user_buckets must be >= 0, got {self.user_buckets!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")


class TigerModel(GenerativeModel):
    """Encoder over history code tokens [B, T*C (+1)] -> memory; decoder over [BOS, c_0 .. c_{C-2}]."""

    def __init__(self, config: TigerConfig, shape: ModelShape) -> None:
        super().__init__(shape.codebook_sizes)
        c = self.config = config
        sizes = torch.tensor(self.codebook_sizes)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)  # level -> first token
        # vocab_level[v]: the level of token v (masks other levels' tokens in the tied output)
        self.register_buffer("vocab_level", torch.repeat_interleave(torch.arange(len(sizes)), sizes), persistent=False)
        vocab = int(sizes.sum())
        self.tokens = nn.Embedding(vocab, c.dim)
        self.level = nn.Embedding(self.levels, c.dim)                 # encoder: level of each code
        self.distance = nn.Embedding(c.max_len, c.dim)                # encoder: items back from the latest
        self.context = nn.Embedding(max(c.user_buckets, 1), c.dim)    # user bucket (or one start token)
        self.dec_pos = nn.Embedding(self.levels, c.dim)               # decoder position 0..C-1
        self.bos = nn.Parameter(torch.zeros(c.dim))
        self.output = self.tokens if c.tie_embeddings else nn.Embedding(vocab, c.dim)
        self.encoder = nn.ModuleList(EncoderLayer(c.dim, c.heads, c.head_dim, c.ffn_dim, c.dropout, c.activation)
                                     for _ in range(c.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(c.dim, c.heads, c.head_dim, c.ffn_dim, c.dropout, c.activation)
                                     for _ in range(c.decoder_layers))
        self.enc_norm, self.dec_norm = nn.LayerNorm(c.dim), nn.LayerNorm(c.dim)
        self.drop = nn.Dropout(c.dropout)
        for table in (self.tokens, self.level, self.distance, self.context, self.dec_pos, self.output):
            nn.init.normal_(table.weight, std=c.init_std)

    # ---- encoder -----------------------------------------------------------------------------------
    def user_token(self, users: torch.Tensor) -> torch.Tensor:
        if self.config.user_buckets == 0:
            return torch.zeros_like(users)
        return (users * 2654435761) % 2**32 % self.config.user_buckets  # Knuth's multiplicative hash

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> memory [B, 1 + T*C, D], memory_mask [B, 1 + T*C] (the context token always valid)."""
        codes, valid = batch["history_codes"], batch["history_mask"]
        b, t, levels = codes.shape
        x = self.tokens(codes + self.offsets) + self.level.weight  # [B, T, C, D]
        if self.config.positions == "learned":
            x = x + self.distance(torch.arange(t - 1, -1, -1, device=codes.device).clamp_max(self.config.max_len - 1)
                                  )[None, :, None]
        x = torch.cat([self.context(self.user_token(batch["users"]))[:, None], x.reshape(b, t * levels, -1)], 1)
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=codes.device),
                          valid.repeat_interleave(levels, 1)], 1)
        x = self.drop(x)
        attend = mask[:, None, :]  # [B, 1, S] key mask; the context token keeps every query's row non-empty
        for layer in self.encoder:
            x = layer(x, attend)
        return self.enc_norm(x), mask

    # ---- decoder -----------------------------------------------------------------------------------
    def decoder_inputs(self, prefix: torch.Tensor, start: int) -> torch.Tensor:
        """Embeddings of decoder positions start..l for prefix [R, l]: BOS, then code j at position j + 1."""
        r, l = prefix.shape
        tokens = self.tokens(prefix + self.offsets[:l]) if l else self.bos.new_zeros(r, 0, self.bos.numel())
        x = torch.cat([self.bos.expand(r, 1, -1), tokens], 1)[:, start:]
        return self.drop(x + self.dec_pos.weight[start:l + 1])

    def decode(self, x: torch.Tensor, per_user: dict, past: list | None) -> tuple[torch.Tensor, list]:
        present = []
        for i, layer in enumerate(self.decoder):
            x, kv = layer(x, per_user["memory_kv"][i], per_user["memory_mask"], None if past is None else past[i])
            present.append(kv)
        return self.dec_norm(x), present

    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        """hidden [R, D] -> [R, codebook_sizes[level]] logits over that level's tokens."""
        lo = int(self.offsets[level])
        return hidden @ self.output.weight[lo:lo + self.codebook_sizes[level]].T

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        memory, mask = self.encode(batch)
        per_user = {"memory_kv": [layer.memory_kv(memory) for layer in self.decoder], "memory_mask": mask}
        target = batch["target_codes"]  # [B, C]
        hidden, _ = self.decode(self.decoder_inputs(target[:, :-1], 0), per_user, None)  # [B, C, D]
        logits = hidden @ self.output.weight.T  # [B, C, V]; other levels' tokens masked below
        other = self.vocab_level[None, :] != torch.arange(self.levels, device=logits.device)[:, None]
        logits = logits.masked_fill(other, float("-inf"))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), (target + self.offsets).reshape(-1))
        return {"loss": loss * self.levels}  # summed over levels, averaged over rows

    def begin(self, batch: dict[str, torch.Tensor]) -> DecodeState:
        memory, mask = self.encode(batch)
        return {"per_user": {"memory_kv": [layer.memory_kv(memory) for layer in self.decoder], "memory_mask": mask},
                "past": None}

    def step(self, state: DecodeState, prefix: torch.Tensor, use_cache: bool = True
             ) -> tuple[torch.Tensor, DecodeState]:
        level = prefix.shape[1]
        if use_cache:
            hidden, past = self.decode(self.decoder_inputs(prefix, level), state["per_user"], state["past"])
        else:  # reference path: the whole prefix again
            hidden, past = self.decode(self.decoder_inputs(prefix, 0), state["per_user"], None)
        log_probs = F.log_softmax(self.level_logits(hidden[:, -1], level).float(), dim=-1)
        return log_probs, {"per_user": state["per_user"], "past": past if use_cache else None}


@register("retriever", "tiger", config=TigerConfig)
class Tiger(GenerativeRetriever):
    name = "tiger"
    config: TigerConfig

    def __init__(self, config: TigerConfig | None = None) -> None:
        super().__init__(config or TigerConfig())

    def build_model(self, shape: ModelShape) -> TigerModel:
        return TigerModel(self.config, shape)
