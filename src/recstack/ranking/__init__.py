"""Ranking: the Ranker protocol, samples, features, multi-task heads and models/ (one file per architecture)."""

from recstack.ranking.base import Ranker, RankerConfig, RankingModel, evaluate_ranker
from recstack.ranking.features import FeatureConfig
from recstack.ranking.samples import SampleConfig

__all__ = ["FeatureConfig", "Ranker", "RankerConfig", "RankingModel", "SampleConfig", "evaluate_ranker"]
