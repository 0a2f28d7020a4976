"""Shared item-to-item (I2I) machinery: sparse top-N neighbour tables and U2I2I expansion.

An I2I channel (ItemCF, Swing, ...) learns `neighbours`, a CSR matrix [num_items + 1, num_items + 1]
holding at most `config.neighbours` similarities per row (row/column 0 = padding, always empty).
Retrieval is U2I2I: a trigger function picks weighted seed items per user, and

    scores = triggers [B, num_items + 1] (CSR)  @  neighbours [num_items + 1, num_items + 1] (CSR)

is one sparse product; each row's top-k (history masked) are the candidates. Rows with fewer than
k items are backfilled with popular items (still tagged with this channel). A user with no history
(cold start) has no triggers and gets popular items only.

Triggers are pluggable: `retriever.trigger_fn` is any callable batch -> (rows, items, weights), so a
learned trigger selector (CAPTS, METHODS.md §2.5) can replace the default "last N items".
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.numpy import load_file, save_file

from recstack.data.batch import Candidates, UserBatch
from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.retrieval.base import Retriever

# batch -> (rows [T] long, items [T] long, weights [T] float): the triggers of every user in the batch.
TriggerFn = Callable[[UserBatch], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

# Upper bound on multiply-adds per chunk of a sparse product, to keep peak memory bounded.
_PRODUCT_WORK_PER_CHUNK = 20_000_000
# Upper bound on dense score cells per block of users at retrieval (16M floats = 64 MB).
_DENSE_TOPK_ELEMENTS = 1 << 24


@dataclass
class I2IConfig:
    neighbours: int = 200  # similar items kept per item
    num_triggers: int = 20  # triggers per user: the last N history items
    trigger_decay: float = 1.0  # weight of a trigger = decay ** (steps before the latest); 1 = no decay

    def __post_init__(self) -> None:
        if self.neighbours < 1:
            raise ConfigError(f"neighbours must be >= 1, got {self.neighbours}")
        if self.num_triggers < 1:
            raise ConfigError(f"num_triggers must be >= 1, got {self.num_triggers}")
        if not 0.0 < self.trigger_decay <= 1.0:
            raise ConfigError(f"trigger_decay must be in (0, 1], got {self.trigger_decay}")


# ---- sparse helpers -----------------------------------------------------------------------------
def interaction_matrix(dataset: Dataset) -> sp.csr_matrix:
    """Binary train-split matrix [num_users + 1, num_items + 1] (repeat interactions count once)."""
    train = dataset.split_frame("train")
    users = train["user"].to_numpy().astype(np.int64)
    items = train["item"].to_numpy().astype(np.int64)
    matrix = sp.csr_matrix(
        (np.ones(len(users), np.float32), (users, items)), shape=(dataset.num_users + 1, dataset.num_items + 1)
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def top_n_per_row(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n: int, shape: tuple[int, int]
) -> sp.csr_matrix:
    """CSR keeping the `n` largest values of each row (ties -> smaller column), from COO triplets."""
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    starts = np.searchsorted(rows, np.arange(shape[0]))
    rank = np.arange(len(rows)) - starts[rows]
    keep = rank < n
    counts = np.bincount(rows[keep], minlength=shape[0])
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return sp.csr_matrix((values[keep].astype(np.float32), cols[keep], indptr), shape=shape)


def product_top_n(left: sp.csr_matrix, right: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Top-`n` per row of (left @ right) without its diagonal, computed in row chunks.

    left: [R, M] CSR, right: [M, R] CSR -> [R, R] CSR with at most n entries per row. Chunks are cut
    so that each does about `_PRODUCT_WORK_PER_CHUNK` multiply-adds, whatever the degree skew.
    """
    left, right = left.tocsr(), right.tocsr()
    right_lengths = np.diff(right.indptr).astype(np.float64)
    pattern = sp.csr_matrix((np.ones_like(left.data, np.float64), left.indices, left.indptr), shape=left.shape)
    work = np.cumsum(pattern @ right_lengths)
    cuts = np.searchsorted(
        work, np.arange(_PRODUCT_WORK_PER_CHUNK, work[-1] if len(work) else 0, _PRODUCT_WORK_PER_CHUNK)
    )
    bounds = np.unique(np.concatenate([[0], cuts, [left.shape[0]]]))
    parts_rows, parts_cols, parts_values = [], [], []
    for start, stop in itertools.pairwise(bounds):  # loop over row blocks, not over items
        block = (left[start:stop] @ right).tocoo()
        rows = block.row.astype(np.int64) + start
        off_diagonal = (rows != block.col) & (block.data > 0)
        pruned = top_n_per_row(
            rows[off_diagonal],
            block.col[off_diagonal].astype(np.int64),
            block.data[off_diagonal],
            n,
            (left.shape[0], right.shape[1]),
        ).tocoo()
        parts_rows.append(pruned.row)
        parts_cols.append(pruned.col)
        parts_values.append(pruned.data)
    rows, cols, values = (np.concatenate(p) if p else np.zeros(0) for p in (parts_rows, parts_cols, parts_values))
    return sp.csr_matrix(
        (values.astype(np.float32), (rows.astype(np.int64), cols.astype(np.int64))),
        shape=(left.shape[0], right.shape[1]),
    )


