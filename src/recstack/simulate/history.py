"""What each simulated user has consumed so far: the logged history, then the clicks of each session.

Events are flat arrays sorted by user row (oldest first within a row), so the users of a batch are one
contiguous slice; appending a session's clicks is one stable sort, never a loop over users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recstack.data.batch import UserBatch
from recstack.data.jagged import Jagged
from recstack.simulate.link import WorldLink


@dataclass
class HistorySlice:
    """The events of users lo..hi-1 of a History.

    rows:     [E] row within the batch (0..B-1), sorted
    items:    [E] world item ids
    features: name -> [E] per-event values (timestamp and the dataset's labels)
    """

    size: int
    num_items: int
    rows: np.ndarray
    items: np.ndarray
    features: dict[str, np.ndarray]

    def keys(self) -> np.ndarray:
        """[E'] sorted unique row * num_items + item: membership tests against pages."""
        return np.unique(self.rows * self.num_items + self.items)

    def contains(self, pages: np.ndarray) -> np.ndarray:
        """[B, L] bool: page item (world id, -1 = empty) is in that row's history."""
        keys = self.keys()
        if keys.size == 0:
            return np.zeros(pages.shape, dtype=bool)
        query = np.arange(self.size)[:, None] * self.num_items + np.maximum(pages, 0)
        at = np.minimum(np.searchsorted(keys, query), keys.size - 1)
        return (keys[at] == query) & (pages >= 0)

    def user_batch(self, link: WorldLink, users: np.ndarray, time: np.ndarray, scenarios: np.ndarray) -> UserBatch:
        """The batch a cascade trained on `link.dataset` sees: dataset ids, history oldest first with its
        features, request time [B] and scenario [B] (world scenario codes mapped to the dataset's)."""
        local = link.dataset_items[self.items]
        known = local > 0  # events on items outside this dataset's catalogue are invisible to the run
        history = Jagged.from_sorted_keys(self.rows[known], torch.from_numpy(local[known]), self.size)
        return UserBatch(
            users=torch.from_numpy(link.dataset_users[users]),
            history=history,
            history_features={name: torch.from_numpy(value[known]) for name, value in self.features.items()},
            time=torch.from_numpy(np.asarray(time, dtype=np.int64)),
            scenario=None if link.scenarios is None else torch.from_numpy(link.scenarios[scenarios]),
        )


class History:
    """Consumed items of `users` [U] (world ids), starting from their logged history in `link`."""

    def __init__(self, link: WorldLink, view_rows: tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]], size: int):
        self.num_items = link.world.num_items
        self.size = size
        self.rows, self.items, self.features = view_rows
        self._index()

    @staticmethod
    def logged(link: WorldLink, users: np.ndarray, features: tuple[str, ...], view=None) -> History:
        """History of world `users` [U] from the dataset rows of `view` (default: the link's dataset),
        all splits: the simulation starts after the logged period."""
        dataset = view if view is not None else link.dataset
        frame = dataset.interactions
        local = link.dataset_users[users]  # 0: the dataset does not know this user (empty history)
        row_of = np.full(link.dataset.num_users + 1, -1, dtype=np.int64)
        row_of[local[local > 0]] = np.nonzero(local > 0)[0]
        rows = row_of[frame["user"].to_numpy()]
        keep = rows >= 0
        order = np.argsort(rows[keep], kind="stable")  # frame rows are chronological within a user
        items = link.world_items[frame["item"].to_numpy()[keep]][order]
        columns = {name: frame[name].to_numpy()[keep][order] for name in features if name in frame.columns}
        return History(link, (rows[keep][order], items, columns), len(users))

    def _index(self) -> None:
        self.offsets = np.searchsorted(self.rows, np.arange(self.size + 1), side="left")

    def slice(self, lo: int, hi: int) -> HistorySlice:
        start, stop = self.offsets[lo], self.offsets[hi]
        return HistorySlice(
            hi - lo,
            self.num_items,
            self.rows[start:stop] - lo,
            self.items[start:stop],
            {name: value[start:stop] for name, value in self.features.items()},
        )

    def append(self, rows: np.ndarray, items: np.ndarray, features: dict[str, np.ndarray]) -> None:
        """Add events (after every existing event of their row); `features` must give every feature."""
        self.rows = np.concatenate([self.rows, rows])
        self.items = np.concatenate([self.items, items])
        self.features = {
            name: np.concatenate([value, np.asarray(features[name]).astype(value.dtype)])
            for name, value in self.features.items()
        }
        order = np.argsort(self.rows, kind="stable")
        self.rows, self.items = self.rows[order], self.items[order]
        self.features = {name: value[order] for name, value in self.features.items()}
        self._index()

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)
