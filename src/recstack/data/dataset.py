"""The prepared Dataset: canonical Parquet tables with contiguous ids (0 = padding) and a split.

interactions: user Int32 (1..num_users), item Int32 (1..num_items), timestamp Int64, label columns,
              optional scenario / event (Int16 codes, names in meta), split Int8 (0 train, 1 valid,
              2 test). Rows are sorted by (user, timestamp, source order): each user's rows are that
              user's chronological sequence.
items:        item Int32 1..num_items (row i-1 describes item i) + raw_id + features.
users:        user Int32 1..num_users + raw_id + features.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recstack.data.batch import UserBatch
from recstack.data.jagged import Jagged
from recstack.errors import DataError
from recstack.paths import datasets_dir

TRAIN, VALID, TEST = 0, 1, 2
SPLIT_CODES = {"train": TRAIN, "valid": VALID, "test": TEST}
TABLES = ("interactions", "items", "users")


@dataclass
class Dataset:
    name: str
    interactions: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- sizes --------------------------------------------------------------------------------
    @property
    def num_users(self) -> int:
        return self.users.height

    @property
    def num_items(self) -> int:
        return self.items.height

    @property
    def labels(self) -> list[str]:
        return list(self.meta.get("labels", []))

    @property
    def text_fields(self) -> list[str]:
        return list(self.meta.get("text_fields", []))

    # ---- views --------------------------------------------------------------------------------
    def binary_labels(self) -> list[str]:
        """Label columns whose values are all 0/1 (click, like, view; not rating), in meta order."""
        out = []
        for name in self.labels:
            column = self.interactions[name] if name in self.interactions.columns else None
            if (
                column is not None
                and column.dtype.is_numeric()
                and not column.null_count()
                and bool(column.cast(pl.Float64).is_in([0.0, 1.0]).all())
            ):
                out.append(name)
        return out

    def is_impression_log(self) -> bool:
        """True when rows are impressions: binary labels exist and none is 1 on every row. A log with an
        always-1 label (MovieLens/Amazon `view`) is positive-only, even if a derived label (like) varies."""
        labels = self.binary_labels()
        return bool(labels) and all(self.interactions[name].min() == 0 for name in labels)

    def positives(self, label: str) -> Dataset:
        """The same dataset restricted to rows with `label` == 1 (e.g. clicks of an impression log).

        Retrieval learns from and is judged on consumed items; impressions that were skipped are
        neither history nor targets. Users and items keep their ids (users may have no rows left).
        """
        if label not in self.interactions.columns:
            raise DataError(f"{self.name}: no label column {label!r}; labels: {', '.join(self.labels) or 'none'}")
        meta = {**self.meta, "positive_label": label}
        return Dataset(self.name, self.interactions.filter(pl.col(label) == 1), self.items, self.users, meta)

    def split_frame(self, split: str) -> pl.DataFrame:
        """Rows of one split ("train", "valid", "test")."""
        return self.interactions.filter(pl.col("split") == SPLIT_CODES[split])

    def sequences(self, before: str | None = None, column: str = "item") -> Jagged:
        """Per-user chronological `column` values as a Jagged with num_users + 1 rows (row 0 empty).

        before=None: all rows; before="valid": train rows only; before="test": train + valid rows.
        """
        frame = self.interactions
        if before is not None:
            frame = frame.filter(pl.col("split") < SPLIT_CODES[before])
        users = frame["user"].to_numpy()
        values = torch.from_numpy(frame[column].to_numpy().copy())
        return Jagged.from_sorted_keys(users, values, self.num_users + 1)

    def eval_users(self, split: str) -> tuple[torch.Tensor, Jagged]:
        """Users with rows in `split` and their target items (a Jagged, one row per returned user)."""
        frame = self.split_frame(split)
        users, first = np.unique(frame["user"].to_numpy(), return_index=True)
        counts = np.diff(np.append(first, frame.height))
        targets = Jagged.from_lengths(
            torch.from_numpy(frame["item"].to_numpy().astype(np.int64)), torch.from_numpy(counts)
        )
        return torch.from_numpy(users.astype(np.int64)), targets

    def user_batch(
        self,
        users: torch.Tensor,
        before: str | None = None,
        features: tuple[str, ...] = ("timestamp",),
        max_len: int | None = None,
    ) -> UserBatch:
        """Histories of `users` (rows with split < `before`), oldest first, with per-event features.

        Build one batch for all users you need and take sub-batches with `UserBatch.select`:
        each call filters the interaction table once.
        """
        frame = self.interactions
        if before is not None:
            frame = frame.filter(pl.col("split") < SPLIT_CODES[before])
        positions = Jagged.from_sorted_keys(frame["user"].to_numpy(), torch.arange(frame.height), self.num_users + 1)
        rows = positions.select(torch.as_tensor(users, dtype=torch.long))
        if max_len is not None:
            rows = rows.last(max_len)
        idx = rows.values.numpy()
        history = Jagged(torch.from_numpy(frame["item"].to_numpy()[idx].astype(np.int64)), rows.offsets)
        feats = {
            name: torch.from_numpy(frame[name].to_numpy()[idx].copy()) for name in features if name in frame.columns
        }
        return UserBatch(users=torch.as_tensor(users, dtype=torch.long), history=history, history_features=feats)

    def item_popularity(self, split: str = "train") -> torch.Tensor:
        """[num_items + 1] interaction counts in `split` (index 0 = padding, always 0)."""
        items = self.split_frame(split)["item"].to_numpy()
        return torch.from_numpy(np.bincount(items, minlength=self.num_items + 1).astype(np.float32))

    def raw_item_ids(self) -> list[str]:
        return self.items["raw_id"].to_list()

    # ---- storage ------------------------------------------------------------------------------
    def save(self, path: str | Path | None = None) -> Path:
        """Write Parquet tables + meta.json atomically (temp folder, then rename)."""
        path = Path(path) if path is not None else datasets_dir() / self.name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            for table in TABLES:
                getattr(self, table).write_parquet(tmp / f"{table}.parquet")
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=2, default=str))
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @staticmethod
    def load(name_or_path: str | Path) -> Dataset:
        """Load a prepared dataset by name (under RECSTACK_HOME/datasets) or folder path."""
        path = Path(name_or_path)
        if not (path / "meta.json").is_file():
            path = datasets_dir() / str(name_or_path)
        if not (path / "meta.json").is_file():
            raise DataError(f"no prepared dataset at {path}; run `recstack data prepare {name_or_path}` first")
        meta = json.loads((path / "meta.json").read_text())
        tables = {}
        for table in TABLES:
            file = path / f"{table}.parquet"
            if not file.is_file():
                raise DataError(f"prepared dataset {path} is missing {file.name}; prepare it again")
            tables[table] = pl.read_parquet(file)
        return Dataset(name=meta.get("name", path.name), meta=meta, **tables)
