"""Taiji (Kuaishou, arXiv 2606.03866; METHODS.md §2.1): an LLM as enhancer of the ranker.

RUPR reverse reasoning (rupr.py) -> ORFT PPL rejection (orft.py) + LoRA SFT (sft.py) -> POPO multi-reward
GRPO (popo.py, rewards.py, rl/) -> semantic-ID user features for any ranker (features.py, enhancer.py).
`pipeline.py` runs the stages resumably; `recstack llm reason | filter | sft | popo | features` on the CLI.
"""

from recstack.llm.taiji.answer import Answer, ParsedOutput, format_answer, parse_output
from recstack.llm.taiji.categories import CategoryConfig, CategoryPaths
from recstack.llm.taiji.config import TaijiConfig
from recstack.llm.taiji.enhancer import join_user_features
from recstack.llm.taiji.features import FeaturesConfig, LLMFeatureQuantizer
from recstack.llm.taiji.orft import ORFTConfig, PPLRejectionFilter
from recstack.llm.taiji.pipeline import TaijiPipeline
from recstack.llm.taiji.popo import POPOConfig, POPOTrainer
from recstack.llm.taiji.rewards import RewardConfig, TaijiRewards
from recstack.llm.taiji.rupr import ReverseCoTGenerator, RUPRConfig

__all__ = [
    "Answer",
    "CategoryConfig",
    "CategoryPaths",
    "FeaturesConfig",
    "LLMFeatureQuantizer",
    "ORFTConfig",
    "POPOConfig",
    "POPOTrainer",
    "PPLRejectionFilter",
    "ParsedOutput",
    "RUPRConfig",
    "ReverseCoTGenerator",
    "RewardConfig",
    "TaijiConfig",
    "TaijiPipeline",
    "TaijiRewards",
    "format_answer",
    "join_user_features",
    "parse_output",
]
