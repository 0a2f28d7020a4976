"""Sentence embeddings of free text (intents, chains of thought) and text search over the item catalogue.

The same frozen MiniLM as the semantic-ID text encoder (semantic_ids/encoders/text.py; never downloaded):
the catalogue is embedded through that encoder's on-disk cache, queries with the same model, and the
search is exact inner product in FAISS (retrieval/ann.py). Vectors are L2-normalised, so scores are cosines.

    embedder = TextEmbedder(TextEncoderConfig())          # or TextEmbedder(model=any object with .encode)
    search = CatalogueSearch(dataset, embedder)
    items, scores = search.search(embedder.encode(["Makeup > Nails: a red polish"]), k=50)   # [B, k] each
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recstack.data.dataset import Dataset
from recstack.data.jagged import Jagged
from recstack.errors import DataError
from recstack.retrieval.ann import AnnConfig, AnnIndex
from recstack.semantic_ids.encoders import encode_items
from recstack.semantic_ids.encoders.text import SentenceModel, TextEncoder, TextEncoderConfig


class TextEmbedder:
    """texts -> [N, D] float32 (L2-normalised) with a local sentence-transformers model."""

    def __init__(self, config: TextEncoderConfig | None = None, model: SentenceModel | None = None) -> None:
        self.encoder = TextEncoder(config or TextEncoderConfig(), model=model)
        self._given = model is not None

    def release(self) -> None:
        """Forget a sentence model loaded from the config (the next encode loads it again), so that it does
        not outlive the pipeline stage that needed it; a model passed in belongs to the caller and stays."""
        if not self._given:
            self.encoder.model = None

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        texts = list(texts)
        if not texts:
            raise DataError("TextEmbedder.encode: no texts")
        unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        c = self.encoder.config
        vectors = self.encoder.load_model().encode(
            list(unique), batch_size=c.batch_size, convert_to_tensor=True, normalize_embeddings=True
        )
        vectors = torch.as_tensor(vectors).float().cpu()
        vectors = torch.nn.functional.normalize(vectors, dim=1)
        return vectors[torch.from_numpy(inverse.reshape(-1).astype(np.int64))]

    def items(self, dataset: Dataset, cache: bool = True) -> torch.Tensor:
        """[num_items + 1, D] catalogue embeddings (row 0 = zeros), through the embedding cache."""
        vectors = encode_items(self.encoder, dataset, cache)
        return torch.nn.functional.normalize(vectors, dim=1)


class CatalogueSearch:
    """Exact inner-product search of query vectors over every item's text embedding."""

    def __init__(self, dataset: Dataset, embedder: TextEmbedder, cache: bool = True, threads: int = 2) -> None:
        self.item_vectors = embedder.items(dataset, cache)
        ids = torch.arange(1, dataset.num_items + 1)
        self.index = AnnIndex(AnnConfig(kind="flat", threads=threads)).build(self.item_vectors[1:], ids)

    def search(self, queries: torch.Tensor, k: int, exclude: Jagged | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """queries [B, D] -> item ids [B, k] (0 = no result) and cosine scores [B, k], best first; `exclude`:
        a Jagged of B rows of item ids left out (the users' histories)."""
        return self.index.search(queries, k, exclude)
