"""TokenMixer-Large: mixing-and-reverting blocks with per-token SwiGLU / Sparse-Pertoken MoE
("tokenmixer_large"; ByteDance, arXiv 2602.06563; METHODS.md §2.4).

Mechanism: semantic feature groups -> one token each + a global [CLS]-like token (ranking/tokenize.py),
then L blocks of  Hm = Mix(X); Hm += F_mix(RMSNorm(Hm)); X' = X + F_rev(RMSNorm(Revert(Hm)))  (parameter-
free Mix/Revert, H heads decoupled from T tokens, residuals token-aligned; nn/token_mixing.py). F is a
per-token SwiGLU (biasless, down-projection init x0.01) or a Sparse-Pertoken MoE (per token: fine-grained
experts of hidden n*width/(E+1) - "first enlarge, then sparse" - top-k softmax routing, gate scaling
alpha and an always-on shared expert). Every `interlayer_gap` layers (never into the last) a skip from
`interlayer_gap` layers below is added and that layer's mean-pooled tokens give auxiliary logits whose
BCE (x aux_loss_weight) joins the loss. Final tokens -> RMSNorm -> mean-pool -> multi-task head.
Our interpretations [I] (each a flag): aux logits come from one linear head per task shared by all aux
points (`aux_head: linear`; `towers` reuses the main towers); alpha defaults to E / top_k, the inverse
routed sparsity (`gate_scale`); a final RMSNorm before pooling (`final_norm`); expert hidden width
n * width / (E + shared) (`expert_hidden`); Switch load balancing per token position (`balance_weight`,
0 = off, the paper names none); the skip lands after 0-based layer i with i >= gap, i % gap == 0 and
i < L - 1, from the output of layer i - gap (`interlayer_gap`, as a public re-impl); tokenizer choices
(per-group MLP depth, sequence compressor, ...) are `tokenizer.*` flags (ranking/tokenize.py).
`moe_dispatch: sort` runs only the selected experts (same output as the dense CPU reference).
Ablation flags (the paper's table): `token_mixing` (mix_revert | mix = RankMixer-style, no revert | none),
`interlayer_gap: 0` (no inter-layer residual / aux loss), `swiglu: shared | per_token_ffn`, `moe_experts: 0`
(dense), `moe_shared_expert: false`, `gate_scale: 1`, `down_init: 1` (no small init), `moe_per_token:
false` (standard MoE), `tokenizer.global_token: false`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from recstack.errors import ConfigError
from recstack.nn.moe import SparseMoE, moe_aux_loss
from recstack.nn.per_token import PerTokenFFN, PerTokenSparseMoE, PerTokenSwiGLU, RMSNorm, per_token_aux_loss
from recstack.nn.token_mixing import MIX_MODES, MixRevertBlock
from recstack.ranking.base import Ranker, RankerConfig, RankingModel
from recstack.ranking.features import FeatureEncoder, FeatureSchema
from recstack.ranking.heads import multitask_bce
from recstack.ranking.models.rankmixer import PooledHeads
from recstack.ranking.tokenize import FeatureTokenizer, TokenizerConfig
from recstack.registry import register


@dataclass
class TokenMixerLargeConfig(RankerConfig):
    dim: int = 32  # token width D
    layers: int = 4
    heads: int | None = 4  # H (divides dim); None = the token count T
    ffn_mult: float = 2.0  # n: SwiGLU hidden = n * token width
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    token_mixing: str = "mix_revert"  # one of MIX_MODES
    swiglu: str = "per_token"  # or "shared" (one SwiGLU for every token), "per_token_ffn" (GELU FFN)
    down_init: float = 0.01
    moe_experts: int = 0  # routed experts per token; 0 = dense per-token SwiGLU
    moe_top_k: int = 1  # routed experts per token (+ the shared one)
    moe_shared_expert: bool = True
    gate_scale: float | None = None  # alpha; None = moe_experts / moe_top_k
    expert_hidden: int | None = None  # None = n * width / (experts + shared)
    balance_weight: float = 0.0
    moe_dispatch: str = "dense"  # or "sort" (runs only the selected experts; same output)
    moe_per_token: bool = True  # False: a standard MoE (nn/moe.py) whose experts every position shares
    interlayer_gap: int = 2  # 0 = no inter-layer residual and no aux loss
    aux_loss_weight: float = 0.1
    aux_head: str = "linear"  # or "towers"
    final_norm: bool = True
    mmoe_experts: int = 0
    tower_hidden: list[int] = field(default_factory=lambda: [32])

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.layers < 0 or self.ffn_mult <= 0 or self.interlayer_gap < 0:
            raise ConfigError("tokenmixer_large: dim > 0, layers >= 0, ffn_mult > 0, interlayer_gap >= 0")
        if self.token_mixing not in MIX_MODES:
            raise ConfigError(f"token_mixing must be one of {', '.join(MIX_MODES)}, got {self.token_mixing!r}")
        if self.swiglu not in ("per_token", "shared", "per_token_ffn") or self.aux_head not in ("linear", "towers"):
            raise ConfigError(
                f"swiglu must be per_token|shared|per_token_ffn and aux_head linear|towers, got "
                f"{self.swiglu!r}, {self.aux_head!r}"
            )
        if self.moe_experts and not 1 <= self.moe_top_k <= self.moe_experts:
            raise ConfigError(f"moe_top_k must be in [1, moe_experts={self.moe_experts}], got {self.moe_top_k}")


class TokenMixerLarge(RankingModel):
    """inputs (see ranking/tokenize.py) -> {task: logits [N]}; loss adds aux-layer BCE and MoE balance."""

    def __init__(self, features: FeatureEncoder, tasks: list[str], config: TokenMixerLargeConfig) -> None:
        super().__init__(features, tasks, config.task_weights)
        self.config = config
        self.tokenizer = FeatureTokenizer(features, config.dim, config.tokenizer)
        t, d = self.tokenizer.num_tokens, config.dim
        heads = config.heads or t
        if config.token_mixing != "none" and d % heads:
            raise ConfigError(f"tokenmixer_large: dim {d} must be divisible by heads {heads} (tokens: {t})")

        self.blocks = nn.ModuleList(
            MixRevertBlock(t, d, heads, lambda n, w: sublayer(config, n, w), config.token_mixing)
            for _ in range(config.layers)
        )
        self.norm = RMSNorm(d) if config.final_norm else nn.Identity()
        self.heads = PooledHeads(tasks, d, config.tower_hidden, config.mmoe_experts)
        self.aux_layers = [
            i
            for i in range(config.layers)
            if config.interlayer_gap
            and i >= config.interlayer_gap
            and i % config.interlayer_gap == 0
            and i != config.layers - 1
        ]
        self.aux_head = nn.Linear(d, len(tasks)) if self.aux_layers and config.aux_head == "linear" else None

    def run(self, inputs: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
        """(logits per task, auxiliary logits per inter-residual layer; [] in eval mode)."""
        x = self.tokenizer(inputs)  # [N, T, D]
        outputs: list[torch.Tensor] = []
        aux: list[dict[str, torch.Tensor]] = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.aux_layers:
                x = x + outputs[i - self.config.interlayer_gap]  # skip from `gap` layers below
                if self.training:  # aux logits only feed the training loss
                    aux.append(self._aux_logits(x))
            outputs.append(x)
        return self.heads(self.norm(x)), aux

    def _aux_logits(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.aux_head is None:
            return self.heads(self.norm(x))
        logits = self.aux_head(x.mean(1))
        return {task: logits[:, j] for j, task in enumerate(self.tasks)}

    def forward(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.run(inputs)[0]

    def loss(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits, aux = self.run(inputs)
        out = multitask_bce(logits, inputs["labels"], self.task_weights)
        if aux:
            aux_bce = torch.stack([multitask_bce(a, inputs["labels"], self.task_weights)["loss"] for a in aux]).mean()
            out["aux_bce"], out["loss"] = aux_bce.detach(), out["loss"] + self.config.aux_loss_weight * aux_bce
        balance = per_token_aux_loss(self) + self.config.balance_weight * moe_aux_loss(self).to(out["loss"].device)
        if self.config.moe_experts:
            out["moe_balance"], out["loss"] = balance.detach(), out["loss"] + balance
        return out


def sublayer(config: TokenMixerLargeConfig, tokens: int, width: int) -> nn.Module:
    """One pre-norm FFN sub-layer over `tokens` tokens of `width`: [N, tokens, width] -> same."""
    hidden = max(1, round(config.ffn_mult * width))
    if not config.moe_experts:
        if config.swiglu == "per_token_ffn":
            return nn.Sequential(RMSNorm(width), PerTokenFFN(tokens, width, hidden, down_init=config.down_init))
        return PerTokenSwiGLU(tokens, width, hidden, shared=config.swiglu == "shared", down_init=config.down_init)
    e, k = config.moe_experts, config.moe_top_k
    alpha = config.gate_scale if config.gate_scale is not None else e / k
    per_expert = config.expert_hidden or max(1, hidden // (e + config.moe_shared_expert))
    if not config.moe_per_token:
        return nn.Sequential(
            RMSNorm(width),
            SparseMoE(
                width,
                per_expert,
                e,
                k,
                "swiglu",
                config.moe_shared_expert,
                gate_scale=alpha,
                dispatch=config.moe_dispatch,
            ),
        )
    return PerTokenSparseMoE(
        tokens,
        width,
        per_expert,
        e,
        k,
        config.moe_shared_expert,
        alpha,
        down_init=config.down_init,
        balance_weight=config.balance_weight,
        dispatch=config.moe_dispatch,
    )


@register("ranker", "tokenmixer_large", config=TokenMixerLargeConfig)
class TokenMixerLargeRanker(Ranker):
    name = "tokenmixer_large"
    config_class = TokenMixerLargeConfig
    config: TokenMixerLargeConfig

    def build_model(self, schema: FeatureSchema) -> TokenMixerLarge:
        return TokenMixerLarge(FeatureEncoder(schema, self.config.features), self.tasks, self.config)
