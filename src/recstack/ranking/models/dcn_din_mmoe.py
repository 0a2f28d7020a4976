"""DCN-DIN-MMoE: the baseline multi-task ranker ("dcn_din_mmoe").

Papers: DIN (Zhou et al., KDD 2018) for the history, DCNv2 (Wang et al., WWW 2021) for feature
crosses, MMoE (Ma et al., KDD 2018) for the tasks.
Mechanism: target attention of the candidate over the user's recent history gives one interest
vector; [user/context fields, candidate item fields, interest] -> a DCNv2 cross network beside
(parallel) or under (stacked) a deep MLP -> shared representation -> MMoE experts with one softmax
gate per task -> one tower + sigmoid head per task. Loss: sum of task-weighted BCE.
Our interpretation [I] (each a flag): the history items share the candidate's item embedding
(id + side features); DIN weights are not normalised (`attention_softmax` to normalise);
full-rank cross layers unless `cross_low_rank` is set (then DCN-Mix with `cross_experts` experts);
no batch norm (dropout only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from recstack.errors import ConfigError
from recstack.nn.cross import CrossNetwork
from recstack.nn.mlp import MLP
from recstack.nn.mmoe import MMoE
from recstack.nn.target_attention import TargetAttention
from recstack.ranking.base import Ranker, RankerConfig, RankingModel
from recstack.ranking.features import FeatureEncoder, FeatureSchema
from recstack.ranking.heads import TaskTowers
from recstack.registry import register


@dataclass
class DcnDinMmoeConfig(RankerConfig):
    attention_hidden: list[int] = field(default_factory=lambda: [16])
    attention_softmax: bool = False
    cross_layers: int = 2
    cross_low_rank: int | None = None  # None: full-rank W [D, D]; r: DCN-Mix low-rank experts
    cross_experts: int = 4
    structure: Literal["parallel", "stacked"] = "parallel"
    deep_hidden: list[int] = field(default_factory=lambda: [128, 64])
    num_experts: int = 4
    expert_hidden: list[int] = field(default_factory=lambda: [64])
    tower_hidden: list[int] = field(default_factory=lambda: [32])
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.cross_layers < 0 or self.num_experts <= 0 or not self.expert_hidden or not self.deep_hidden:
            raise ConfigError(
                "dcn_din_mmoe: cross_layers >= 0, num_experts > 0 and non-empty expert_hidden / "
                "deep_hidden are required"
            )
        if self.structure not in ("parallel", "stacked"):
            raise ConfigError(f"structure must be 'parallel' or 'stacked', got {self.structure!r}")


class DcnDinMmoe(RankingModel):
    """inputs: users, items [N]; history [N, T] (0 = padding); scenario [N] optional -> {task: logits [N]}."""

    def __init__(self, features: FeatureEncoder, tasks: list[str], config: DcnDinMmoeConfig) -> None:
        super().__init__(features, tasks, config.task_weights)
        item_dim = features.item_dim
        self.attention = TargetAttention(item_dim, config.attention_hidden, softmax=config.attention_softmax)
        x0_dim = features.user_dim + 2 * item_dim
        self.cross = CrossNetwork(x0_dim, config.cross_layers, config.cross_low_rank, config.cross_experts)
        self.deep = MLP(x0_dim, config.deep_hidden, out_dim=None, dropout=config.dropout)
        self.parallel = config.structure == "parallel"
        shared_dim = x0_dim + self.deep.out_dim if self.parallel else self.deep.out_dim
        self.mmoe = MMoE(shared_dim, len(tasks), config.num_experts, config.expert_hidden, dropout=config.dropout)
        self.heads = TaskTowers(tasks, self.mmoe.out_dim, config.tower_hidden)

    def forward(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        items, history = inputs["items"], inputs["history"]
        history = history.masked_fill(history > self.features.num_items, 0)
        # One pass over the distinct ids of candidates and histories together: [N, 1 + T, item_dim].
        vectors = self.features.item_vectors(torch.cat([items.unsqueeze(1), history], dim=1))
        query, keys = vectors[:, 0], vectors[:, 1:]
        interest = self.attention(query, keys, history > 0)
        user = self.features.user_vectors(inputs["users"], inputs.get("scenario"))
        x0 = torch.cat([user, query, interest], dim=-1)
        crossed = self.cross(x0)
        shared = torch.cat([crossed, self.deep(x0)], -1) if self.parallel else self.deep(crossed)
        return self.heads(self.mmoe(shared))


@register("ranker", "dcn_din_mmoe", config=DcnDinMmoeConfig)
class DcnDinMmoeRanker(Ranker):
    name = "dcn_din_mmoe"
    config_class = DcnDinMmoeConfig
    config: DcnDinMmoeConfig

    def build_model(self, schema: FeatureSchema) -> DcnDinMmoe:
        return DcnDinMmoe(FeatureEncoder(schema, self.config.features), self.tasks, self.config)
