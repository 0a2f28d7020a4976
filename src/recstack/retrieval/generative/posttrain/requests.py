"""Train requests for RL post-training (OneMall, arXiv 2601.21770, §2.16: "sample 2% of offline requests").

A request is a user's state just before one of their train interactions: the history is every earlier
train interaction of that user (oldest first, with its per-event features), the request time and
scenario are those of the interaction, and its item is the true next item (the NTP target of the same
request). Requests are rows of the train interactions table; a step draws B of them with a generator
seeded by (seed, step), so a resumed run draws the same requests as an uninterrupted one.
"""

from __future__ import annotations

import polars as pl
import torch

from recstack.data.batch import UserBatch
from recstack.data.dataset import SPLIT_CODES, Dataset
from recstack.data.jagged import Jagged
from recstack.errors import DataError


class Requests:
    """The eligible train requests of `dataset` (the dataset the retriever was fitted on).

    features: per-event columns carried by the UserBatch histories (those absent from the table are skipped).
    kind "all": every train interaction with >= min_history earlier ones; "last": each user's last one.
    """

    def __init__(self, dataset: Dataset, features: tuple[str, ...], kind: str = "all", min_history: int = 1) -> None:
        frame = dataset.interactions.filter(pl.col("split") < SPLIT_CODES["valid"])
        self.items = torch.from_numpy(frame["item"].to_numpy().astype("int64"))
        self.users = torch.from_numpy(frame["user"].to_numpy().astype("int64"))  # sorted by user, then time
        self.features = {
            name: torch.from_numpy(frame[name].to_numpy().copy())
            for name in dict.fromkeys(features)
            if name in frame.columns
        }
        self.time = torch.from_numpy(frame["timestamp"].to_numpy().copy()) if "timestamp" in frame.columns else None
        self.scenario = (
            torch.from_numpy(frame["scenario"].to_numpy().astype("int64")) if "scenario" in frame.columns else None
        )
        offsets = Jagged.from_sorted_keys(self.users, self.items, dataset.num_users + 1).offsets
        self.start = offsets[self.users]  # [N] the first train row of each row's user
        before = torch.arange(self.items.numel()) - self.start  # earlier train interactions of the user
        eligible = before >= min_history
        if kind == "last":
            eligible &= torch.arange(self.items.numel()) == offsets[self.users + 1] - 1
        self.rows = torch.nonzero(eligible).flatten()
        if self.rows.numel() == 0:
            raise DataError(
                f"{dataset.name}: no train interaction has {min_history} earlier train interaction(s) of its user; "
                "RL post-training has no requests"
            )

    def __len__(self) -> int:
        return self.rows.numel()

    def sample(self, count: int, seed: int) -> torch.Tensor:
        """[count] request rows drawn without replacement (with replacement when there are fewer)."""
        gen = torch.Generator().manual_seed(seed)
        if count <= len(self):
            return self.rows[torch.randperm(len(self), generator=gen)[:count]]
        return self.rows[torch.randint(len(self), (count,), generator=gen)]

    def batch(self, rows: torch.Tensor) -> tuple[UserBatch, torch.Tensor]:
        """rows [B] -> (UserBatch of the B requests, true next items [B]); no Python loop over requests."""
        starts = self.start[rows]
        lengths = rows - starts
        offsets = torch.zeros(rows.numel() + 1, dtype=torch.long)
        torch.cumsum(lengths, 0, out=offsets[1:])
        within = torch.arange(int(offsets[-1])) - torch.repeat_interleave(offsets[:-1], lengths)
        index = torch.repeat_interleave(starts, lengths) + within  # the earlier rows, oldest first
        batch = UserBatch(
            users=self.users[rows],
            history=Jagged(self.items[index], offsets),
            history_features={name: values[index] for name, values in self.features.items()},
            time=None if self.time is None else self.time[rows],
            scenario=None if self.scenario is None else self.scenario[rows],
        )
        return batch, self.items[rows]
