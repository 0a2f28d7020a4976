"""Evaluation: top-K and pointwise metrics, beyond-accuracy metrics, evaluators, prediction files.

Protocol (DESIGN.md): retrieval is evaluated by full ranking over all items with history masked;
ranking by AUC, GAUC and logloss per task.
"""

from __future__ import annotations

from recstack.eval.beyond import coverage, gini_index, novelty, popularity_bias, recommendation_counts
from recstack.eval.evaluator import TopKAccumulator, evaluate_retriever, sampled_metrics
from recstack.eval.pointwise import auc, gauc, logloss, pointwise_metrics
from recstack.eval.predictions import evaluate_prediction_file, read_predictions, write_predictions
from recstack.eval.topk import metrics_from_ranks, rank_of_target, target_hits, topk_metrics

__all__ = [
    "TopKAccumulator",
    "auc",
    "coverage",
    "evaluate_prediction_file",
    "evaluate_retriever",
    "gauc",
    "gini_index",
    "logloss",
    "metrics_from_ranks",
    "novelty",
    "pointwise_metrics",
    "popularity_bias",
    "rank_of_target",
    "read_predictions",
    "recommendation_counts",
    "sampled_metrics",
    "target_hits",
    "topk_metrics",
    "write_predictions",
]
