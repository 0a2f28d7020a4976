"""TaijiConfig: every setting of the Taiji pipeline (pipeline.py) in one typed, YAML-loadable dataclass.

Each stage's interpretation flags ([I], METHODS.md §2.1) live in its own config: categories (common
root, depth), prompts (history budget, category list, hint wording), rupr (answer policy), orft
(quantile, scope, connector, answer in the scored text), popo.grpo (KL coefficient, loss type, reward
normalisation), popo.weighting (fixed / mgda / cv and their flags), rewards (partial credit, format
weight, ID-reward mode and shape), features (embedded text, code style, similar-user level).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from recstack.errors import ConfigError
from recstack.llm.taiji.categories import CategoryConfig
from recstack.llm.taiji.features import FeaturesConfig
from recstack.llm.taiji.orft import ORFTConfig
from recstack.llm.taiji.popo import POPOConfig
from recstack.llm.taiji.prompting import PromptConfig
from recstack.llm.taiji.rewards import RewardConfig
from recstack.llm.taiji.rupr import RUPRConfig
from recstack.llm.taiji.sft import SFTConfig
from recstack.semantic_ids.encoders.text import TextEncoderConfig


@dataclass
class TaijiConfig:
    dataset: str = "amazon-beauty"  # a prepared dataset's name or folder
    users: int | None = 200  # training users (reason, filter, sft, popo); None = all but the eval users
    eval_users: int = 100  # held-out users for next-intent accuracy
    feature_users: int | None = None  # users that get enhancer features; None = every user with train rows
    seed: int = 0
    part_size: int = 8  # users per resumable part
    teacher: dict[str, Any] = field(default_factory=dict)  # LLMConfig mapping
    student: dict[str, Any] = field(default_factory=dict)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    categories: CategoryConfig = field(default_factory=CategoryConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    rupr: RUPRConfig = field(default_factory=RUPRConfig)
    orft: ORFTConfig = field(default_factory=ORFTConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    popo: POPOConfig = field(default_factory=POPOConfig)
    rewards: RewardConfig = field(default_factory=RewardConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    eval_max_new_tokens: int = 256

    def __post_init__(self) -> None:
        if self.part_size <= 0 or self.eval_users < 0:
            raise ConfigError("taiji.part_size must be > 0 and taiji.eval_users >= 0")
