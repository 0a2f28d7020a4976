"""RankMixer: hardware-aware token mixing + per-token FFNs ("rankmixer"; ByteDance, CIKM'25,
arXiv 2507.15551; METHODS.md §1.1).

Mechanism: features -> T tokens of width D (the paper's "autosplit": the concatenated embeddings cut into
T segments, each with its own projection; ranking/tokenize.py), then L blocks of
    S = LN(TokenMix(X) + X),  X' = LN(PFFN(S) + S)
where TokenMix is parameter-free multi-head mixing with H = T heads (nn/token_mixing.py) and PFFN gives
every token its own FFN (nn/per_token.py, one einsum). Optional sparse MoE: per-token experts with ReLU
routing, an adaptive L1 penalty that tracks an active-expert budget, and DTSI (separate train/infer
routers). Tokens are mean-pooled into the multi-task head (towers, or MMoE + towers).
Our interpretations [I] (each a flag): tokenizer settings live in `tokenizer` (mode autosplit by default;
`tokenizer.mode: groups` uses semantic groups); each MoE expert is a full-size per-token FFN
(`expert_hidden`, default ffn_mult * dim); DTSI training mixes the two routers' gates half-and-half
(`moe_dtsi`); the head is mean-pool -> optional MMoE (`mmoe_experts`) -> per-task towers (`tower_hidden`).
Ablations: `token_mixing: false` (no mixing), `shared_ffn: true` (one FFN for all tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from recstack.errors import ConfigError
from recstack.nn.mmoe import MMoE
from recstack.nn.per_token import PerTokenFFN, PerTokenReLUMoE, per_token_aux_loss
from recstack.nn.token_mixing import RankMixerBlock
from recstack.ranking.base import Ranker, RankerConfig, RankingModel
from recstack.ranking.features import FeatureEncoder, FeatureSchema
from recstack.ranking.heads import TaskTowers, multitask_bce
from recstack.ranking.tokenize import FeatureTokenizer, TokenizerConfig
from recstack.registry import register


@dataclass
class AutosplitTokenizerConfig(TokenizerConfig):
    """The tokenizer with RankMixer's own default (autosplit), so a partial YAML `tokenizer:` keeps it."""

    mode: Literal["groups", "autosplit"] = "autosplit"


@dataclass
class RankMixerConfig(RankerConfig):
    dim: int = 32  # token width D (must be divisible by the token count T = heads)
    layers: int = 2
    ffn_mult: int = 4  # per-token FFN hidden = ffn_mult * dim
    tokenizer: AutosplitTokenizerConfig = field(default_factory=AutosplitTokenizerConfig)
    token_mixing: bool = True
    shared_ffn: bool = False
    moe_experts: int = 0  # 0 = dense per-token FFN
    expert_hidden: int | None = None  # None = ffn_mult * dim
    moe_budget: float = 0.25  # target share of active experts
    moe_l1: float = 1e-3  # initial L1 coefficient on the (inference) router gates
    moe_adapt_rate: float = 0.01
    moe_dtsi: bool = True
    mmoe_experts: int = 0  # 0 = towers on the pooled tokens
    tower_hidden: list[int] = field(default_factory=lambda: [32])

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.layers < 0 or self.ffn_mult <= 0 or self.moe_experts < 0 or self.mmoe_experts < 0:
            raise ConfigError("rankmixer: dim > 0, layers >= 0, ffn_mult > 0, moe_experts >= 0, mmoe_experts >= 0")
        if not 0.0 < self.moe_budget <= 1.0:
            raise ConfigError(f"rankmixer.moe_budget must be in (0, 1], got {self.moe_budget!r}")


class PooledHeads(nn.Module):
    """tokens [N, S, D] -> mean over S -> (MMoE) -> {task: logits [N]}."""

    def __init__(self, tasks: list[str], dim: int, tower_hidden: list[int], mmoe_experts: int) -> None:
        super().__init__()
        self.mmoe = MMoE(dim, len(tasks), mmoe_experts, [dim]) if mmoe_experts else None
        self.towers = TaskTowers(tasks, dim, tower_hidden)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = tokens.mean(1)
        return self.towers(self.mmoe(pooled) if self.mmoe is not None else pooled)


class RankMixer(RankingModel):
    """inputs (see ranking/tokenize.py) -> {task: logits [N]}; loss adds the MoE L1 penalty."""

    def __init__(self, features: FeatureEncoder, tasks: list[str], config: RankMixerConfig) -> None:
        super().__init__(features, tasks, config.task_weights)
        self.tokenizer = FeatureTokenizer(features, config.dim, config.tokenizer)
        t, d = self.tokenizer.num_tokens, config.dim
        if config.token_mixing and d % t:
            raise ConfigError(
                f"rankmixer: dim {d} must be divisible by the {t} tokens (H = T heads); "
                f"tokens: {', '.join(self.tokenizer.names)}"
            )
        hidden = config.ffn_mult * d

        def ffn() -> nn.Module:
            if config.moe_experts:
                return PerTokenReLUMoE(
                    t,
                    d,
                    config.expert_hidden or hidden,
                    config.moe_experts,
                    config.moe_budget,
                    config.moe_l1,
                    config.moe_adapt_rate,
                    config.moe_dtsi,
                )
            return PerTokenFFN(t, d, hidden, shared=config.shared_ffn)

        self.blocks = nn.ModuleList(RankMixerBlock(t, d, ffn(), config.token_mixing) for _ in range(config.layers))
        self.heads = PooledHeads(tasks, d, config.tower_hidden, config.mmoe_experts)

    def forward(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = self.tokenizer(inputs)  # [N, T, D]
        for block in self.blocks:
            x = block(x)
        return self.heads(x)

    def loss(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = multitask_bce(self(inputs), inputs["labels"], self.task_weights)
        aux = per_token_aux_loss(self)
        out["moe_l1"], out["loss"] = aux.detach(), out["loss"] + aux
        return out


@register("ranker", "rankmixer", config=RankMixerConfig)
class RankMixerRanker(Ranker):
    name = "rankmixer"
    config_class = RankMixerConfig
    config: RankMixerConfig

    def build_model(self, schema: FeatureSchema) -> RankMixer:
        return RankMixer(FeatureEncoder(schema, self.config.features), self.tasks, self.config)
