"""MTFM: Meituan Foundation Model, alignment-free multi-scenario ranking (Song et al., arXiv 2602.11235;
METHODS.md §2.6), as the ranker "mtfm".

Mechanism: heterogeneous tokens need no schema alignment. H tokens (the older history events) and R tokens
(the most recent, "real-time" events) go through their own MLP tokenizers; one T token per candidate through
its scenario's tokenizer MLP_s(user ‖ candidate item ‖ cross features). X0 = (H; R; T). Hybrid Target
Attention: `blocks` blocks, each one full-attention layer over all tokens then `target_layers` (K) layers in
which only T tokens are queries (every token is a key / value; H and R pass through), so the target:full ratio
is K:1; grouped-query attention (`heads` query heads over `kv_heads` K/V heads); a Group LayerNorm per token
type; the dynamic mask of nn/masks.py (H visible to all, R only to later tokens, T only to itself). The final
T tokens -> the scenario's MMoE -> one tower per task. With the ranker flag `aggregate_users`, all of a user's
candidates in a time window, across scenarios, share one sequence (H; R; T_1..T_M): the history is tokenized
and encoded once per group, and the mask keeps later events from earlier candidates.

Our interpretations [I], each a flag:
- `realtime` / `realtime_window`: R = the last `realtime` events, or (window set) the events less than
  `realtime_window` seconds before the request. In a group, every event not older than the group's first
  request is R too, so the dynamic mask alone hides events after a candidate's request from it.
- `full_attention`: "hstu" = the full layer is HSTU pointwise attention (METHODS: "HSTU-style"; SiLU weights,
  U gating, 1/N with N = max_history + 1 fixed so a score does not depend on the group size), "softmax" =
  GQA softmax + FFN. Target layers are pre-norm GQA softmax + FFN. GQA applies to the softmax layers only.
- `event_features`: an event token = its item vector (the candidate's item embedding) + a behaviour-type
  embedding (history_event) + a log-time-bucket embedding of history_time (floor(ln(1 + s) / 0.301), capped
  at `time_buckets`), each when the inputs carry it.
- `cross_features`: the cross features C_i^s = log(1 + count of the candidate in its visible history), in
  total and per behaviour type.
- `scenario_tokenizers` / `scenario_heads`: one T tokenizer / MMoE + towers per scenario (False: shared);
  `group_norm` False = one LayerNorm for every token type (the ablation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from recstack.errors import ConfigError
from recstack.nn.attention import PointwiseFeedForward
from recstack.nn.gqa import GroupedQueryAttention
from recstack.nn.group_norm import GroupLayerNorm
from recstack.nn.hstu import HSTUBlock
from recstack.nn.masks import HISTORY, PAD, REALTIME, TARGET, mtfm_dynamic_mask
from recstack.nn.mlp import MLP
from recstack.nn.mmoe import MMoE
from recstack.ranking.base import Ranker, RankerConfig, RankingModel
from recstack.ranking.features import FeatureEncoder, FeatureSchema
from recstack.ranking.heads import TaskTowers
from recstack.ranking.samples import group_view
from recstack.registry import register


@dataclass
class MtfmConfig(RankerConfig):
    dim: int = 48  # d_model, the only width the scenarios must agree on
    blocks: int = 2  # B
    target_layers: int = 3  # K target-attention layers per full layer (0 = full attention only)
    heads: int = 3
    kv_heads: int = 1  # GQA; = heads for plain multi-head attention
    ffn_mult: int = 2
    full_attention: Literal["hstu", "softmax"] = "hstu"
    realtime: int = 8
    realtime_window: float | None = None
    event_features: bool = True
    time_buckets: int = 32
    cross_features: bool = True
    scenario_tokenizers: bool = True
    scenario_heads: bool = True
    group_norm: bool = True
    num_experts: int = 4
    expert_hidden: list[int] = field(default_factory=lambda: [64])
    tower_hidden: list[int] = field(default_factory=lambda: [32])
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for key in ("dim", "blocks", "heads", "kv_heads", "ffn_mult", "num_experts"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"mtfm: {key} must be > 0, got {getattr(self, key)!r}")
        if self.dim % self.heads or self.heads % self.kv_heads:
            raise ConfigError(
                f"mtfm: dim ({self.dim}) must divide by heads ({self.heads}) and heads by kv_heads ({self.kv_heads})"
            )
        if self.target_layers < 0 or self.realtime < 0 or self.time_buckets <= 0:
            raise ConfigError("mtfm: target_layers and realtime must be >= 0, time_buckets > 0")
        if self.full_attention not in ("hstu", "softmax"):
            raise ConfigError(f"mtfm: full_attention must be 'hstu' or 'softmax', got {self.full_attention!r}")
        if self.realtime_window is not None and self.realtime_window <= 0:
            raise ConfigError(f"mtfm: realtime_window must be > 0 seconds or null, got {self.realtime_window!r}")


class SoftmaxLayer(nn.Module):
    """Pre-norm GQA + FFN. Queries are the tokens from `start` on (0: full attention; the first target:
    target attention, earlier tokens pass through). forward(x [B, S, D], types [B, S], mask [B, S, S], start)."""

    def __init__(self, c: MtfmConfig) -> None:
        super().__init__()
        self.norm1, self.norm2 = GroupLayerNorm(c.dim, 4), GroupLayerNorm(c.dim, 4)
        self.attn = GroupedQueryAttention(c.dim, c.heads, c.kv_heads, dropout=c.dropout)
        self.ffn = PointwiseFeedForward(c.dim, c.ffn_mult * c.dim, c.dropout)

    def forward(self, x: torch.Tensor, types: torch.Tensor, mask: torch.Tensor, start: int = 0) -> torch.Tensor:
        normed = self.norm1(x, types)
        q = x[:, start:] + self.attn(normed[:, start:], mask[:, start:], normed)
        q = q + self.ffn(self.norm2(q, types[:, start:]))
        return torch.cat([x[:, :start], q], 1) if start else q


class HstuLayer(nn.Module):
    """HSTU pointwise attention over all tokens after a Group LayerNorm (the block's own input norm is off)."""

    def __init__(self, c: MtfmConfig, max_len: int) -> None:
        super().__init__()
        self.norm = GroupLayerNorm(c.dim, 4)
        self.block = HSTUBlock(
            c.dim, c.heads, c.dim // c.heads, c.dim // c.heads, c.dropout, input_norm=False, max_len=max_len
        )

    def forward(self, x: torch.Tensor, types: torch.Tensor, mask: torch.Tensor, start: int = 0) -> torch.Tensor:
        z = self.norm(x, types)
        return x + self.block(z, mask) - z  # the block returns z + f(z); keep the residual stream on x


class ScenarioHead(nn.Module):
    """x [N, D] -> logits [N, num_tasks]: MMoE experts + a softmax gate and a tower per task."""

    def __init__(self, tasks: list[str], c: MtfmConfig) -> None:
        super().__init__()
        self.mmoe = MMoE(c.dim, len(tasks), c.num_experts, c.expert_hidden, dropout=c.dropout)
        self.towers = TaskTowers(tasks, self.mmoe.out_dim, c.tower_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(list(self.towers(self.mmoe(x)).values()), -1)


def per_scenario(modules: nn.ModuleList, x: torch.Tensor, scenario: torch.Tensor) -> torch.Tensor:
    """modules[s] applied to the rows of scenario s (a loop over the few scenarios) -> [N, ...]."""
    if len(modules) == 1:
        return modules[0](x)
    scenario = scenario.clamp(0, len(modules) - 1)
    out = None
    for s, module in enumerate(modules):
        rows = (scenario == s).nonzero().squeeze(1)
        y = module(x[rows])
        out = y.new_zeros(x.shape[0], *y.shape[1:]) if out is None else out
        out[rows] = y
    assert out is not None  # at least two modules
    return out


class Mtfm(RankingModel):
    """inputs (ranking/samples.py): users, items [N], history [N, T], optional scenario, history_time,
    history_event and the group inputs -> {task: logits [N]}."""

    def __init__(
        self, features: FeatureEncoder, tasks: list[str], c: MtfmConfig, num_events: int, num_scenarios: int
    ) -> None:
        super().__init__(features, tasks, c.task_weights)
        self.config, d, item_dim = c, c.dim, features.item_dim
        self.event = nn.Embedding(num_events, item_dim) if c.event_features else None
        self.time = nn.Embedding(c.time_buckets + 1, item_dim) if c.event_features else None
        self.tokenize_h, self.tokenize_r = (MLP(item_dim, [d], d, activation="gelu") for _ in range(2))
        self.num_cross = num_events if c.cross_features else 0
        t_in = features.user_dim + item_dim + self.num_cross
        self.tokenize_t = nn.ModuleList(
            MLP(t_in, [d], d, activation="gelu") for _ in range(num_scenarios if c.scenario_tokenizers else 1)
        )
        max_len = c.samples.max_history + 1
        self.layers = nn.ModuleList()
        for _ in range(c.blocks):  # per block: one full layer, then K target layers
            self.layers.append(HstuLayer(c, max_len) if c.full_attention == "hstu" else SoftmaxLayer(c))
            self.layers.extend(SoftmaxLayer(c) for _ in range(c.target_layers))
        self.target_layer = [i % (c.target_layers + 1) > 0 for i in range(len(self.layers))]
        self.heads = nn.ModuleList(ScenarioHead(tasks, c) for _ in range(num_scenarios if c.scenario_heads else 1))

    def forward(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        c, view = self.config, group_view(inputs)
        history = view["history"].masked_fill(view["history"] > self.features.num_items, 0)
        g, t = history.shape
        valid, group, slot, offset = history > 0, view["group"], view["slot"], view["offset"]
        positions = torch.arange(t, device=history.device)
        age = view["history_time"] if view["history_time"] is not None else (t - positions).float().expand(g, t)
        age = age.masked_fill(~valid, 0.0)  # seconds before the group's last request (or steps, without times)
        recent = positions >= t - c.realtime if c.realtime_window is None else age < c.realtime_window
        first = torch.zeros(g, device=age.device).scatter_reduce(0, group, offset, "amax", include_self=False)
        recent = recent | (age <= first.unsqueeze(1))  # never H: events at or after the group's first request
        h_types = torch.where(valid, torch.where(recent, REALTIME, HISTORY), PAD)
        x = self.features.item_vectors(history)
        if self.event is not None and view["history_event"] is not None:
            x = x + self.event(view["history_event"].clamp(0, self.event.num_embeddings - 1))
        if self.time is not None and view["history_time"] is not None:
            x = x + self.time((torch.log1p(age.clamp(min=0)) / 0.301).long().clamp(max=c.time_buckets))
        h_tokens = torch.where((h_types == REALTIME).unsqueeze(-1), self.tokenize_r(x), self.tokenize_h(x))

        scenario = inputs.get("scenario", torch.zeros_like(inputs["items"]))
        parts = [
            self.features.user_vectors(inputs["users"], inputs.get("scenario")),
            self.features.item_vectors(inputs["items"]),
        ]
        if self.num_cross:
            events = view["history_event"][group] if view["history_event"] is not None else None
            parts.append(self._cross(inputs["items"], history[group], events, age[group], offset))
        t_tokens = per_scenario(self.tokenize_t, torch.cat(parts, -1), scenario)  # [N, D]
        m = view["size"]
        targets = t_tokens.new_zeros(g, m, c.dim)
        targets[group, slot] = t_tokens
        t_types = torch.full((g, m), PAD, dtype=torch.long, device=history.device)
        t_types[group, slot] = TARGET
        t_time = torch.zeros(g, m, device=age.device)
        t_time[group, slot] = -offset
        tokens, types = torch.cat([h_tokens, targets], 1), torch.cat([h_types, t_types], 1)
        mask = mtfm_dynamic_mask(types, torch.cat([-age, t_time], 1))  # time = minus the age
        norm_types = types if c.group_norm else torch.zeros_like(types)
        for layer, target in zip(self.layers, self.target_layer):  # target layers: only T tokens are queries
            tokens = layer(tokens, norm_types, mask, t if target else 0)
        logits = per_scenario(self.heads, tokens[group, t + slot], scenario)  # [N, num_tasks]
        return {task: logits[:, i] for i, task in enumerate(self.tasks)}

    def _cross(
        self,
        items: torch.Tensor,
        history: torch.Tensor,
        events: torch.Tensor | None,
        age: torch.Tensor,
        offset: torch.Tensor,
    ) -> torch.Tensor:
        """[N, num_events]: log(1 + occurrences of the candidate in its visible history): total in column 0,
        then per behaviour code (history [N, T] of the row's group; visible = before the row's request)."""
        hit = ((history == items.unsqueeze(1)) & (history > 0) & (age > offset.unsqueeze(1))).float()
        counts = hit.new_zeros(items.shape[0], self.num_cross)
        if events is not None:
            counts.scatter_add_(1, events.clamp(0, self.num_cross - 1), hit)
        counts[:, 0] = hit.sum(1)  # code 0 is padding: its column holds the total
        return torch.log1p(counts)


@register("ranker", "mtfm", config=MtfmConfig)
class MtfmRanker(Ranker):
    name = "mtfm"
    config_class = MtfmConfig
    config: MtfmConfig

    def build_model(self, schema: FeatureSchema) -> Mtfm:
        return Mtfm(
            FeatureEncoder(schema, self.config.features),
            self.tasks,
            self.config,
            num_events=len(self.event_labels) + 2,
            num_scenarios=len(schema.scenario_names) + 1,
        )
