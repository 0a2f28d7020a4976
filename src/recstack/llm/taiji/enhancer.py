"""Join LLM enhancer features (a Parquet written by `recstack llm features`) into a dataset's users table.

    enhanced, report = join_user_features(dataset, "runs/taiji/features.parquet")

The file has one row per enhanced user: `raw_id` (the user's raw id, the join key, so a re-prepared
dataset still matches), `user` (ignored) and feature columns. Only the users table changes: the
interactions, items, ids and splits are the same objects, so a ranker fitted on the result sees the
same samples, items and histories and gains user-side fields only. Users the file does not cover get
nulls (no token: a zero embedding). A file that matches no user, a missing column, a column clash or
a file row with an unknown user is an error naming the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from recstack.data.dataset import Dataset
from recstack.errors import DataError

KEY_COLUMNS = ("raw_id", "user")


def read_features(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"enhancer features file not found: {path} (write it with `recstack llm features`)")
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several exception types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
    if "raw_id" not in frame.columns:
        raise DataError(f"{path}: no raw_id column (columns: {', '.join(frame.columns)})")
    return frame


def join_user_features(
    dataset: Dataset, path: str | Path, columns: Sequence[str] | None = None
) -> tuple[Dataset, dict[str, Any]]:
    """(dataset with the feature columns added to `users`, report: columns, users matched / without features)."""
    frame = read_features(path)
    wanted = [c for c in frame.columns if c not in KEY_COLUMNS] if columns is None else list(columns)
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r} (columns: {', '.join(frame.columns)})")
    if not wanted:
        raise DataError(f"{path}: no feature columns besides {', '.join(KEY_COLUMNS)}")
    clash = [c for c in wanted if c in dataset.users.columns]
    if clash:
        raise DataError(f"{path}: column {clash[0]!r} already exists in the users table of {dataset.name!r}")
    features = frame.select(pl.col("raw_id").cast(pl.String), *wanted)
    if features["raw_id"].is_duplicated().any():
        raise DataError(
            f"{path}: user {features.filter(pl.col('raw_id').is_duplicated())['raw_id'][0]!r} appears twice"
        )
    known = dataset.users.select(pl.col("raw_id").cast(pl.String))
    unknown = features.join(known, on="raw_id", how="anti")
    if unknown.height:
        raise DataError(
            f"{path}: user {unknown['raw_id'][0]!r} is not a user of dataset {dataset.name!r} "
            f"({unknown.height} such rows; was the file made from another dataset?)"
        )
    users = dataset.users.with_columns(pl.col("raw_id").cast(pl.String).alias("_key")).join(
        features.rename({"raw_id": "_key"}), on="_key", how="left", maintain_order="left"
    )
    users = users.drop("_key")
    meta = {**dataset.meta, "enhancer": {"features": str(path), "columns": wanted}}
    enhanced = Dataset(dataset.name, dataset.interactions, dataset.items, users, meta)
    report = {
        "file": str(path),
        "columns": wanted,
        "users_with_features": features.height,
        "users_without": dataset.num_users - features.height,
    }
    return enhanced, report