# ---- triggers -----------------------------------------------------------------------------------
@dataclass
class LastNTriggers:
    """Default trigger selection: each user's last `num_triggers` history items, weight decay**age."""

    num_triggers: int
    decay: float = 1.0

    def __call__(self, batch: UserBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        recent = batch.history.last(self.num_triggers)
        rows = recent.row_ids()
        age = (recent.offsets[1:][rows] - 1) - torch.arange(recent.values.shape[0])  # 0 = latest
        weights = torch.pow(torch.tensor(self.decay, dtype=torch.float64), age.double()).float()
        return rows, recent.values.long(), weights


# ---- the retriever ------------------------------------------------------------------------------
class I2IRetriever(Retriever):
    """Base for I2I channels: subclasses implement `build_neighbours(interactions) -> CSR`."""

    config: I2IConfig

    def __init__(self, config: I2IConfig) -> None:
        self.config = config
        self.neighbours: sp.csr_matrix | None = None
        self.popularity: np.ndarray | None = None  # [num_items + 1] train counts
        self.trigger_fn: TriggerFn = LastNTriggers(config.num_triggers, config.trigger_decay)

    def build_neighbours(self, interactions: sp.csr_matrix) -> sp.csr_matrix:
        """interactions: binary [num_users + 1, num_items + 1] -> top-N table [num_items + 1]^2."""
        raise NotImplementedError

    def fit(self, dataset: Dataset) -> I2IRetriever:
        self.neighbours = self.build_neighbours(interaction_matrix(dataset))
        self.popularity = dataset.item_popularity("train").numpy().astype(np.float32)
        return self

    @property
    def num_items(self) -> int:
        if self.neighbours is None:
            raise DataError(f"{self.name}: not fitted; call fit(dataset) or Retriever.load(path) first")
        return self.neighbours.shape[0] - 1

    def retrieve(self, batch: UserBatch, k: int, exclude_history: bool = True) -> Candidates:
        """Candidates with items [B, min(k, num_items)], best first; 0 / -inf only when nothing is left."""
        num_items = self.num_items
        history = batch.history.values.long()
        if history.numel() and (int(history.min()) < 1 or int(history.max()) > num_items):
            raise DataError(
                f"{self.name}: batch.history has item ids outside 1..{num_items} "
                f"(the catalogue this channel was fitted on)"
            )
        rows, items, weights = self.trigger_fn(batch)
        return self.expand(batch, rows, items, weights, k, exclude_history)

    def expand(
        self,
        batch: UserBatch,
        rows: torch.Tensor,
        items: torch.Tensor,
        weights: torch.Tensor,
        k: int,
        exclude_history: bool = True,
    ) -> Candidates:
        """U2I2I expansion of given triggers: rows/items/weights [T] (row = batch row) -> Candidates [B, k].

        A row without triggers gets popular items only (backfill)."""
        num_items, size = self.num_items, len(batch)
        width, k = num_items + 1, min(k, num_items)
        history = batch.history.values.long()
        if items.numel() and (int(items.min()) < 1 or int(items.max()) > num_items):
            raise DataError(f"{self.name}: trigger item ids outside 1..{num_items}")
        triggers = sp.csr_matrix(
            (weights.numpy().astype(np.float32), (rows.numpy(), items.numpy())), shape=(size, width)
        )
        expanded = (triggers @ self.neighbours).tocsr()  # [B, num_items + 1] U2I2I scores
        out_items = torch.zeros((size, k), dtype=torch.long)
        out_scores = torch.full((size, k), float("-inf"))
        history_rows, offsets = batch.history.row_ids(), batch.history.offsets
        step = max(1, _DENSE_TOPK_ELEMENTS // width)
        for start in range(0, size, step):  # blocks of rows: dense top-k stays memory-bounded
            stop = min(size, start + step)
            block = expanded[start:stop]
            dense = torch.full((stop - start, width), float("-inf"))  # absent = -inf, never returned
            block_rows = torch.from_numpy(np.repeat(np.arange(stop - start), np.diff(block.indptr)))
            dense[block_rows, torch.from_numpy(block.indices.astype(np.int64))] = torch.from_numpy(block.data)
            if exclude_history:
                span = slice(int(offsets[start]), int(offsets[stop]))
                dense[history_rows[span] - start, history[span]] = float("-inf")
            top_scores, top_items = torch.topk(dense, k, dim=1)
            out_items[start:stop] = top_items.masked_fill(torch.isinf(top_scores), 0)
            out_scores[start:stop] = top_scores
        self._backfill(out_items, out_scores, batch if exclude_history else None)
        return Candidates.from_topk(out_items, out_scores, self.name)

    def _backfill(self, out_items: torch.Tensor, out_scores: torch.Tensor, batch: UserBatch | None) -> None:
        """Fill empty slots with the most popular items not yet chosen nor in history, in place.

        out_items / out_scores: [B, k]; `batch` gives the history to exclude (None: exclude nothing).
        Backfill score = -1 / (1 + popularity): negative, so below every I2I score (> 0), and
        ordered by popularity.
        """
        _size, k = out_items.shape
        found = (out_items > 0).sum(1)
        needy = torch.nonzero(found < k).flatten()
        if needy.numel() == 0 or k == 0:
            return
        popularity = torch.from_numpy(self.popularity)
        width = popularity.numel()
        order = torch.argsort(-popularity[1:], stable=True) + 1  # items by popularity, best first
        chosen = out_items[needy]
        history = batch.history.select(needy) if batch is not None else None
        most_excluded = int(history.lengths().max()) if history is not None else 0
        pool = order[: min(width - 1, k + most_excluded)]
        pool_position = torch.full((width,), -1, dtype=torch.long)
        pool_position[pool] = torch.arange(pool.numel())
        taken = torch.zeros((needy.numel(), pool.numel()), dtype=torch.bool)  # [R, M]
        excluded_rows = torch.arange(needy.numel()).unsqueeze(1).expand_as(chosen)[chosen > 0]
        excluded_items = chosen[chosen > 0]
        if history is not None:
            excluded_rows = torch.cat([excluded_rows, history.row_ids()])
            excluded_items = torch.cat([excluded_items, history.values.long()])
        in_pool = pool_position[excluded_items] >= 0
        taken[excluded_rows[in_pool], pool_position[excluded_items[in_pool]]] = True
        slot = found[needy].unsqueeze(1) + torch.cumsum(~taken, dim=1) - 1
        fill = ~taken & (slot < k)
        rows = needy.unsqueeze(1).expand_as(fill)[fill]
        items = pool.unsqueeze(0).expand_as(fill)[fill]
        out_items[rows, slot[fill]] = items
        out_scores[rows, slot[fill]] = -1.0 / (1.0 + popularity[items])

    # ---- persistence --------------------------------------------------------------------------
    def save_state(self, path: Path) -> dict:
        table = self.neighbours
        if table is None or self.popularity is None:
            raise DataError(f"{self.name}: nothing to save; fit the channel first")
        save_file(
            {
                "neighbours_indptr": table.indptr.astype(np.int64),
                "neighbours_indices": table.indices.astype(np.int64),
                "neighbours_data": table.data.astype(np.float32),
                "popularity": self.popularity.astype(np.float32),
            },
            str(path / "state.safetensors"),
        )
        return {"num_items": self.num_items}

    def load_state(self, path: Path, meta: dict) -> None:
        file = path / "state.safetensors"
        if not file.is_file():
            raise DataError(f"{self.name}: saved state missing at {file}")
        state = load_file(str(file))
        size = int(meta["num_items"]) + 1
        self.neighbours = sp.csr_matrix(
            (state["neighbours_data"], state["neighbours_indices"], state["neighbours_indptr"]), shape=(size, size)
        )
        self.popularity = state["popularity"]
