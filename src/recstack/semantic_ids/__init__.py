"""Semantic IDs: item embeddings -> short code tuples (DESIGN.md, "SemanticIds").

    from recstack.registry import build
    quantizer = build("quantizer", {"name": "rq_kmeans", "levels": 3, "codebook_size": 256}).fit(embeddings)
    sids = SemanticIds.from_quantizer(quantizer, item_embeddings)   # [num_items + 1, D], row 0 padding
    sids.allowed_next(prefix)      # constrained decoding;  sids.diagnostics(item_embeddings)

Quantizers (registry kind "quantizer"): rq_kmeans, res_kmeans_fsq, rq_vae, rq_gmm.
"""

from recstack.semantic_ids.base import Quantizer, QuantizerConfig
from recstack.semantic_ids.diagnostics import code_diagnostics
from recstack.semantic_ids.semantic_ids import PrefixTrie, SemanticIds, dedup_level

__all__ = ["PrefixTrie", "Quantizer", "QuantizerConfig", "SemanticIds", "code_diagnostics", "dedup_level"]
