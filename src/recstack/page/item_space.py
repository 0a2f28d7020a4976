"""Item vectors and semantic IDs for page arrangers, learned from the training log alone.

Vectors: a truncated SVD of the binary user × item matrix of the train rows (items that share users
are close), scaled by sqrt(singular value) and L2-normalised; MMR measures redundancy with them.
Semantic IDs: residual k-means (RQ-KMeans, semantic_ids/) over those vectors plus a dedup level, so
every item has a distinct code tuple; PageLLM spells items with these tokens and uses the first level
as the item's category in the diversity and redundancy preference pairs ([I]: the paper's items carry
product categories; a collaborative code gives every dataset one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from recstack.data.dataset import Dataset
from recstack.errors import DataError
from recstack.semantic_ids.kmeans import KMeansConfig
from recstack.semantic_ids.rq_kmeans import RQKMeans, RQKMeansConfig
from recstack.semantic_ids.semantic_ids import dedup_level


@dataclass
class ItemSpaceConfig:
    dim: int = 32
    """SVD rank of the item vectors"""
    levels: int = 2
    """semantic-ID levels before the dedup level"""
    codebook_size: int = 16
    seed: int = 0


@dataclass
class ItemSpace:
    """vectors [N + 1, dim] (row 0 = padding, zeros); codes [N + 1, levels + 1] (row 0 = zeros: item 0
    is never a real candidate); vocab: tokens per level."""

    vectors: torch.Tensor
    codes: torch.Tensor
    vocab: list[int] = field(default_factory=list)

    def category(self, items: torch.Tensor) -> torch.Tensor:
        """First semantic-ID level of items [...] (same shape)."""
        return self.codes[items.long(), 0]


def item_space(dataset: Dataset, config: ItemSpaceConfig) -> ItemSpace:
    """Fit vectors and semantic IDs on the train rows of `dataset` (the retrieval view)."""
    train = dataset.split_frame("train")
    if train.height == 0:
        raise DataError(f"{dataset.name}: no train rows to learn item vectors from")
    users = torch.tensor(train["user"].to_numpy(), dtype=torch.long)
    items = torch.tensor(train["item"].to_numpy(), dtype=torch.long)
    n_items = dataset.num_items
    shape = (dataset.num_users + 1, n_items + 1)
    indices = torch.unique(torch.stack([users, items]), dim=1)  # binary: a repeated event counts once
    matrix = torch.sparse_coo_tensor(indices, torch.ones(indices.shape[1]), shape, check_invariants=False)
    rank = min(config.dim, n_items, dataset.num_users)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed)  # svd_lowrank draws a random sketch from the global generator
    try:
        _, singular, right = torch.svd_lowrank(matrix, q=rank, niter=4)
    finally:
        torch.random.set_rng_state(generator_state)
    vectors = right * singular.sqrt()
    vectors = torch.nn.functional.normalize(vectors, dim=1)
    vectors[0] = 0.0
    codebook = min(config.codebook_size, max(2, n_items // 4))
    quantizer = RQKMeans(
        RQKMeansConfig(levels=config.levels, codebook_size=codebook, seed=config.seed, kmeans=KMeansConfig(nredo=1))
    )
    quantizer.fit(vectors[1:])
    codes = quantizer.encode(vectors[1:]).long()
    codes = torch.cat([codes, dedup_level(codes).unsqueeze(1)], dim=1)
    codes = torch.cat([torch.zeros(1, codes.shape[1], dtype=torch.long), codes])
    vocab = [int(codes[:, level].max()) + 1 for level in range(codes.shape[1])]
    return ItemSpace(vectors, codes, vocab)
