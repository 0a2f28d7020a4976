"""Policy optimisation shared by generative retrieval, page and LLM: GRPO with several rewards and a
pluggable weighting (fixed, mgda = POPO, cv = POPO-light; Taiji, METHODS.md §2.1).

    from recstack.rl import GRPOConfig, MultiRewardGRPO, group_advantages
    from recstack.registry import build
    grpo = MultiRewardGRPO(GRPOConfig(), build("weighting", {"name": "mgda"}), policy.parameters())
"""

from recstack.rl.advantages import combine_rewards, group_advantages
from recstack.rl.grpo import GRPOConfig, GRPOOutput, MultiRewardGRPO, clipped_surrogate, kl_penalty, token_weights
from recstack.rl.min_norm import min_norm_two, min_norm_weights
from recstack.rl.weighting import CVWeights, FixedWeights, MGDAWeights, WeightingStrategy

__all__ = [
    "CVWeights",
    "FixedWeights",
    "GRPOConfig",
    "GRPOOutput",
    "MGDAWeights",
    "MultiRewardGRPO",
    "WeightingStrategy",
    "clipped_surrogate",
    "combine_rewards",
    "group_advantages",
    "kl_penalty",
    "min_norm_two",
    "min_norm_weights",
    "token_weights",
]
