"""PageLLM settings (METHODS.md §2.2); every [I] interpretation of the paper is a field here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from recstack.errors import ConfigError
from recstack.page.fused import PageConfig
from recstack.page.item_space import ItemSpaceConfig

PAIR_FAMILIES = ("relevance", "ranking", "diversity", "redundancy")


@dataclass
class PageModelConfig:
    """The small transformer backbone (the paper's LLM; [I] the default is a 2-layer encoder-decoder)."""

    dim: int = 64
    heads: int = 2
    layers: int = 2
    dropout: float = 0.1
    history_len: int = 20
    """last history items the user context keeps"""


@dataclass
class PPOConfig:
    steps: int = 60
    """PPO iterations (rollout + update)"""
    batch_size: int = 128
    """pages sampled per iteration"""
    epochs: int = 2
    """passes over each rollout"""
    lr: float = 3e-4
    clip: float = 0.2
    kl_coef: float = 0.05
    """per-slot KL penalty to the SFT policy, folded into the reward (standard RLHF)"""
    value_coef: float = 0.5
    entropy_coef: float = 0.0
    gamma: float = 1.0
    gae_lambda: float = 0.95


@dataclass
class PageLLMConfig(PageConfig):
    """Fused-page settings (the fused order fills the page's tail and is a candidate feature), then:"""

    pool: int = 50
    """top fused candidates the policy chooses the page from (the paper's candidate set in the prompt)"""
    backbone: str = "transformer"
    """the page policy: "transformer" (small encoder-decoder, model.py) or "llm" (a causal LM with LoRA and
    added semantic-ID tokens, llm_policy.py, as in the paper)"""
    model: PageModelConfig = field(default_factory=PageModelConfig)
    """the transformer backbone, and the reward models (always this architecture)"""
    llm: dict[str, Any] = field(default_factory=dict)
    """backbone llm: the LLMConfig mapping ({} = the offline SmolLM2-135M-Instruct; {model: tiny} in tests)"""
    lora: dict[str, Any] = field(default_factory=dict)
    """backbone llm: LoraSettings overrides (r, alpha, dropout, target_modules)"""
    item_space: ItemSpaceConfig = field(default_factory=ItemSpaceConfig)
    sft_epochs: int = 20
    sft_lr: float = 2e-3
    batch_size: int = 128
    target_page: str = "engaged_first"
    """[I] the supervised page of a request: its engaged items first, then the fused order"""
    sft_slots: str = "page"
    """[I] slots the SFT loss covers: "engaged" = only slots holding an engaged item (requests without one
    are skipped; the policy learns what users take, not to copy the fused order), "page" = every slot"""
    families: list[str] = field(default_factory=lambda: list(PAIR_FAMILIES))
    """[I] preference-pair families built from the log (relevance, ranking, diversity, redundancy)"""
    pairs_per_family: int = 2
    """pairs drawn per request and family"""
    reward_epochs: int = 10
    reward_lr: float = 2e-3
    alpha: float = 0.5
    """R = alpha * R_page + (1 - alpha) * sum_k w_k * r_item(i_k, k)"""
    page_reward: bool = True
    """ablation switch: False drops R_page (the paper reports -17.8% NDCG@100)"""
    item_reward: bool = True
    """ablation switch: False drops the item rewards (the paper reports -15.2% NDCG@100)"""
    position_weights: str = "dcg"
    """[I] w_k of the item reward: "dcg" = 1 / log2(k + 1), "uniform" = 1"""
    normalise_rewards: bool = True
    """[I] z-score each reward model's output over the SFT policy's pages before mixing"""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.families) - set(PAIR_FAMILIES))
        if unknown:
            raise ConfigError(f"page.families: unknown family {unknown[0]!r}; known: {', '.join(PAIR_FAMILIES)}")
        if self.pool < self.k:
            raise ConfigError(f"page.pool ({self.pool}) must be >= page.k ({self.k})")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"page.alpha must be in [0, 1], got {self.alpha}")
        if self.backbone not in ("transformer", "llm"):
            raise ConfigError(f"page.backbone must be 'transformer' or 'llm', got {self.backbone!r}")
        if self.position_weights not in ("dcg", "uniform"):
            raise ConfigError(f"page.position_weights must be 'dcg' or 'uniform', got {self.position_weights!r}")
        if self.sft_slots not in ("engaged", "page"):
            raise ConfigError(f"page.sft_slots must be 'engaged' or 'page', got {self.sft_slots!r}")
        if self.target_page != "engaged_first":
            raise ConfigError(f"page.target_page: only 'engaged_first' is implemented, got {self.target_page!r}")
