"""Raw tables -> prepared Dataset: de-duplicate, k-core filter, remap ids, sort, split.

Every step that removes rows records what it removed and why in `meta["report"]`; nothing is
dropped silently.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import polars as pl

from recstack.config import to_dict
from recstack.data import splits
from recstack.data.dataset import SPLIT_CODES, Dataset
from recstack.data.tables import RawTables
from recstack.errors import DataError


@dataclass
class PrepareConfig:
    """How to turn raw tables into a Dataset (defaults follow the leave-one-out literature)."""

    dedup: Literal["none", "exact", "keep_first", "keep_last"] = "exact"
    """exact: drop rows identical in (user, item, timestamp); keep_first/keep_last: one row per (user, item)."""
    min_user_interactions: int = 0
    """k-core threshold for users (0 = no filter). Applied together with the item threshold until stable."""
    min_item_interactions: int = 0
    split: Literal["auto", "given", "leave_one_out", "temporal", "random_user"] = "auto"
    """auto: the source's own split when it ships one, else leave-one-out."""
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    holdout_fraction: float = 0.2
    seed: int = 0
    drop_unknown_ids: bool = False
    """True: interactions whose item/user is missing from the side table are removed (and reported) instead of an error."""


@dataclass
class FilterStep:
    step: str
    reason: str
    rows_before: int
    rows_removed: int
    details: dict = field(default_factory=dict)


def prepare(raw: RawTables, config: PrepareConfig | None = None, name: str | None = None) -> Dataset:
    config = config or PrepareConfig()
    started = time.perf_counter()
    report: list[FilterStep] = []
    if config.drop_unknown_ids:
        raw = _drop_unknown(raw, report)
    raw.validate()
    inter = raw.interactions.with_row_index("_source_row")

    inter = _dedup(inter, config.dedup, report)
    inter = _k_core(inter, config.min_user_interactions, config.min_item_interactions, report)
    if inter.height == 0:
        raise DataError(
            f"{raw.origin or raw.name}: no interactions left after filtering "
            f"(k-core {config.min_user_interactions}/{config.min_item_interactions})"
        )

    user_raw = np.sort(inter["user"].unique().to_numpy())
    item_raw = np.sort(inter["item"].unique().to_numpy())
    n_items_listed = raw.items.height
    if n_items_listed > len(item_raw):
        report.append(
            FilterStep(
                "catalogue",
                "items without any interaction left are not in the catalogue",
                n_items_listed,
                n_items_listed - len(item_raw),
            )
        )
    user_map = pl.DataFrame({"raw_id": user_raw, "user": np.arange(1, len(user_raw) + 1, dtype=np.int32)})
    item_map = pl.DataFrame({"raw_id": item_raw, "item": np.arange(1, len(item_raw) + 1, dtype=np.int32)})

    inter = (
        inter.rename({"user": "raw_user", "item": "raw_item"})
        .join(user_map.rename({"raw_id": "raw_user"}), on="raw_user")
        .join(item_map.rename({"raw_id": "raw_item"}), on="raw_item")
        .drop("raw_user", "raw_item")
        .sort(["user", "timestamp", "_source_row"])
    )

    meta: dict = {
        "name": name or raw.name,
        "labels": list(raw.labels),
        "text_fields": list(raw.text_fields),
        "timestamp_kind": raw.timestamp_kind,
        "origin": raw.origin,
        "extra": raw.extra,
    }
    for column in ("scenario", "event"):
        if column in inter.columns:
            names = sorted(inter[column].unique().to_list())
            meta[f"{column}_names"] = names
            inter = inter.with_columns(
                pl.col(column).replace_strict(names, list(range(len(names))), return_dtype=pl.Int16)
            )

    split_codes, split_used = _assign_split(inter, config, raw)
    meta["split"] = split_used
    inter = inter.with_columns(pl.Series("split", split_codes, dtype=pl.Int8)).drop("_source_row")
    ordered = ["user", "item", "timestamp"] + [c for c in inter.columns if c not in ("user", "item", "timestamp")]
    inter = inter.select(ordered)

    items = item_map.select("item", "raw_id").join(raw.items.rename({"item": "raw_id"}), on="raw_id", how="left")
    users = user_map.select("user", "raw_id").join(raw.users.rename({"user": "raw_id"}), on="raw_id", how="left")
    for field_name in raw.text_fields:
        items = items.with_columns(pl.col(field_name).fill_null(""))

    meta["report"] = [to_dict(step) for step in report]
    meta["counts"] = {
        "users": users.height,
        "items": items.height,
        "interactions": inter.height,
        **{s: int((split_codes == c).sum()) for s, c in SPLIT_CODES.items()},
    }
    meta["config"] = to_dict(config)
    meta["prepare_seconds"] = round(time.perf_counter() - started, 3)
    return Dataset(name=meta["name"], interactions=inter, items=items, users=users, meta=meta)


