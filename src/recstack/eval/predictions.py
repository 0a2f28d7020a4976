"""Prediction files for `recstack eval`: top-K lists in long format, one Parquet row per (user, item).

Columns: user, item, score (float), rank (int, 1 = best). Ids are either internal (integer
columns, 1..num_users / 1..num_items) or raw (string columns, the dataset's raw_id), chosen per
column by its type. `rank` orders each user's list; a file without `rank` is ordered by `score`
descending. Empty slots (item 0) are never written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl
import torch

from recstack.data.dataset import Dataset
from recstack.errors import DataError
from recstack.eval.evaluator import TopKAccumulator, _check_split
from recstack.eval.topk import TOPK_METRICS

_INTS = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)


def _raw_ids(table: pl.DataFrame, key: str, ids: np.ndarray) -> pl.Series:
    lookup = np.empty(table.height + 1, dtype=object)
    lookup[table[key].to_numpy()] = table["raw_id"].cast(pl.String).to_numpy()
    return pl.Series(key, lookup[ids], dtype=pl.String)


def write_predictions(
    path: str | Path,
    users: torch.Tensor,
    candidates_items: torch.Tensor,
    scores: torch.Tensor,
    dataset: Dataset | None = None,
) -> Path:
    """Write top-K lists atomically (temp file in the same folder, then rename).

    users: [B] internal user ids. candidates_items: [B, K] internal item ids, best first, 0 = empty.
    scores: [B, K]. With `dataset`, ids are written as raw ids (strings); otherwise as internal ints.
    """
    path = Path(path)
    items = torch.as_tensor(candidates_items).detach().long().cpu()
    users = torch.as_tensor(users).detach().long().cpu().reshape(-1)
    scores = torch.as_tensor(scores).detach().cpu()
    if items.dim() != 2 or items.shape[0] != users.numel() or tuple(scores.shape) != tuple(items.shape):
        raise DataError(
            f"{path}: expected users [B], items [B, K], scores [B, K]; got "
            f"{tuple(users.shape)}, {tuple(items.shape)}, {tuple(scores.shape)}"
        )
    filled = items > 0
    ranks = torch.arange(1, items.shape[1] + 1).expand_as(items)
    user_ids = users.unsqueeze(1).expand_as(items)[filled].numpy()
    item_ids = items[filled].numpy()
    if dataset is not None:
        for name, ids, limit in (("user", user_ids, dataset.num_users), ("item", item_ids, dataset.num_items)):
            if ids.size and (ids.min() < 1 or ids.max() > limit):
                raise DataError(f"{path}: {name} ids must lie in 1..{limit} for dataset {dataset.name!r}")
        user_col = _raw_ids(dataset.users, "user", user_ids)
        item_col = _raw_ids(dataset.items, "item", item_ids)
    else:
        user_col, item_col = pl.Series("user", user_ids), pl.Series("item", item_ids)
    frame = pl.DataFrame(
        [
            user_col,
            item_col,
            pl.Series("score", scores[filled].numpy()),
            pl.Series("rank", ranks[filled].numpy().astype(np.int32)),
        ]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.write_parquet(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _internal_ids(column: pl.Series, table: pl.DataFrame, key: str, path: Path) -> np.ndarray:
    """Map a user/item column (internal ints or raw-id strings) to internal ids; errors name the row."""
    if column.dtype in _INTS:
        ids = column.to_numpy().astype(np.int64)
        bad = (ids < 1) | (ids > table.height)
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"{path}: column {key!r} row {row}: internal id {ids[row]} is outside 1..{table.height}")
        return ids
    if column.dtype == pl.String:
        mapped = column.replace_strict(table["raw_id"].cast(pl.String), table[key], default=None, return_dtype=pl.Int64)
        if mapped.null_count():
            row = int(mapped.is_null().arg_max())
            raise DataError(
                f"{path}: column {key!r} row {row}: raw id {column[row]!r} is not in the dataset "
                f"({mapped.null_count()} such rows)"
            )
        return mapped.to_numpy()
    raise DataError(
        f"{path}: column {key!r} has type {column.dtype}; expected integer (internal ids) or string (raw ids)"
    )


def read_predictions(path: str | Path, dataset: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a prediction file; return internal user ids, item ids [N] and an ordering key [N] (low = best)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prediction file {path} does not exist")
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for a corrupt / non-Parquet file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
    order_col = "rank" if "rank" in frame.columns else "score"
    for column in ("user", "item", order_col):
        if column not in frame.columns:
            raise DataError(
                f"{path}: missing column {column!r} (columns present: {', '.join(frame.columns)}; "
                "need user, item and rank or score)"
            )
        if frame[column].null_count():
            row = int(cast(int, frame[column].is_null().arg_max()))
            raise DataError(f"{path}: column {column!r} row {row}: missing value")
    users = _internal_ids(frame["user"], dataset.users, "user", path)
    items = _internal_ids(frame["item"], dataset.items, "item", path)
    if order_col == "rank":
        if frame["rank"].dtype not in _INTS:
            raise DataError(f"{path}: column 'rank' has type {frame['rank'].dtype}; expected integer")
        key = frame["rank"].to_numpy().astype(np.float64)
        if (key < 1).any():
            raise DataError(f"{path}: column 'rank' row {int(np.argmax(key < 1))}: ranks start at 1")
    else:
        if not frame["score"].dtype.is_numeric():
            raise DataError(f"{path}: column 'score' has type {frame['score'].dtype}; expected a number")
        key = -frame["score"].to_numpy().astype(np.float64)
        if np.isnan(key).any():
            raise DataError(f"{path}: column 'score' row {int(np.argmax(np.isnan(key)))}: NaN")
    checks = {"item": items, "rank": key} if order_col == "rank" else {"item": items}
    for what, values in checks.items():
        repeated = pl.DataFrame({"user": users, what: values}).is_duplicated()
        if repeated.any():
            raise DataError(
                f"{path}: row {int(cast(int, repeated.arg_max()))}: a user has two rows with the same {what}"
            )
    return users, items, key


def evaluate_prediction_file(
    path: str | Path,
    dataset: Dataset,
    split: str = "test",
    ks: Iterable[int] = (5, 10, 20),
    metrics: Iterable[str] = TOPK_METRICS,
    chunk_size: int = 65536,
) -> dict[str, float]:
    """Top-K metrics of a prediction file against the targets of `split`, as `evaluate_retriever`.

    Users of the split absent from the file count as empty lists (all metrics 0), reported in
    "num_users_without_predictions"; users outside the split are ignored. Lists are cut at max(ks).
    """
    _check_split(split)
    ks = tuple(ks)
    acc = TopKAccumulator(ks, dataset.num_items, metrics, dataset.item_popularity("train"))
    users, items, key = read_predictions(path, dataset)
    eval_users, targets = dataset.eval_users(split)
    if eval_users.numel() == 0:
        raise DataError(f"dataset {dataset.name!r} has no {split!r} interactions to evaluate")
    row_of_user = np.full(dataset.num_users + 1, -1, dtype=np.int64)
    row_of_user[eval_users.numpy()] = np.arange(eval_users.numel())
    rows = row_of_user[users]
    keep = rows >= 0
    rows, items, key = rows[keep], items[keep], key[keep]
    order = np.lexsort((key, rows))  # by row, then best first
    rows, items = rows[order], items[order]
    starts = np.searchsorted(rows, rows, side="left")
    within = np.arange(rows.size) - starts  # position in the user's list
    top = within < max(ks)
    pred = torch.zeros(eval_users.numel(), max(ks), dtype=torch.long)
    pred[torch.from_numpy(rows[top]), torch.from_numpy(within[top])] = torch.from_numpy(items[top])
    for start in range(0, eval_users.numel(), chunk_size):
        chunk = torch.arange(start, min(start + chunk_size, eval_users.numel()))
        acc.add(pred[chunk], targets.select(chunk))
    out = acc.result()
    out["num_users_without_predictions"] = float(eval_users.numel() - np.unique(rows).size)
    return out
