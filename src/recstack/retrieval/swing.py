"""Swing (Yang et al. 2020, "Large Scale Product Graph Construction for Recommendation in E-commerce").

    sim(i, j) = sum over user pairs {u, v}, u != v, both having i and j, of  w_u w_v / (alpha + |I_u ∩ I_v|)
    w_u = 1 / (|I_u| + alpha_user) ** beta      (1 when user_weighting is off)

Two users who share i and j but little else are strong evidence that i and j belong together; a
pair that shares everything (a bot, a heavy user) is discounted. Our interpretations [I]: each
unordered pair counts once; |I_u| is the user's distinct train items before sampling; sampling caps
the users kept per item (uniformly, seeded) before anything is counted, so the result stays symmetric.

Vectorised in three sparse steps, never a loop over users or items:
1. overlap counts c_uv = |I_u ∩ I_v| for all user pairs at once: the upper triangle of X X^T; only
   pairs with c_uv >= 2 can link two distinct items.
2. P [pairs, items]: row (u, v) marks I_u ∩ I_v. Built from every (u, v, i) triple with u < v both in
   U_i (generated per block of items), matched to the kept pairs with a sorted-key search.
3. sim = P^T diag(w_u w_v / (alpha + c_uv)) P without its diagonal, top-N per row (row blocks).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recstack.errors import ConfigError
from recstack.registry import register
from recstack.retrieval.i2i import I2IConfig, I2IRetriever, product_top_n

# Upper bound on (u, v, i) triples generated per block of items.
_TRIPLES_PER_BLOCK = 10_000_000


@dataclass
class SwingConfig(I2IConfig):
    alpha: float = 1.0  # smoothing in 1 / (alpha + |I_u ∩ I_v|)
    user_weighting: bool = True  # multiply by w_u w_v
    alpha_user: float = 5.0  # [I] w_u = 1 / (|I_u| + alpha_user) ** beta
    beta: float = 0.35  # [I]
    max_users_per_item: int | None = 500  # sample at most this many users per item; None = all
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha <= 0:
            raise ConfigError(f"alpha must be > 0, got {self.alpha}")
        if self.alpha_user < 0 or self.beta < 0:
            raise ConfigError(f"alpha_user and beta must be >= 0, got {self.alpha_user}, {self.beta}")
        if self.max_users_per_item is not None and self.max_users_per_item < 2:
            raise ConfigError(f"max_users_per_item must be >= 2 or null, got {self.max_users_per_item}")


def sample_users_per_item(interactions: sp.csr_matrix, max_users: int, seed: int) -> sp.csr_matrix:
    """Keep at most `max_users` random users in each item column (uniform, seeded)."""
    coo = interactions.tocoo()
    noise = np.random.default_rng(seed).random(coo.nnz)
    order = np.lexsort((noise, coo.col))
    cols = coo.col[order]
    rank = np.arange(coo.nnz) - np.searchsorted(cols, cols)
    keep = order[rank < max_users]
    return sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=interactions.shape)


def _item_pair_triples(by_item: sp.csc_matrix, start: int, stop: int) -> tuple[np.ndarray, ...]:
    """All (u, v, i) with u < v both users of item i, for items start..stop-1. Returns (u, v, i)."""
    indptr = by_item.indptr
    positions = np.arange(indptr[start], indptr[stop])
    items = np.repeat(np.arange(start, stop), np.diff(indptr[start : stop + 1]))
    later = indptr[items + 1] - positions - 1  # partners after this position in the same column
    first = np.repeat(positions, later)
    block_offsets = np.repeat(np.cumsum(later) - later, later)
    second = first + 1 + (np.arange(len(first)) - block_offsets)
    return by_item.indices[first].astype(np.int64), by_item.indices[second].astype(np.int64), np.repeat(items, later)


@register("retriever", "swing", config=SwingConfig)
class Swing(I2IRetriever):
    name = "swing"
    config: SwingConfig

    def __init__(self, config: SwingConfig | None = None) -> None:
        super().__init__(config or SwingConfig())

    def user_weights(self, interactions: sp.csr_matrix) -> np.ndarray:
        """[num_users + 1] w_u from distinct train items per user."""
        lengths = np.diff(interactions.tocsr().indptr).astype(np.float64)
        if not self.config.user_weighting:
            return np.ones_like(lengths)
        return (lengths + self.config.alpha_user) ** -self.config.beta

    def build_neighbours(self, interactions: sp.csr_matrix) -> sp.csr_matrix:
        """interactions: binary [num_users + 1, num_items + 1] -> top-N similarities, same item shape."""
        config = self.config
        weights = self.user_weights(interactions)
        x = interactions.tocsr()
        if config.max_users_per_item is not None:
            x = sample_users_per_item(x, config.max_users_per_item, config.seed)
        x = x.astype(np.float32)
        num_users, width = x.shape

        # 1. overlaps of user pairs sharing at least two items (upper triangle: each pair once)
        overlap = sp.triu(x @ x.T, k=1).tocoo()
        strong = overlap.data >= 2
        pair_u, pair_v = overlap.row[strong].astype(np.int64), overlap.col[strong].astype(np.int64)
        pair_keys = pair_u * num_users + pair_v
        order = np.argsort(pair_keys)
        pair_keys, pair_u, pair_v = pair_keys[order], pair_u[order], pair_v[order]
        pair_overlap = overlap.data[strong][order].astype(np.float64)
        if len(pair_keys) == 0:
            return sp.csr_matrix((width, width), dtype=np.float32)

        # 2. P [pairs, items]: the common items of each kept pair, from (u, v, i) triples per item block
        by_item = x.tocsc()
        by_item.sort_indices()
        col_lengths = np.diff(by_item.indptr).astype(np.int64)
        triples = np.cumsum(col_lengths * (col_lengths - 1) // 2)
        cuts = np.searchsorted(triples, np.arange(_TRIPLES_PER_BLOCK, triples[-1], _TRIPLES_PER_BLOCK))
        bounds = np.unique(np.concatenate([[0], cuts, [width]]))
        id_parts, item_parts = [], []
        for start, stop in itertools.pairwise(bounds):  # loop over item blocks, vectorised inside
            u, v, items = _item_pair_triples(by_item, int(start), int(stop))
            keys = u * num_users + v
            slot = np.minimum(np.searchsorted(pair_keys, keys), len(pair_keys) - 1)
            hit = pair_keys[slot] == keys
            id_parts.append(slot[hit])
            item_parts.append(items[hit])
        pair_ids, pair_items = np.concatenate(id_parts), np.concatenate(item_parts)
        common = sp.csr_matrix(
            (np.ones(len(pair_ids), np.float32), (pair_ids, pair_items)), shape=(len(pair_keys), width)
        )

        # 3. sim = P^T diag(pair weight) P, diagonal dropped, top-N per item
        pair_weight = weights[pair_u] * weights[pair_v] / (config.alpha + pair_overlap)
        weighted_t = sp.csr_matrix((pair_weight[pair_ids], (pair_items, pair_ids)), shape=(width, len(pair_keys)))
        return product_top_n(weighted_t, common, config.neighbours)
