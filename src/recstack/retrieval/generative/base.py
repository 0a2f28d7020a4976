"""Generative retrieval over semantic IDs: the model interface and the shared config.

A generative retriever writes the next item's semantic ID (its code tuple, SemanticIds.codes row:
C = L + 1 codes including the de-duplication level) one code at a time and decodes with a beam
search constrained by the SemanticIds prefix trie (beam_search.py), so every returned tuple is an item.

The batch dict (data.py builds it for training; `GenerativeRetriever.decode_batch` (retriever.py) for retrieval).
Rows are right-aligned: the most recent history item sits in column T-1, padding on the left.
    "history_items"  [B, T] long   item ids, 0 = padding.
    "history_codes"  [B, T, C] long codes of those items (SemanticIds.codes rows); padding rows are all
                     0, which is also a real code: always read them together with "history_mask".
    "history_mask"   [B, T] bool   True = a real history item.
    "history_events" [B, T] long   behaviour type per history item: 0 = padding or a plain interaction
                     (no behaviour label), e >= 1 = behaviour e (GenerativeData.event_names[e - 1]);
                     see data.py for how labels map to codes.
    "users"          [B] long      user ids (0 = unknown user).
    "target_items"   [B] long      the item to predict (training only; [B, T] with train_targets
                     "sequence": the item after each history column, 0 = none).
    "target_codes"   [B, C] long   its code tuple (training only; [B, T, C] with "sequence").
    "target_count"   scalar        expected targets per batch ("sequence" only; the loss divides by it).

The model interface (one architecture per file, e.g. tiger.py, onemall.py):

    class MyModel(GenerativeModel):
        loss(batch) -> {"loss": scalar, ...extra logged scalars}    # teacher-forced next-code CE
        begin(batch) -> DecodeState            # encode each user's context once; R = B rows
        step(state, prefix [R, l], use_cache) -> (log_probs [R, codebook_sizes[l]], state)
            # prefix: the codes already chosen for levels 0..l-1 (l = 0..C-1); the answer is the
            # log-distribution of the level-l code. use_cache=True: `state` carries the KV cache of the
            # earlier steps and only the newest code (prefix[:, -1]) is run; use_cache=False: the
            # whole prefix is re-run from `begin`'s state (reference path; the two must agree).
        reorder(state, rows [R']) -> DecodeState   # keep / repeat beam rows (default: index every tensor)

Rows are user-major: R = U x b (b = 1 after `begin`, the beam count later) and rows u*b .. u*b+b-1
belong to user u; `reorder` never mixes users. DecodeState is a dict of tensors (or lists / tuples of
tensors) whose first dimension is R, except the entry "per_user" (anything, first dimension U): the
default `reorder` index-selects everything else and leaves "per_user" alone, so per-user context
(encoder memory, cross-attention keys) is stored once and never copied per beam.

The retriever that trains and decodes these models: retriever.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from recstack.errors import ConfigError
from recstack.train import TrainConfig

DecodeState = dict[str, Any]


def reorder_state(state: Any, rows: torch.Tensor) -> Any:
    """Index dim 0 of every tensor in a (nested) dict / list / tuple with rows [R']; others unchanged."""
    if isinstance(state, torch.Tensor):
        return state.index_select(0, rows.to(state.device)) if state.dim() else state
    if isinstance(state, dict):
        return {key: reorder_state(value, rows) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(reorder_state(value, rows) for value in state)
    return state


class GenerativeModel(nn.Module):
    """Base of the models over semantic IDs. codebook_sizes: C entries (SemanticIds.codebook_sizes)."""

    def __init__(self, codebook_sizes: list[int]) -> None:
        super().__init__()
        self.codebook_sizes = list(codebook_sizes)

    @property
    def sequence_targets(self) -> bool:
        """True when `loss` accepts train_targets="sequence" batches (a target per history column)."""
        return False

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def begin(self, batch: dict[str, torch.Tensor]) -> DecodeState:
        raise NotImplementedError

    def step(
        self, state: DecodeState, prefix: torch.Tensor, use_cache: bool = True
    ) -> tuple[torch.Tensor, DecodeState]:
        raise NotImplementedError

    def reorder(self, state: DecodeState, rows: torch.Tensor) -> DecodeState:
        """Index every row-aligned entry with rows [R'] (user-major); "per_user" is kept as is."""
        out = reorder_state({key: value for key, value in state.items() if key != "per_user"}, rows)
        if "per_user" in state:
            out["per_user"] = state["per_user"]
        return out


@dataclass
class ModelShape:
    """What a model is built from besides its config: the code tuple and the catalogue sizes."""

    codebook_sizes: list[int]
    num_items: int
    num_users: int
    num_events: int  # event codes 0..num_events-1 (0 = plain / padding)


def _train_defaults() -> TrainConfig:
    return TrainConfig(
        epochs=50,
        batch_size=256,
        lr=1e-3,
        weight_decay=0.01,
        warmup_ratio=0.02,
        min_lr_ratio=0.05,
        patience=5,
        monitor="recall@10",
        progress=False,
    )


@dataclass
class GenerativeConfig:
    """Fields every generative retriever shares (each model adds its own).

    semantic_ids:   SemanticIds folder (or `recstack sid fit` run folder with sid/); None = fit in fit().
    sid_encoder / sid_quantizer: registry specs used when semantic_ids is None.
    max_len:        history items read per user (the most recent ones).
    train_targets:  "all" = one sample per train position (every prefix predicts its next item, the
                    sliding-window augmentation of TIGER reproductions); "last" = the last train item only;
                    "sequence" = the same targets as "all", read in one pass per window of max_len items
                    (only models that declare `sequence_targets`, e.g. TIGER with a causal encoder).
    event_labels:   label columns that define history_events (None = every binary label column).
    beam_size:      beams per user while decoding (at least k is used; see beam_search.py).
    use_cache:      KV cache during decoding (same beams, faster).
    constrained:    trie-constrained decoding; False = free decoding (ablation: invalid tuples are
                    dropped and counted in `last_decode["invalid_share"]`).
    eval_users:     valid users sampled (seeded) for early stopping; None = all of them.
    """

    semantic_ids: str | None = None
    sid_encoder: dict[str, Any] = field(default_factory=lambda: {"name": "collab"})
    sid_quantizer: dict[str, Any] = field(
        default_factory=lambda: {"name": "rq_kmeans", "levels": 3, "codebook_size": 256}
    )
    max_len: int = 20
    train_targets: Literal["all", "last", "sequence"] = "all"
    event_labels: list[str] | None = None
    beam_size: int = 20
    use_cache: bool = True
    constrained: bool = True
    eval_users: int | None = 4096
    eval_batch_size: int = 256
    device: str = "cpu"
    train: TrainConfig = field(default_factory=_train_defaults)

    def __post_init__(self) -> None:
        for key in ("max_len", "beam_size", "eval_batch_size"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)!r}")
        if self.train_targets not in ("all", "last", "sequence"):
            raise ConfigError(f"train_targets must be 'all', 'last' or 'sequence', got {self.train_targets!r}")
        if self.eval_users is not None and self.eval_users <= 0:
            raise ConfigError(f"eval_users must be > 0 or null, got {self.eval_users!r}")
        for key in ("sid_encoder", "sid_quantizer"):
            if "name" not in getattr(self, key):
                raise ConfigError(f"{key} must name a registered component (a 'name' key), got {getattr(self, key)!r}")
