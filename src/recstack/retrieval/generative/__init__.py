"""Generative retrieval over semantic IDs (DESIGN.md: retrieval/generative/).

    base.py         GenerativeModel interface, GenerativeConfig, GenerativeRetriever (fit / retrieve / save / load)
    data.py         jagged histories -> batches of semantic-ID tokens (GenerativeData, history_tensors)
    beam_search.py  batched beam search constrained by the SemanticIds prefix trie, with KV cache
    tiger.py        TIGER encoder-decoder (registered retriever "tiger")
    onemall.py      OneMall-style decoder-only model (registered retriever "onemall")
"""

from recstack.retrieval.generative.base import (DecodeState, GenerativeConfig, GenerativeModel, GenerativeRetriever,
                                                ModelShape, reorder_state)

__all__ = ["DecodeState", "GenerativeConfig", "GenerativeModel", "GenerativeRetriever", "ModelShape", "reorder_state"]
