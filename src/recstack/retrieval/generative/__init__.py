"""Generative retrieval over semantic IDs (DESIGN.md: retrieval/generative/).

base.py         GenerativeModel interface (loss / begin / step / reorder), the batch dict, GenerativeConfig
retriever.py    GenerativeRetriever: semantic IDs, fit (shared Trainer), retrieve, evaluate, save / load
behaviours.py   behaviour sequences of the context (OneMall)
compute.py      traced FLOPs per sample
data.py         jagged histories -> batches of semantic-ID tokens (GenerativeData, history_tensors)
beam_search.py  batched beam search constrained by the SemanticIds prefix trie, with KV cache
tiger.py        TIGER encoder-decoder (registered retriever "tiger")
onemall.py      OneMall-style decoder-only model (registered retriever "onemall")
"""

from recstack.retrieval.generative.base import DecodeState, GenerativeConfig, GenerativeModel, ModelShape, reorder_state
from recstack.retrieval.generative.retriever import GenerativeRetriever

__all__ = ["DecodeState", "GenerativeConfig", "GenerativeModel", "GenerativeRetriever", "ModelShape", "reorder_state"]
