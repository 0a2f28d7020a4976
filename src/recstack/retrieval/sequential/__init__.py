"""Sequential U2I retrievers: a causal encoder over the user's item sequence, tied item table."""

from recstack.retrieval.sequential.common import SequentialConfig, SequentialModel, SequentialRetriever, TrainingWindows
from recstack.retrieval.sequential.hstu import HSTU, HSTUConfig
from recstack.retrieval.sequential.sasrec import SASRec, SASRecConfig

__all__ = [
    "HSTU",
    "HSTUConfig",
    "SASRec",
    "SASRecConfig",
    "SequentialConfig",
    "SequentialModel",
    "SequentialRetriever",
    "TrainingWindows",
]
