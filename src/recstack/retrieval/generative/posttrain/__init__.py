"""RL post-training of a generative retriever with the cascade's ranker as reward (OneMall, arXiv
2601.21770, METHODS.md §2.16; issue 14 item 2).

config.py      RLPostTrainConfig (every interpretation [I] a field)
requests.py    train requests (history before one train interaction + its item) as UserBatches
losses.py      fused reward, group screening (NaN / constant groups skipped), teacher-forced code
               log-probs, masked group advantages, GRPO and DPO losses
objective.py   L_RL over a step's kept groups, and the model's own NTP (+ contrastive) loss
trainer.py     PostTrainer / post_train: the loop (beam -> ranker reward -> update), reference sync
checkpoint.py  resumable checkpoints (safetensors + JSON)
evaluate.py    reward of the top-10/100 generated items and test recall, before vs after

    from recstack.retrieval.generative.posttrain import RLPostTrainConfig, post_train
    log = post_train(retriever, ranker, dataset, RLPostTrainConfig(objective="grpo"), work_dir)

`recstack posttrain RUN --channel NAME` runs it on a saved cascade (cli/posttrain.py).
"""

from recstack.retrieval.generative.posttrain.config import RLPostTrainConfig
from recstack.retrieval.generative.posttrain.evaluate import (
    compare_metrics,
    generated_reward,
    posttrain_metrics,
    sample_users,
)
from recstack.retrieval.generative.posttrain.trainer import PostTrainer, RewardModel, post_train

__all__ = [
    "PostTrainer",
    "RLPostTrainConfig",
    "RewardModel",
    "compare_metrics",
    "generated_reward",
    "post_train",
    "posttrain_metrics",
    "sample_users",
]
