"""HSTU ranker (Zhai et al. 2024, "Actions Speak Louder than Words", METHODS.md §1.2; the ranking setting of
Meta's generative-recommenders / DLRM-v3), as the ranker "hstu_ranker".

Mechanism: the user's history is a sequence of event tokens (item embedding + behaviour embedding); HSTU blocks
(nn/hstu.py: SiLU pointwise attention, U gating, relative position / time bias) run over it with the candidates
appended at the end as targets. The mask (nn/masks.py `hstu_target_mask`) keeps the history causal and lets
each target see the history but not the other targets, so all K candidates of a user are scored in one pass
(M-FALCON-style) with the same score each would get alone. A target token is the projected candidate
item vector plus a learned target-type vector. Target states -> MMoE -> one tower per task.
With the ranker flag `aggregate_users`, a user's training samples in a window share one sequence too; a
target then sees only the events before its own request.

Our interpretations [I], each a flag:
- `action_encoding`: "sum" adds a behaviour-type embedding (history_event) to each event's item vector (one
  of DLRM-v3's options besides interleaving); "none" ignores the behaviour.
- `target_self`: a target attends itself as well as the history (False: the history only).
- relative bias (`rab_position`, `rab_time`): a target sits at position T (the next event) whatever its slot,
  and at its request time; time buckets are floor(ln(gap s) / 0.301) as in Meta's code (`time_buckets`).
- `normalization` of nn/hstu.py: "max_len" with N = max_history + 1 fixed, so a score does not depend on
  how many targets share the sequence, or "causal" (1 / the keys a row sees).
- `window`: HSTU's max_attn_len for the history (None = full causal).
- `user_features`: the user / scenario fields join the target state before the heads (HSTU itself has none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from recstack.errors import ConfigError
from recstack.nn.hstu import HSTUBlock
from recstack.nn.masks import hstu_target_mask
from recstack.nn.mmoe import MMoE
from recstack.nn.positional import log_time_buckets
from recstack.ranking.base import Ranker, RankerConfig, RankingModel
from recstack.ranking.features import FeatureEncoder, FeatureSchema
from recstack.ranking.heads import TaskTowers
from recstack.ranking.samples import group_view
from recstack.registry import register


@dataclass
class HstuRankerConfig(RankerConfig):
    dim: int = 32
    layers: int = 2
    heads: int = 2
    attention_dim: int = 16  # per head, Q and K
    linear_dim: int = 16  # per head, U and V
    dropout: float = 0.1
    normalization: Literal["max_len", "causal"] = "max_len"
    window: int | None = None
    action_encoding: Literal["sum", "none"] = "sum"
    target_self: bool = True
    rab_position: bool = True
    rab_time: bool = True
    time_buckets: int = 64
    user_features: bool = True
    num_experts: int = 4
    expert_hidden: list[int] = field(default_factory=lambda: [64])
    tower_hidden: list[int] = field(default_factory=lambda: [32])

    def __post_init__(self) -> None:
        for key in ("dim", "layers", "heads", "attention_dim", "linear_dim", "time_buckets", "num_experts"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"hstu_ranker: {key} must be > 0, got {getattr(self, key)!r}")
        if self.action_encoding not in ("sum", "none"):
            raise ConfigError(f"hstu_ranker: action_encoding must be 'sum' or 'none', got {self.action_encoding!r}")
        if self.normalization not in ("max_len", "causal"):  # "length" assumes the last row sees every event
            raise ConfigError(f"hstu_ranker: normalization must be 'max_len' or 'causal', got {self.normalization!r}")
        if self.window is not None and self.window <= 0:
            raise ConfigError(f"hstu_ranker: window must be > 0 or null, got {self.window!r}")


class HstuRanker(RankingModel):
    """inputs (ranking/samples.py): users, items [N], history [N, T], optional scenario, history_time,
    history_event and the group inputs -> {task: logits [N]}."""

    def __init__(self, features: FeatureEncoder, tasks: list[str], c: HstuRankerConfig, num_events: int) -> None:
        super().__init__(features, tasks, c.task_weights)
        self.config, item_dim, self.max_len = c, features.item_dim, c.samples.max_history + 1
        self.event = nn.Embedding(num_events, item_dim) if c.action_encoding == "sum" else None
        self.project = nn.Linear(item_dim, c.dim)
        self.target_type = nn.Parameter(torch.zeros(c.dim))  # marks the appended candidates
        self.blocks = nn.ModuleList(
            HSTUBlock(
                c.dim,
                c.heads,
                c.attention_dim,
                c.linear_dim,
                c.dropout,
                normalization=c.normalization,
                max_len=self.max_len,
            )
            for _ in range(c.layers)
        )
        self.rab_position = nn.Parameter(torch.zeros(self.max_len)) if c.rab_position else None
        self.rab_time = nn.Parameter(torch.zeros(c.time_buckets)) if c.rab_time else None
        self.norm = nn.LayerNorm(c.dim)
        head_in = c.dim + (features.user_dim if c.user_features else 0)
        self.mmoe = MMoE(head_in, len(tasks), c.num_experts, c.expert_hidden, dropout=c.dropout)
        self.towers = TaskTowers(tasks, self.mmoe.out_dim, c.tower_hidden)

    def forward(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        c, view = self.config, group_view(inputs)
        history = view["history"].masked_fill(view["history"] > self.features.num_items, 0)
        g, t = history.shape
        group, slot, offset, m = view["group"], view["slot"], view["offset"], view["size"]
        valid = history > 0
        x = self.features.item_vectors(history)
        if self.event is not None and view["history_event"] is not None:
            x = x + self.event(view["history_event"].clamp(0, self.event.num_embeddings - 1))
        targets = x.new_zeros(g, m, x.shape[-1])
        targets[group, slot] = self.features.item_vectors(inputs["items"])
        target_valid = torch.zeros(g, m, dtype=torch.bool, device=x.device)
        target_valid[group, slot] = True
        tokens = self.project(torch.cat([x, targets], 1))
        tokens[:, t:] = tokens[:, t:] + self.target_type
        ages = view["history_time"]  # seconds before the group's last request; None without timestamps
        visible = None
        if "group" in inputs and ages is not None:  # a target sees only the events before its request
            visible = torch.ones(g, m, t, dtype=torch.bool, device=x.device)
            visible[group, slot] = ages[group] > offset.unsqueeze(1)
        mask = hstu_target_mask(valid, target_valid, c.window, visible, c.target_self)
        rab = self._bias(t, m, ages, group, slot, offset)
        keep = torch.cat([valid, target_valid], 1).unsqueeze(-1).to(tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens, mask, rab) * keep  # padding never carries signal
        state = self.norm(tokens[group, t + slot])
        if c.user_features:
            state = torch.cat([state, self.features.user_vectors(inputs["users"], inputs.get("scenario"))], -1)
        return self.towers(self.mmoe(state))

    def _bias(
        self, t: int, m: int, ages: torch.Tensor | None, group: torch.Tensor, slot: torch.Tensor, offset: torch.Tensor
    ) -> torch.Tensor | None:
        """[G or 1, S, S] relative bias: position buckets (targets at position t) + log time-gap buckets."""
        bias = None
        device = group.device
        if self.rab_position is not None:
            pos = torch.cat([torch.arange(t, device=device), torch.full((m,), t, device=device)])
            distance = (pos.unsqueeze(1) - pos.unsqueeze(0)).clamp(0, self.max_len - 1)
            bias = self.rab_position[distance].unsqueeze(0)
        if self.rab_time is not None and ages is not None:
            times = torch.zeros(ages.shape[0], t + m, device=device)
            times[:, :t] = -ages
            times[group, t + slot] = -offset
            time_bias = self.rab_time[log_time_buckets(times, self.rab_time.numel())]
            bias = time_bias if bias is None else bias + time_bias
        return bias


@register("ranker", "hstu_ranker", config=HstuRankerConfig)
class HstuRankerRanker(Ranker):
    name = "hstu_ranker"
    config_class = HstuRankerConfig
    config: HstuRankerConfig

    def build_model(self, schema: FeatureSchema) -> HstuRanker:
        return HstuRanker(
            FeatureEncoder(schema, self.config.features), self.tasks, self.config, num_events=len(self.event_labels) + 2
        )
