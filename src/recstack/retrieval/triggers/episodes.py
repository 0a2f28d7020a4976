"""Replay episodes for trigger selection: a user's candidate triggers at a cutoff and what came after.

An episode is (user, cutoff): the user's last `num_candidates` items before the cutoff are the candidate
triggers (column j = the j-th most recent, so column 0 is the latest), each with the user's own feedback
on it; the items the user engaged with in the `future_window` interactions from the cutoff are the
future engagements that VAM credits (vam.py). Training episodes come from the train split (cutoffs
inside each user's train sequence); at serving the candidates are the request's last items.
Built with offset arithmetic over the Jagged sequences: no per-user Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recstack.data.batch import UserBatch
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError


@dataclass
class TriggerEpisodes:
    """candidates: [E, M] long item ids, column 0 = most recent (0 = padding);
    feedback:   [E, M] float, the user's own feedback on each candidate (0 on padding);
    users:      [E] long user ids;
    future:     Jagged with E rows, the future engaged items (empty at serving);
    future_weight: values aligned with future.values (engagement strength, 1 = binary)."""

    candidates: torch.Tensor
    feedback: torch.Tensor
    users: torch.Tensor
    future: Jagged
    future_weight: torch.Tensor

    def __len__(self) -> int:
        return self.candidates.shape[0]

    @property
    def valid(self) -> torch.Tensor:
        """[E, M] bool: a real candidate (not padding)."""
        return self.candidates > 0

    def select(self, rows: torch.Tensor) -> TriggerEpisodes:
        future_index = Jagged(torch.arange(self.future.values.numel()), self.future.offsets).select(rows)
        return TriggerEpisodes(
            self.candidates[rows],
            self.feedback[rows],
            self.users[rows],
            Jagged(self.future.values[future_index.values], future_index.offsets),
            self.future_weight[future_index.values],
        )


def _gather_recent_first(values: torch.Tensor, ends: torch.Tensor, starts: torch.Tensor, width: int) -> torch.Tensor:
    """[R, width]: values[ends - 1 - j] for j < width where that index >= starts, else 0."""
    index = ends.unsqueeze(1) - 1 - torch.arange(width).unsqueeze(0)
    ok = index >= starts.unsqueeze(1)
    return torch.where(ok, values[index.clamp(min=0)] if values.numel() else torch.zeros_like(index), 0)


def replay_episodes(
    sequences: Jagged,
    feedback: Jagged | None,
    num_candidates: int,
    future_window: int,
    cutoffs_per_user: int = 1,
    min_history: int = 1,
) -> TriggerEpisodes:
    """Training episodes from chronological per-user sequences (row u = user u).

    For each user with length L, cutoff c_j = L - future_window * (j + 1), j < cutoffs_per_user, kept
    when c_j >= min_history: candidates = the last `num_candidates` items before c_j, future = items
    [c_j, c_j + future_window). feedback: per-event own feedback aligned with sequences (None = 1).
    """
    if num_candidates < 1 or future_window < 1 or cutoffs_per_user < 1 or min_history < 1:
        raise ConfigError("num_candidates, future_window, cutoffs_per_user and min_history must be >= 1")
    lengths = sequences.lengths()
    starts = sequences.offsets[:-1]
    users = torch.arange(sequences.num_rows)
    step = torch.arange(cutoffs_per_user)
    cut = lengths.unsqueeze(1) - future_window * (step.unsqueeze(0) + 1)  # [U, J] cutoff positions
    keep = cut >= min_history
    episode_users = users.unsqueeze(1).expand_as(cut)[keep]
    cut_abs = (starts.unsqueeze(1) + cut)[keep]  # absolute index of the first future event
    user_starts = starts[episode_users]
    values = sequences.values.long()
    weights = feedback.values.float() if feedback is not None else torch.ones(values.numel())
    candidates = _gather_recent_first(values, cut_abs, user_starts, num_candidates)
    own = _gather_recent_first(weights, cut_abs, user_starts, num_candidates).float()
    future_index = (cut_abs.unsqueeze(1) + torch.arange(future_window)).reshape(-1)  # [E * W], in the sequence
    future = Jagged.from_lengths(values[future_index], torch.full_like(cut_abs, future_window))
    return TriggerEpisodes(candidates, own * (candidates > 0), episode_users, future, torch.ones(future_index.numel()))


def serving_episodes(
    batch: UserBatch, num_candidates: int, feedback_key: str | None = None, missing_feedback: float = 1.0
) -> TriggerEpisodes:
    """Candidate triggers of a request batch: the last `num_candidates` history items, most recent first.

    feedback_key: a history feature holding the own feedback; when the batch lacks it (e.g. a request
    that sends bare item ids) every event gets `missing_feedback` (the training mean, not a made-up 1)."""
    history = batch.history
    own = batch.history_features.get(feedback_key) if feedback_key else None
    weights = own.float() if own is not None else torch.full((history.values.numel(),), float(missing_feedback))
    ends, starts = history.offsets[1:], history.offsets[:-1]
    candidates = _gather_recent_first(history.values.long(), ends, starts, num_candidates)
    feedback = _gather_recent_first(weights, ends, starts, num_candidates).float()
    empty = Jagged(torch.zeros(0, dtype=torch.long), torch.zeros(len(batch) + 1, dtype=torch.long))
    return TriggerEpisodes(candidates, feedback * (candidates > 0), batch.users, empty, torch.zeros(0))
