"""Item encoders: each item -> one vector, the input of a semantic-ID quantizer.

    from recstack.registry import build
    from recstack.semantic_ids.encoders import encode_items

    encoder = build("item_encoder", {"name": "text", "batch_size": 128})
    embeddings = encode_items(encoder, dataset)   # Tensor[num_items + 1, D]; row i = item i, row 0 = zeros

Registered encoders (kind "item_encoder"):
- "text":    a local sentence-transformers model over the item text fields (TIGER, METHODS.md §1.4).
- "collab":  item embeddings of a trained retriever (SASRec or two-tower).
- "fused":   several encoders, L2-normalised and concatenated, or a learned projection of them.
- "aligned": any encoder's vectors projected by an MLP trained with InfoNCE on Swing item-item pairs
             (QARM item alignment, METHODS.md §1.6 / §2.15).

`encode_items` goes through the on-disk cache (`cache.py`): a hit never loads a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from recstack.config import to_dict
from recstack.data.dataset import Dataset
from recstack.errors import DataError
from recstack.registry import add_plugin_modules

if TYPE_CHECKING:
    from recstack.semantic_ids.encoders.cache import CacheKey, EmbeddingCache

add_plugin_modules(
    "item_encoder",
    [
        "recstack.semantic_ids.encoders.text",
        "recstack.semantic_ids.encoders.collaborative",
        "recstack.semantic_ids.encoders.fused",
        "recstack.semantic_ids.encoders.alignment",
    ],
)


class ItemEncoder:
    """Base class. Subclasses set `name`, keep a dataclass config in `self.config`, implement `encode`
    and `fingerprint`, and record what they did in `self.stats` (counts, seconds) for reports."""

    name: str = "item_encoder"
    config: Any = None
    # Config keys that do not change the vectors (left out of the cache key).
    cache_ignore: tuple[str, ...] = ("device", "batch_size", "progress")

    def __init__(self) -> None:
        self.stats: dict[str, Any] = {}

    def encode(self, dataset: Dataset, cache: EmbeddingCache | None = None) -> torch.Tensor:
        """[num_items + 1, D] float32 (row 0 = padding = zeros). `cache` is for encoders built on others."""
        raise NotImplementedError

    def model_id(self) -> str:
        """Short name of the model behind the vectors (a file-name-safe slug is made from it)."""
        return self.name

    def fingerprint(self, dataset: Dataset) -> str:
        """Digest of what the vectors depend on in `dataset` (item texts, train interactions, ...)."""
        raise NotImplementedError

    def cache_key(self, dataset: Dataset) -> CacheKey:
        from recstack.semantic_ids.encoders.cache import CacheKey, digest

        config = to_dict(self.config) if self.config is not None else {}
        config = {k: v for k, v in config.items() if k not in self.cache_ignore}
        return CacheKey(self.name, self.model_id(), digest(config, self.fingerprint(dataset)))


def check_embeddings(embeddings: torch.Tensor, dataset: Dataset, who: str) -> torch.Tensor:
    """Validate [num_items + 1, D] finite vectors aligned with `dataset`; returns them as float32 with row 0 = 0."""
    expected = dataset.num_items + 1
    if embeddings.ndim != 2 or embeddings.shape[0] != expected:
        raise DataError(
            f"{who}: embeddings have shape {tuple(embeddings.shape)}, expected [{expected}, D] "
            f"(num_items + 1 rows for dataset {dataset.name!r})"
        )
    embeddings = embeddings.detach().float().cpu().contiguous()
    if not torch.isfinite(embeddings).all():
        bad = int((~torch.isfinite(embeddings)).any(1).nonzero()[0])
        raise DataError(f"{who}: embedding of item {bad} is not finite (NaN or inf)")
    embeddings[0] = 0.0
    return embeddings


def encode_items(encoder: ItemEncoder, dataset: Dataset, cache: bool | EmbeddingCache = True) -> torch.Tensor:
    """Embeddings of every item through the on-disk cache (True = under RECSTACK_HOME, False = none)."""
    from recstack.semantic_ids.encoders.cache import encode_items as cached_encode

    return cached_encode(encoder, dataset, cache)


__all__ = ["ItemEncoder", "check_embeddings", "encode_items"]
