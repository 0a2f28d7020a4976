"""The Retriever protocol and the helpers every channel shares.

    fit(dataset) -> self
    retrieve(batch: UserBatch, k, exclude_history=True) -> Candidates
    save(dir) / Retriever.load(dir)

A channel that can score every item implements `score_all(batch) -> [B, num_items + 1]` and
inherits `retrieve` (top-K with padding and, optionally, history masked). Channels that produce
candidates another way (trie decoding, I2I expansion) override `retrieve` directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from recstack.config import to_dict
from recstack.data.batch import Candidates, UserBatch
from recstack.data.dataset import Dataset
from recstack.registry import add_plugin_modules, load_saved_config
from recstack.train.checkpoint import write_json

add_plugin_modules(
    "retriever",
    [
        "recstack.retrieval.popular",
        "recstack.retrieval.itemcf",
        "recstack.retrieval.swing",
        "recstack.retrieval.triggers.u2i2i",
        "recstack.retrieval.embedding_i2i",
        "recstack.retrieval.two_tower",
        "recstack.retrieval.sequential.sasrec",
        "recstack.retrieval.sequential.hstu",
        "recstack.retrieval.generative.tiger",
        "recstack.retrieval.generative.onemall",
    ],
)


def mask_history(scores: torch.Tensor, batch: UserBatch) -> torch.Tensor:
    """Set scores of each user's history items to -inf, in place. scores: [B, num_items + 1]."""
    rows = batch.history.row_ids()
    scores[rows, batch.history.values.long()] = float("-inf")
    return scores


def topk_candidates(
    scores: torch.Tensor, batch: UserBatch, k: int, channel: str, exclude_history: bool = True
) -> Candidates:
    """Top-k of [B, num_items + 1] scores; column 0 (padding) never returned; -inf slots become item 0."""
    scores = scores.clone()
    scores[:, 0] = float("-inf")
    if exclude_history:
        mask_history(scores, batch)
    k = min(k, scores.shape[1] - 1)
    top_scores, top_items = torch.topk(scores, k, dim=1)
    empty = torch.isinf(top_scores) & (top_scores < 0)
    top_items = top_items.masked_fill(empty, 0)
    return Candidates.from_topk(top_items, top_scores, channel)


class Retriever:
    """Base class: subclasses set `name`, keep their dataclass config in `self.config`."""

    name: str = "retriever"
    config: Any = None

    def fit(self, dataset: Dataset) -> Retriever:
        raise NotImplementedError

    def score_all(self, batch: UserBatch) -> torch.Tensor:
        """[B, num_items + 1] scores for every item (column 0 is padding)."""
        raise NotImplementedError(f"{type(self).__name__} does not score all items; call retrieve()")

    def retrieve(self, batch: UserBatch, k: int, exclude_history: bool = True) -> Candidates:
        return topk_candidates(self.score_all(batch), batch, k, self.name, exclude_history)

    # ---- persistence: config.json + subclass state ----------------------------------------------
    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"name": self.name, "config": to_dict(self.config) if self.config is not None else {}}
        meta.update(self.save_state(path))
        write_json(path / "config.json", meta)

    def save_state(self, path: Path) -> dict:
        """Write weights (safetensors) into `path`; return extra JSON metadata."""
        raise NotImplementedError

    def load_state(self, path: Path, meta: dict) -> None:
        raise NotImplementedError

    @staticmethod
    def load(path: str | Path) -> Retriever:
        path = Path(path)
        entry, config, meta = load_saved_config(path, "retriever")
        model = entry.cls(config) if config is not None else entry.cls()
        model.load_state(path, meta)
        return model
