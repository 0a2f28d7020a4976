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
- encoder_attention: "bidirectional" (the paper) or "causal": a history token sees the tokens of its
  own and earlier items only, so one encoder pass serves every prefix of a window and training reads
  a window's targets together (`train_targets: "sequence"`, several times cheaper per epoch on CPU;
  positions then count items from the oldest kept one, since "distance from the latest item" depends
  on which prefix is read). Decoding is unchanged: the last item's prefix is the whole history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from recstack.errors import ConfigError
from recstack.nn.transformer import DecoderLayer, EncoderLayer
from recstack.registry import register
from recstack.retrieval.generative.base import DecodeState, GenerativeConfig, GenerativeModel, ModelShape
from recstack.retrieval.generative.retriever import GenerativeRetriever


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
    encoder_attention: Literal["bidirectional", "causal"] = "bidirectional"
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
        if self.encoder_attention not in ("bidirectional", "causal"):
            raise ConfigError(f"encoder_attention must be 'bidirectional' or 'causal', got {self.encoder_attention!r}")
        if self.train_targets == "sequence" and self.encoder_attention != "causal":
            raise ConfigError(
                "train_targets 'sequence' reads every prefix from one encoder pass, which needs "
                "encoder_attention: causal"
            )


class TigerModel(GenerativeModel):
    """Encoder over history code tokens [B, T*C (+1)] -> memory; decoder over [BOS, c_0 .. c_{C-2}]."""

    offsets: torch.Tensor  # buffers
    vocab_level: torch.Tensor

    def __init__(self, config: TigerConfig, shape: ModelShape) -> None:
        super().__init__(shape.codebook_sizes)
        c = self.config = config
        sizes = torch.tensor(self.codebook_sizes)
        self.register_buffer("offsets", torch.cumsum(sizes, 0) - sizes, persistent=False)  # level -> first token
        # vocab_level[v]: the level of token v (masks other levels' tokens in the tied output)
        self.register_buffer("vocab_level", torch.repeat_interleave(torch.arange(len(sizes)), sizes), persistent=False)
        vocab = int(sizes.sum())
        self.tokens = nn.Embedding(vocab, c.dim)
        self.level = nn.Embedding(self.levels, c.dim)  # encoder: level of each code
        self.distance = nn.Embedding(c.max_len, c.dim)  # encoder: items back from the latest
        self.context = nn.Embedding(max(c.user_buckets, 1), c.dim)  # user bucket (or one start token)
        self.dec_pos = nn.Embedding(self.levels, c.dim)  # decoder position 0..C-1
        self.bos = nn.Parameter(torch.zeros(c.dim))
        self.output = self.tokens if c.tie_embeddings else nn.Embedding(vocab, c.dim)
        self.encoder = nn.ModuleList(
            EncoderLayer(c.dim, c.heads, c.head_dim, c.ffn_dim, c.dropout, c.activation)
            for _ in range(c.encoder_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderLayer(c.dim, c.heads, c.head_dim, c.ffn_dim, c.dropout, c.activation)
            for _ in range(c.decoder_layers)
        )
        self.enc_norm, self.dec_norm = nn.LayerNorm(c.dim), nn.LayerNorm(c.dim)
        self.drop = nn.Dropout(c.dropout)
        for table in (self.tokens, self.level, self.distance, self.context, self.dec_pos, self.output):
            nn.init.normal_(table.weight, std=c.init_std)

    # ---- encoder -----------------------------------------------------------------------------------
    def user_token(self, users: torch.Tensor) -> torch.Tensor:
        if self.config.user_buckets == 0:
            return torch.zeros_like(users)
        return (users * 2654435761) % 2**32 % self.config.user_buckets  # Knuth's multiplicative hash

    @property
    def sequence_targets(self) -> bool:
        return self.config.encoder_attention == "causal"

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> memory [B, 1 + T*C, D], memory_mask [B, 1 + T*C] (the context token always valid)."""
        codes, valid = batch["history_codes"], batch["history_mask"]
        b, t, levels = codes.shape
        causal = self.config.encoder_attention == "causal"
        x = self.tokens(codes + self.offsets) + self.level.weight  # [B, T, C, D]
        if self.config.positions == "learned":
            if causal:  # items counted from the oldest kept one (padding sits on the left)
                position = (valid.long().cumsum(1) - 1).clamp(0, self.config.max_len - 1)  # [B, T]
            else:  # items back from the latest
                position = torch.arange(t - 1, -1, -1, device=codes.device).clamp_max(self.config.max_len - 1)
            x = x + self.distance(position).unsqueeze(-2)
        x = torch.cat([self.context(self.user_token(batch["users"]))[:, None], x.reshape(b, t * levels, -1)], 1)
        mask = torch.cat(
            [torch.ones(b, 1, dtype=torch.bool, device=codes.device), valid.repeat_interleave(levels, 1)], 1
        )
        x = self.drop(x)
        # [B, 1 | S, S] key mask; the context token keeps every query's row non-empty
        attend = mask[:, None, :] & self.item_causal_mask(t, codes.device) if causal else mask[:, None, :]
        for layer in self.encoder:
            x = layer(x, attend)
        return self.enc_norm(x), mask

    def memory_items(self, t: int, device: torch.device) -> torch.Tensor:
        """[S] history column of each memory token, S = 1 + T*C (the context token: -1)."""
        return torch.cat(
            [torch.tensor([-1], device=device), torch.arange(t, device=device).repeat_interleave(self.levels)]
        )

    def item_causal_mask(self, t: int, device: torch.device) -> torch.Tensor:
        """[S, S] bool: query token q may see key k iff k's item is not later than q's (so every token sees
        the context token, which as a query sees only itself)."""
        item = self.memory_items(t, device)
        return item[None, :] <= item[:, None]

    def prefix_memory_mask(self, memory_mask: torch.Tensor) -> torch.Tensor:
        """memory_mask [B, S] -> [B, T*C, S]: the C decoder queries of target t (the item after history
        column t) see the context token and history items 0..t."""
        t = (memory_mask.shape[1] - 1) // self.levels
        visible = (
            self.memory_items(t, memory_mask.device)[None, :] <= torch.arange(t, device=memory_mask.device)[:, None]
        )  # [T, S]
        return (memory_mask[:, None, :] & visible).repeat_interleave(self.levels, 1)

    # ---- decoder -----------------------------------------------------------------------------------
    def decoder_inputs(self, prefix: torch.Tensor, start: int) -> torch.Tensor:
        """Embeddings of decoder positions start..l for prefix [R, l]: BOS, then code j at position j + 1."""
        r, l = prefix.shape
        tokens = self.tokens(prefix + self.offsets[:l]) if l else self.bos.new_zeros(r, 0, self.bos.numel())
        x = torch.cat([self.bos.expand(r, 1, -1), tokens], 1)[:, start:]
        return self.drop(x + self.dec_pos.weight[start : l + 1])

    def decode(self, x: torch.Tensor, per_user: dict, past: list | None) -> tuple[torch.Tensor, list]:
        present = []
        for i, layer in enumerate(self.decoder):
            x, kv = layer(x, per_user["memory_kv"][i], per_user["memory_mask"], None if past is None else past[i])
            present.append(kv)
        return self.dec_norm(x), present

    def level_logits(self, hidden: torch.Tensor, level: int) -> torch.Tensor:
        """hidden [R, D] -> [R, codebook_sizes[level]] logits over that level's tokens."""
        lo = int(self.offsets[level])
        return hidden @ self.output.weight[lo : lo + self.codebook_sizes[level]].T

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        memory, mask = self.encode(batch)
        target = batch["target_codes"]  # [B, C], or [B, T, C] with train_targets "sequence"
        per_target = target.dim() == 3
        if per_target:  # R = B*T rows: target t's decoder cross-attends to history items 0..t only
            if not self.sequence_targets:
                raise ConfigError("per-column targets (train_targets 'sequence') need encoder_attention: causal")
            memory_mask, target = self.prefix_memory_mask(mask), target.reshape(-1, self.levels)
        else:
            memory_mask = mask
        memory_kv = [cast(DecoderLayer, layer).memory_kv(memory) for layer in self.decoder]
        per_user = {"memory_kv": memory_kv, "memory_mask": memory_mask}
        hidden, _ = self.decode(self.decoder_inputs(target[:, :-1], 0), per_user, None)  # [R, C, D]
        logits = hidden @ self.output.weight.T  # [R, C, V]; other levels' tokens masked below
        other = self.vocab_level[None, :] != torch.arange(self.levels, device=logits.device)[:, None]
        logits = logits.masked_fill(other, float("-inf"))
        losses = (
            F.cross_entropy(logits.reshape(-1, logits.shape[-1]), (target + self.offsets).reshape(-1), reduction="none")
            .view(-1, self.levels)
            .sum(1)
        )  # [R] summed over levels
        if per_target:  # sum over real targets / the expected count, as the sequential retrievers do
            real = batch["target_items"].reshape(-1) > 0
            return {"loss": (losses * real).sum() / batch["target_count"]}
        return {"loss": losses.mean()}

    def begin(self, batch: dict[str, torch.Tensor]) -> DecodeState:
        memory, mask = self.encode(batch)
        return {
            "per_user": {
                "memory_kv": [cast(DecoderLayer, layer).memory_kv(memory) for layer in self.decoder],
                "memory_mask": mask,
            },
            "past": None,
        }

    def step(
        self, state: DecodeState, prefix: torch.Tensor, use_cache: bool = True
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
