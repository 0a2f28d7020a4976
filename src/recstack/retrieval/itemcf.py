"""ItemCF: item-item co-occurrence in users' train histories, IUF-weighted and cosine-normalised.

    sim(i, j) = sum_{u in U_i ∩ U_j} 1 / log(1 + |I_u|)   /   (|U_i| ** alpha * |U_j| ** (1 - alpha))

computed as one sparse product  diag(|U|^-alpha) X^T D X diag(|U|^(alpha-1))  with X the binary
[users, items] train matrix and D = diag(1 / log(1 + |I_u|)) (inverse user frequency: a very active
user says less about each pair). alpha = 0.5 is the cosine normalisation sqrt(|U_i| |U_j|); alpha = 1
normalises by the trigger item only (conditional probability). Only the top `neighbours` per item are
kept. Retrieval is U2I2I over the last N history items (see i2i.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recstack.errors import ConfigError
from recstack.registry import register
from recstack.retrieval.i2i import I2IConfig, I2IRetriever, product_top_n


@dataclass
class ItemCFConfig(I2IConfig):
    alpha: float = 0.5  # normaliser |U_i|^alpha |U_j|^(1-alpha); 0.5 = cosine
    iuf: bool = True  # weight each user's co-occurrences by 1 / log(1 + |I_u|)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha must be in [0, 1], got {self.alpha}")


def _power(counts: np.ndarray, exponent: float) -> np.ndarray:
    """counts ** -exponent, with 0 where counts == 0 (items nobody interacted with)."""
    safe = np.where(counts > 0, counts, 1.0)
    return np.where(counts > 0, safe**-exponent, 0.0)


@register("retriever", "itemcf", config=ItemCFConfig)
class ItemCF(I2IRetriever):
    name = "itemcf"
    config: ItemCFConfig

    def __init__(self, config: ItemCFConfig | None = None) -> None:
        super().__init__(config or ItemCFConfig())

    def build_neighbours(self, interactions: sp.csr_matrix) -> sp.csr_matrix:
        """interactions: binary [num_users + 1, num_items + 1] -> top-N similarities, same item shape."""
        x = interactions.tocsr().astype(np.float64)
        user_lengths = np.asarray(x.sum(axis=1)).ravel()
        item_users = np.asarray(x.sum(axis=0)).ravel()
        if self.config.iuf:
            user_weights = np.where(user_lengths > 0, 1.0 / np.log1p(np.maximum(user_lengths, 1.0)), 0.0)
        else:
            user_weights = np.ones_like(user_lengths)
        left = sp.diags(_power(item_users, self.config.alpha)) @ x.T @ sp.diags(user_weights)
        right = x @ sp.diags(_power(item_users, 1.0 - self.config.alpha))
        return product_top_n(left.tocsr(), right.tocsr(), self.config.neighbours)
