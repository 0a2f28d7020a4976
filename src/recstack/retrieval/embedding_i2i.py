"""Embedding I2I: item-item neighbours by cosine similarity of item vectors from any item encoder.

Used for the embedding similarity (SASRec / two-tower item embeddings) and content similarity
(MiniLM item text) I2I channels for U2I2I retrieval and CAPTS trigger routing (METHODS.md §2.5).

    retrieval:
      emb_i2i:     {name: embedding_i2i}                        # collab: SASRec item table (default)
      content_i2i: {name: embedding_i2i, encoder: {name: text}} # MiniLM over the item text fields
      # shorthand: `encoder: text` == `encoder: {name: text}`

fit(dataset):
1. vectors = encode_items(encoder, dataset): [num_items + 1, D] through the on-disk embedding cache
   (a hit never loads or trains the encoder's model). Row 0 (padding) and all-zero rows (items the
   encoder knows nothing about) are left out: they get no neighbours and are nobody's neighbour.
2. with `normalize`, each row is L2-normalised, so inner product = cosine.
3. exact search (FAISS IndexFlatIP over the kept rows, N x N inner products; blocks of query rows
   bound memory): each item's top `neighbours` + 1, then self, padding and (optionally) neighbours
   below `min_similarity` are dropped and at most `neighbours` kept. One more than needed is fetched
   because self normally comes first; when it does not (duplicates tie with it), the cap still holds.
4. table value = (1 + s / scale) / 2 with s the similarity: scale = 1 for cosine, so the value is
   (1 + cos) / 2 in [0, 1]; without `normalize`, scale = the largest |s| kept. I2I scores and the
   popularity backfill assume every stored similarity is > 0 (backfill scores are negative), so
   the shift keeps the ranking within a row and makes the values positive; a value is floored at
   1e-6 so that an exactly opposite neighbour (cos = -1) still counts as found.

The table is a CSR [num_items + 1, num_items + 1], like ItemCF / Swing, so retrieval (last-N
triggers), `expand` (given triggers) and save/load are I2IRetriever's. A loaded channel needs
neither the encoder nor the vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np
import scipy.sparse as sp
import torch

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.registry import build, lookup, register
from recstack.retrieval.ann import faiss_threads
from recstack.retrieval.i2i import I2IConfig, I2IRetriever
from recstack.semantic_ids.encoders import ItemEncoder, encode_items

DEFAULT_ENCODER: dict[str, Any] = {"name": "collab", "retriever": "sasrec"}
# Upper bound on (query row, result) cells per FAISS search block (16M: ~200 MB of scores, ids, masks).
_SEARCH_CELLS_PER_BLOCK = 1 << 24
# Smallest stored value: an exactly opposite neighbour must stay > 0 (see the module docstring).
_MIN_VALUE = 1e-6
_WHERE = "embedding_i2i.encoder"


@dataclass
class EmbeddingI2IConfig(I2IConfig):
    # item_encoder spec ({"name": ..., **its config}); a bare name is short for {"name": name}.
    encoder: dict[str, Any] | str = field(default_factory=lambda: dict(DEFAULT_ENCODER))
    normalize: bool = True  # L2-normalise the item vectors: similarity = cosine
    min_similarity: float | None = None  # drop neighbours below this similarity (cosine with normalize)
    threads: int = 2  # FAISS OpenMP threads (kept small: the search shares the machine)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.encoder, str):
            self.encoder = {"name": self.encoder}
        if not isinstance(self.encoder, dict) or not isinstance(self.encoder.get("name"), str):
            raise ConfigError(
                f"{_WHERE}: expected an item_encoder name or a mapping with a 'name' key "
                f"(e.g. {{name: text}}), got {self.encoder!r}"
            )
        try:
            lookup("item_encoder", self.encoder["name"])
        except ConfigError as exc:  # the registry's message does not say which key held the name
            raise ConfigError(f"{_WHERE}: {exc}") from exc
        build("item_encoder", self.encoder, where=_WHERE)  # checks the encoder's own keys now, not at fit
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.min_similarity is not None:
            if not np.isfinite(self.min_similarity):
                raise ConfigError(f"min_similarity must be a finite number or null, got {self.min_similarity}")
            if self.normalize and not -1.0 <= self.min_similarity <= 1.0:
                raise ConfigError(
                    f"min_similarity is a cosine (normalize: true): need [-1, 1], got {self.min_similarity}"
                )

    @property
    def encoder_spec(self) -> dict[str, Any]:
        """The encoder spec as a mapping (__post_init__ has turned a bare name into one)."""
        return self.encoder if isinstance(self.encoder, dict) else {"name": self.encoder}


@register("retriever", "embedding_i2i", config=EmbeddingI2IConfig)
class EmbeddingI2I(I2IRetriever):
    """I2I channel over item-vector similarity. `encoder` may be injected (e.g. a TextEncoder holding an
    already loaded model); otherwise it is built from `config.encoder` at fit."""

    name = "embedding_i2i"
    config: EmbeddingI2IConfig

    def __init__(self, config: EmbeddingI2IConfig | None = None, encoder: ItemEncoder | None = None) -> None:
        super().__init__(config or EmbeddingI2IConfig())
        self.encoder = encoder
        self.encoder_stats: dict[str, Any] = {}  # the encoder's stats at the last fit (cache hit/miss, dim, ...)

    def fit(self, dataset: Dataset) -> EmbeddingI2I:
        encoder = self.encoder or build("item_encoder", self.config.encoder_spec, where=_WHERE)
        vectors = encode_items(encoder, dataset)  # [num_items + 1, D], row 0 = zeros
        if vectors.shape[0] != dataset.num_items + 1:
            raise DataError(
                f"{self.name}: encoder {encoder.name!r} gave {vectors.shape[0]} rows, "
                f"dataset {dataset.name!r} needs {dataset.num_items + 1}"
            )
        self.neighbours = self.neighbours_from_vectors(vectors)
        self.popularity = dataset.item_popularity("train").numpy().astype(np.float32)
        self.encoder_stats = dict(encoder.stats)
        return self

    def build_neighbours(self, interactions: sp.csr_matrix) -> sp.csr_matrix:
        raise DataError(f"{self.name} builds its table from item vectors: call fit(dataset) or neighbours_from_vectors")

    def neighbours_from_vectors(self, vectors: torch.Tensor) -> sp.csr_matrix:
        """vectors: [num_items + 1, D] (row 0 = padding) -> CSR [num_items + 1, num_items + 1] with at most
        `neighbours` values (1 + s / scale) / 2 per row, s = similarity; zero rows stay empty."""
        if vectors.ndim != 2 or vectors.shape[0] < 1:
            raise DataError(f"{self.name}: expected item vectors [num_items + 1, D], got {tuple(vectors.shape)}")
        config = self.config
        x = vectors.detach().float().cpu().numpy().copy()
        if not np.isfinite(x).all():
            raise DataError(f"{self.name}: item vectors contain NaN or inf")
        width = x.shape[0]
        norms = np.linalg.norm(x, axis=1)
        kept = np.flatnonzero(norms > 0)
        kept = kept[kept > 0]  # [K] item ids with a vector; padding never enters the index
        if len(kept) < 2:  # nothing can have a neighbour
            return sp.csr_matrix((width, width), dtype=np.float32)
        if config.normalize:
            x[kept] /= norms[kept, None]
        base = np.ascontiguousarray(x[kept])  # [K, D]; FAISS position p is item kept[p]
        fetch = min(config.neighbours + 1, len(kept))
        step = max(1, _SEARCH_CELLS_PER_BLOCK // fetch)
        index = faiss.IndexFlatIP(base.shape[1])
        parts_rows, parts_cols, parts_sims = [], [], []
        with faiss_threads(config.threads):
            index.add(base)
            for start in range(0, len(kept), step):  # blocks of query rows, not a loop over items
                sims, positions = index.search(base[start : start + step], fetch)  # [R, fetch], best first
                rows = np.broadcast_to(kept[start : start + step, None], positions.shape)
                found = positions >= 0  # FAISS pads missing results with -1
                cols = kept[np.where(found, positions, 0)]
                keep = found & (cols != rows)
                if config.min_similarity is not None:
                    keep &= sims >= config.min_similarity
                keep &= np.cumsum(keep, axis=1) <= config.neighbours  # the best `neighbours` that remain
                parts_rows.append(rows[keep])
                parts_cols.append(cols[keep])
                parts_sims.append(sims[keep])
        rows, cols, sims = (np.concatenate(p) for p in (parts_rows, parts_cols, parts_sims))
        sims = sims.astype(np.float64)
        if config.normalize:
            sims = np.clip(sims, -1.0, 1.0)  # float rounding can put a cosine just past +-1
            scale = 1.0
        else:
            scale = float(np.abs(sims).max()) if len(sims) else 1.0
            scale = scale if scale > 0 else 1.0
        values = np.maximum((1.0 + sims / scale) / 2.0, _MIN_VALUE).astype(np.float32)
        table = sp.csr_matrix((values, (rows.astype(np.int64), cols.astype(np.int64))), shape=(width, width))
        table.sort_indices()
        return table
