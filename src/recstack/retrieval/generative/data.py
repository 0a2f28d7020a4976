"""Batches of semantic-ID histories for generative retrievers (the dict documented in base.py).

Training samples reuse the sequential retrievers' TrainingWindows: a window is max_len + 1
consecutive train items of one user; its last item is the target and the others the history.
train_targets="all" makes one window per train position (stride 1: every prefix predicts its next
item, as TIGER reproductions augment the data); "last" makes one window per user (its last train
item); "sequence" makes windows of stride max_len whose every position is a target (for models with
a causal history encoder, which read all prefixes of a window in one pass: then "target_items" is
[B, T] and "target_codes" [B, T, C], target t = the item after history column t, 0 = no target).
Windows are gathered right-aligned in one vectorised call per batch, batches group windows of
similar length (LengthBucketedBatchSource), and codes come from one table lookup (SemanticIds.codes).

Events (history_events): 0 = padding or a plain interaction. With label columns L_1..L_E (config
event_labels, default every binary label column in dataset order) an interaction gets 1 + the index
of the LAST positive label in that list (list deeper behaviours later: click, like, purchase). When
the interaction table has an "event" column instead (and no event_labels are given), its code + 1 is
used (names from meta). At retrieval the codes are read from UserBatch.history_features (missing
features give 0).
"""

from __future__ import annotations

from typing import Any, cast

import torch

from recstack.data.batch import UserBatch
from recstack.data.dataset import SPLIT_CODES, Dataset
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError
from recstack.retrieval.sequential.common import LengthBucketedBatchSource, TrainingWindows
from recstack.semantic_ids.semantic_ids import SemanticIds


def _binary(dataset: Dataset, column: str) -> bool:
    values = dataset.interactions[column].unique().to_list()
    return all(v in (0, 1, True, False) for v in values if v is not None)


def event_features(dataset: Dataset, event_labels: list[str] | None) -> list[str]:
    """The interaction columns that define history_events (see the module docstring)."""
    if event_labels is not None:
        missing = [c for c in event_labels if c not in dataset.interactions.columns]
        if missing:
            raise ConfigError(
                f"event_labels: {missing} are not interaction columns of {dataset.name!r} (labels: {dataset.labels})"
            )
        return list(event_labels)
    binary = [c for c in dataset.labels if c in dataset.interactions.columns and _binary(dataset, c)]
    if binary:
        return binary
    return ["event"] if "event" in dataset.interactions.columns else []


def event_names(dataset: Dataset, columns: list[str]) -> list[str]:
    """Names of event codes 1..E."""
    if columns == ["event"]:
        names = dataset.meta.get("events") or dataset.meta.get("event_names")
        count = int(cast(int, dataset.interactions["event"].max())) + 1
        return [str(n) for n in names][:count] if names else [f"event{e}" for e in range(count)]
    return list(columns)


def event_codes(features: dict[str, torch.Tensor], columns: list[str], n: int) -> torch.Tensor:
    """[n] long event codes from per-interaction feature tensors (absent features count as 0)."""
    if columns == ["event"]:
        return features["event"].long() + 1 if "event" in features else torch.zeros(n, dtype=torch.long)
    codes = torch.zeros(n, dtype=torch.long)
    for index, name in enumerate(columns):  # E label columns (a handful), vectorised over interactions
        if name in features:
            codes = torch.where(features[name].float() > 0, index + 1, codes)
    return codes


class GenerativeData:
    """Training windows of one dataset + its SemanticIds; `batch_source` feeds the Trainer."""

    def __init__(
        self,
        dataset: Dataset,
        sids: SemanticIds,
        max_len: int,
        train_targets: str = "all",
        event_labels: list[str] | None = None,
    ) -> None:
        self.dataset, self.sids, self.max_len = dataset, sids, max_len
        self.event_columns = event_features(dataset, event_labels)
        self.event_names = event_names(dataset, self.event_columns)
        items = dataset.sequences(before="valid")
        frame = dataset.interactions.filter(dataset.interactions["split"] < SPLIT_CODES["valid"])
        features = {c: torch.from_numpy(frame[c].to_numpy().copy()) for c in self.event_columns}
        self.events = event_codes(features, self.event_columns, items.values.numel())
        self.user_offsets = items.offsets  # row u of the Jagged = user u
        stride = {"all": 1, "last": None, "sequence": max_len}[train_targets]
        self.sequence_targets = train_targets == "sequence"
        self.windows = TrainingWindows(items, None, max_len, stride)
        self.items = self.windows.items

    @property
    def num_samples(self) -> int:
        return self.windows.num_rows

    def collate(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """rows [B] -> the batch dict of base.py with T = the longest history in the batch."""
        width = int((self.windows.ends[rows] - self.windows.starts[rows]).max())
        window = self.windows.gather(rows, self.items, width)  # [B, W], target in column W-1
        history = window[:, :-1]
        users = torch.searchsorted(self.user_offsets, self.windows.ends[rows] - 1, right=True) - 1
        batch = {
            "history_items": history,
            "history_codes": self.sids.codes[history],
            "history_mask": history > 0,
            "history_events": self.windows.gather(rows, self.events, width)[:, :-1],
            "users": users,
        }
        if self.sequence_targets:  # every column predicts the next item; the first item of a window is no target
            targets = window[:, 1:] * (history > 0)
            batch.update(
                target_items=targets,
                target_codes=self.sids.codes[targets],
                target_count=torch.tensor(rows.numel() * self.windows.mean_targets),
            )
        else:
            batch.update(target_items=window[:, -1], target_codes=self.sids.codes[window[:, -1]])
        return batch

    def batch_source(self, batch_size: int, seed: int) -> LengthBucketedBatchSource:
        lengths = self.windows.ends - self.windows.starts
        return LengthBucketedBatchSource(lengths, self.collate, batch_size, seed=seed)

    def eval_user_sample(self, split: str, count: int | None, seed: int) -> torch.Tensor | None:
        """A seeded sample of `count` users of `split` (None = all users)."""
        users, _ = self.dataset.eval_users(split)
        if count is None or users.numel() <= count:
            return None
        order = torch.randperm(users.numel(), generator=torch.Generator().manual_seed(seed))
        return users[order[:count]].sort().values


def history_tensors(batch: UserBatch, sids: SemanticIds, max_len: int, event_columns: list[str]) -> dict[str, Any]:
    """UserBatch -> {"history_items", "history_codes", "history_mask", "history_events", "users"} (the
    last max_len items, right-aligned, T = the longest kept history, at least 1)."""
    history = batch.history.last(max_len)
    width = max(int(history.lengths().max()) if len(batch) else 1, 1)
    items = history.to_padded(width).long()
    index = Jagged(torch.arange(batch.history.values.numel()), batch.history.offsets).last(max_len).values
    features = {k: v[index] for k, v in batch.history_features.items()}
    events = Jagged(event_codes(features, event_columns, index.numel()), history.offsets).to_padded(width).long()
    return {
        "history_items": items,
        "history_codes": sids.codes[items],
        "history_mask": items > 0,
        "history_events": events,
        "users": batch.users.long(),
    }