def _drop_unknown(raw: RawTables, report: list[FilterStep]) -> RawTables:
    inter = raw.interactions
    for table, key in ((raw.items, "item"), (raw.users, "user")):
        if table.height == 0:
            continue
        before = inter.height
        inter = inter.filter(pl.col(key).is_in(table[key].implode()))
        if inter.height < before:
            report.append(
                FilterStep(f"unknown_{key}s", f"{key} id not in the {key}s table", before, before - inter.height)
            )
    raw.interactions = inter
    return raw


def _dedup(inter: pl.DataFrame, mode: str, report: list[FilterStep]) -> pl.DataFrame:
    if mode == "none":
        return inter
    before = inter.height
    if mode == "exact":
        inter = inter.unique(subset=["user", "item", "timestamp"], keep="first", maintain_order=True)
        reason = "exact duplicate of an earlier (user, item, timestamp) row"
    else:
        keep: Literal["first", "last"] = "first" if mode == "keep_first" else "last"
        inter = inter.sort(["user", "timestamp", "_source_row"]).unique(
            subset=["user", "item"], keep=keep, maintain_order=True
        )
        reason = f"repeat (user, item) pair; kept the {keep} occurrence"
    if inter.height < before:
        report.append(FilterStep("dedup", reason, before, before - inter.height))
    return inter


def _k_core(inter: pl.DataFrame, min_user: int, min_item: int, report: list[FilterStep]) -> pl.DataFrame:
    """Iteratively drop users and items below their thresholds until both hold."""
    if min_user <= 1 and min_item <= 1:
        return inter
    before = inter.height
    users_before, items_before = inter["user"].n_unique(), inter["item"].n_unique()
    rounds = 0
    while True:
        rounds += 1
        keep = pl.lit(True)
        if min_user > 1:
            keep = keep & (pl.len().over("user") >= min_user)
        if min_item > 1:
            keep = keep & (pl.len().over("item") >= min_item)
        filtered = inter.filter(keep)
        if filtered.height == inter.height:
            break
        inter = filtered
    if inter.height < before:
        report.append(
            FilterStep(
                "k_core",
                f"user has < {min_user} or item has < {min_item} interactions",
                before,
                before - inter.height,
                {
                    "rounds": rounds,
                    "users_removed": users_before - inter["user"].n_unique(),
                    "items_removed": items_before - inter["item"].n_unique(),
                },
            )
        )
    return inter


def _assign_split(inter: pl.DataFrame, config: PrepareConfig, raw: RawTables) -> tuple[np.ndarray, str]:
    method = config.split
    has_given = "split" in inter.columns
    if method == "auto":
        method = "given" if has_given else "leave_one_out"
    if method == "given":
        if not has_given:
            raise DataError(f"{raw.origin or raw.name}: split 'given' requested but the source has no split column")
        return inter["split"].replace_strict(SPLIT_CODES, return_dtype=pl.Int8).to_numpy(), "given"
    users = inter["user"].to_numpy()
    if method == "leave_one_out":
        return splits.leave_one_out(users), method
    if method == "temporal":
        return splits.temporal(inter["timestamp"].to_numpy(), config.valid_fraction, config.test_fraction), method
    return splits.random_user(
        users, config.valid_fraction, config.test_fraction, config.holdout_fraction, config.seed
    ), method
