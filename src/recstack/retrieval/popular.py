"""Popular: every user gets the most interacted-with train items, globally or in a recent window.

score(item) = number of train interactions with the item. With a window (`window`: the last fraction
of the train time range, or `window_days`: the last N days, for unix-second timestamps), the score is
the count inside the window plus the global count / (total + 1), a tie-break below one interaction:
items equally popular recently are ordered by overall popularity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl
import torch
from safetensors.numpy import load_file, save_file

from recstack.data.batch import UserBatch
from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.registry import register
from recstack.retrieval.base import Retriever

SECONDS_PER_DAY = 86_400


@dataclass
class PopularConfig:
    window: float | None = None  # last fraction of the train time range, in (0, 1]; None = all
    window_days: float | None = None  # or the last N days before the latest train timestamp

    def __post_init__(self) -> None:
        if self.window is not None and self.window_days is not None:
            raise ConfigError("set at most one of window and window_days")
        if self.window is not None and not 0.0 < self.window <= 1.0:
            raise ConfigError(f"window must be in (0, 1], got {self.window}")
        if self.window_days is not None and self.window_days <= 0:
            raise ConfigError(f"window_days must be > 0, got {self.window_days}")


@register("retriever", "popular", config=PopularConfig)
class Popular(Retriever):
    name = "popular"
    config: PopularConfig

    def __init__(self, config: PopularConfig | None = None) -> None:
        self.config = config or PopularConfig()
        self.scores: torch.Tensor | None = None  # [num_items + 1], column 0 = padding (0)

    def fit(self, dataset: Dataset) -> Popular:
        train = dataset.split_frame("train")
        if train.height == 0:
            raise DataError(f"{dataset.name}: the train split is empty; Popular has nothing to count")
        size = dataset.num_items + 1
        overall = np.bincount(train["item"].to_numpy(), minlength=size).astype(np.float64)
        start = self._window_start(train, dataset)
        if start is None:
            scores = overall
        else:
            recent = train.filter(pl.col("timestamp") >= start)["item"].to_numpy()
            scores = np.bincount(recent, minlength=size) + overall / (overall.sum() + 1.0)
        scores[0] = 0.0
        self.scores = torch.from_numpy(scores.astype(np.float32))
        return self

    def _window_start(self, train: pl.DataFrame, dataset: Dataset) -> float | None:
        """First timestamp inside the window, or None for no window."""
        if self.config.window is None and self.config.window_days is None:
            return None
        first, last = float(cast(float, train["timestamp"].min())), float(cast(float, train["timestamp"].max()))
        if self.config.window is not None:
            return last - self.config.window * (last - first)
        if dataset.meta.get("timestamp_kind") == "order":
            raise ConfigError(
                f"window_days: dataset {dataset.name!r} has order positions, not times; "
                "use window (a fraction of the time range) instead"
            )
        assert self.config.window_days is not None  # one of window / window_days is set (checked above)
        return last - self.config.window_days * SECONDS_PER_DAY

    def score_all(self, batch: UserBatch) -> torch.Tensor:
        """[B, num_items + 1]: the same popularity row for every user (column 0 = padding)."""
        if self.scores is None:
            raise DataError("popular: not fitted; call fit(dataset) or Retriever.load(path) first")
        return self.scores.unsqueeze(0).expand(len(batch), -1)

    def save_state(self, path: Path) -> dict:
        if self.scores is None:
            raise DataError("popular: nothing to save; fit the channel first")
        save_file({"scores": self.scores.numpy()}, str(path / "state.safetensors"))
        return {"num_items": int(self.scores.numel()) - 1}

    def load_state(self, path: Path, meta: dict) -> None:
        file = path / "state.safetensors"
        if not file.is_file():
            raise DataError(f"popular: saved state missing at {file}")
        self.scores = torch.from_numpy(load_file(str(file))["scores"])
