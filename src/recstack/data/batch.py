"""The small objects that cross stage boundaries: UserBatch, Candidates, Page (DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from recstack.data.jagged import Jagged


@dataclass
class UserBatch:
    """A batch of users with their chronological history.

    users:            [B] internal user ids (0 = unknown / cold-start user).
    history:          Jagged of item ids, oldest first.
    history_features: per-history-event tensors aligned with `history.values` ([N] each), e.g.
                      "timestamp", "event", "like".
    time:             [B] request time (same unit as the dataset timestamps), optional.
    scenario:         [B] scenario id, optional.
    """

    users: torch.Tensor
    history: Jagged
    history_features: dict[str, torch.Tensor] = field(default_factory=dict)
    time: torch.Tensor | None = None
    scenario: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.users.numel()

    def select(self, rows: torch.Tensor) -> UserBatch:
        """Sub-batch of rows, vectorised."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        history = self.history.select(rows)
        features = {}
        if self.history_features:
            index = Jagged(torch.arange(self.history.values.shape[0]), self.history.offsets).select(rows).values
            features = {k: v[index] for k, v in self.history_features.items()}
        return UserBatch(
            users=self.users[rows],
            history=history,
            history_features=features,
            time=None if self.time is None else self.time[rows],
            scenario=None if self.scenario is None else self.scenario[rows],
        )


@dataclass
class Candidates:
    """Retrieved items per user.

    items:    [B, K] item ids, 0 marks an empty slot.
    scores:   [B, K] float, -inf at empty slots, best first within each row.
    channels: [B, K] int64 bitmask; bit c set when channel_names[c] produced the item.
    channel_scores: [B, K, C] float, optional (set by merge_candidates): channel c's rank evidence
              1 / (rank in channel c + 1), 0 where channel c did not produce the item.
    """

    items: torch.Tensor
    scores: torch.Tensor
    channels: torch.Tensor
    channel_names: list[str]
    channel_scores: torch.Tensor | None = None

    @staticmethod
    def from_topk(items: torch.Tensor, scores: torch.Tensor, channel: str) -> Candidates:
        return Candidates(items, scores, torch.where(items > 0, 1, 0).long(), [channel])

    @property
    def k(self) -> int:
        return self.items.shape[1]

    def channel_tags(self, row: int, col: int) -> list[str]:
        mask = int(self.channels[row, col])
        return [name for c, name in enumerate(self.channel_names) if mask >> c & 1]


@dataclass
class Page:
    """The ordered list shown to each user: items [B, K] with per-slot scores [B, K]."""

    items: torch.Tensor
    scores: torch.Tensor
    channels: torch.Tensor | None = None
    channel_names: list[str] = field(default_factory=list)

    def first(self, k: int) -> Page:
        """The first k slots of every row."""
        channels = None if self.channels is None else self.channels[:, :k]
        return Page(self.items[:, :k], self.scores[:, :k], channels, list(self.channel_names))
