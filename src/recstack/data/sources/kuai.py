"""Kuaishou short-video logs: KuaiRand and KuaiRec -> RawTables.

KuaiRand (-Pure/-1K/-27K): `log_standard_*.csv` (optionally `log_random_*.csv` with
include_random=True) with user_id, video_id, time_ms, is_click, is_like, is_follow, is_comment,
is_forward, is_hate, long_view, is_profile_enter, play_time_ms, duration_ms, profile_stay_time,
comment_stay_time, is_rand, tab, ...; `user_features_*.csv`, `video_features_basic_*.csv`.
  labels: the eight is_*/long_view flags (Int8); timestamp: time_ms (unix_ms); tab -> scenario;
  play/stay times and is_rand stay as numeric interaction columns (not labels).
KuaiRec (2.0): `big_matrix.csv` or `small_matrix.csv` (matrix="big"/"small") with user_id,
video_id, play_duration, video_duration, time, date, timestamp (float seconds), watch_ratio;
`item_categories.csv` (video_id, feat "[8, 27]"), `user_features.csv`.
  labels: watch_ratio (Float64) and like = watch_ratio >= like_threshold (default 2.0, our
  convention, Int8); timestamp: round(timestamp * 1000) (unix_ms). The small matrix has rows without
  a time (filled in a second collection stage): missing_time="error" (default) raises naming the
  line, "drop" removes them and records the count in extra["dropped_missing_time"].
Both accept the release folder or its `data/` subfolder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast

import polars as pl

from recstack.data.sources import source
from recstack.data.sources._read import find_file, read_table
from recstack.data.tables import RawTables
from recstack.errors import DataError

KUAIRAND_FLAGS = [
    "is_click",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_hate",
    "long_view",
    "is_profile_enter",
]
KUAIRAND_NUMBERS = ["play_time_ms", "duration_ms", "profile_stay_time", "comment_stay_time"]
KUAIREC_COLUMNS = ["user_id", "video_id", "play_duration", "video_duration", "timestamp", "watch_ratio"]
_MISSING = ["", "None", "none", "NaN", "nan", "null"]


@source("kuai")
def load_kuai(path: str | Path, **options) -> RawTables:
    """KuaiRand or KuaiRec, detected from the files."""
    folder = _data_folder(Path(path))
    if find_file(folder, "log_standard_*.csv"):
        return load_kuairand(folder, **options)
    if find_file(folder, "*_matrix.csv"):
        return load_kuairec(folder, **options)
    raise DataError(
        f"{folder}: neither KuaiRand (log_standard_*.csv) nor KuaiRec (big_matrix.csv / small_matrix.csv) files found"
    )


@source("kuairand")
def load_kuairand(path: str | Path, include_random: bool = False) -> RawTables:
    folder = _data_folder(Path(path))
    logs = sorted(folder.glob("log_standard_*.csv")) + (
        sorted(folder.glob("log_random_*.csv")) if include_random else []
    )
    if not logs:
        raise DataError(f"{folder}: no log_standard_*.csv found (KuaiRand layout)")
    types = {
        **{f: pl.Int8 for f in KUAIRAND_FLAGS + ["is_rand"]},
        **{n: pl.Int64 for n in KUAIRAND_NUMBERS},
        "time_ms": pl.Int64,
    }
    required = ["user_id", "video_id", "time_ms", *KUAIRAND_FLAGS]
    frames = [read_table(p, separator=",", quoted=True, dtypes=types, required=required) for p in logs]
    columns = [
        "user_id",
        "video_id",
        "time_ms",
        *KUAIRAND_FLAGS,
        *[c for c in KUAIRAND_NUMBERS + ["is_rand", "tab"] if all(c in f.columns for f in frames)],
    ]
    inter = pl.concat([f.select(columns) for f in frames]).rename(
        {"user_id": "user", "video_id": "item", "time_ms": "timestamp"}
    )
    if "tab" in inter.columns:
        inter = inter.rename({"tab": "scenario"}).with_columns(pl.col("scenario").fill_null("unknown"))
    tables = RawTables(
        name=folder.parent.name if folder.name == "data" else folder.name,
        interactions=inter,
        labels=list(KUAIRAND_FLAGS),
        timestamp_kind="unix_ms",
        origin=str(logs[0]),
    )
    tables.users = _side_table(find_file(folder, "user_features*.csv"), "user_id", "user", tables.users)
    tables.items = _side_table(find_file(folder, "video_features_basic*.csv"), "video_id", "item", tables.items)
    return tables.validate()


@source("kuairec")
def load_kuairec(
    path: str | Path,
    matrix: Literal["big", "small"] | None = None,
    like_threshold: float = 2.0,
    missing_time: Literal["error", "drop"] = "error",
) -> RawTables:
    folder = _data_folder(Path(path))
    if matrix is None:
        matrix = "big" if (folder / "big_matrix.csv").is_file() else "small"
    matrix_path = folder / f"{matrix}_matrix.csv"
    types = {
        "play_duration": pl.Float64,
        "video_duration": pl.Float64,
        "timestamp": pl.Float64,
        "watch_ratio": pl.Float64,
    }
    frame = read_table(
        matrix_path,
        separator=",",
        quoted=True,
        dtypes=types,
        null_values=_MISSING,
        required=[c for c in KUAIREC_COLUMNS if c != "timestamp"],
    )
    if "timestamp" not in frame.columns:
        raise DataError(f"{matrix_path}: missing column 'timestamp'")
    missing = frame["timestamp"].is_null() | frame["timestamp"].is_nan()
    extra: dict = {}
    if missing.any():
        if missing_time == "error":
            raise DataError(
                f"{matrix_path}: line {frame['_line'][int(cast(int, missing.arg_max()))]}: missing timestamp "
                f"({int(missing.sum())} rows); pass missing_time='drop' to remove them"
            )
        extra["dropped_missing_time"] = int(missing.sum())
        frame = frame.filter(~missing)
    inter = frame.select(
        user="user_id",
        item="video_id",
        timestamp=(pl.col("timestamp") * 1000).round(0).cast(pl.Int64),
        watch_ratio="watch_ratio",
        like=(pl.col("watch_ratio") >= like_threshold).cast(pl.Int8),
        play_duration="play_duration",
        video_duration="video_duration",
    )
    tables = RawTables(
        name=f"kuairec-{matrix}",
        interactions=inter,
        labels=["watch_ratio", "like"],
        timestamp_kind="unix_ms",
        origin=str(matrix_path),
        extra=extra,
    )
    categories = folder / "item_categories.csv"
    if categories.is_file():
        items = read_table(categories, separator=",", quoted=True, dtypes={}, required=["video_id", "feat"])
        tables.items = items.select(
            item="video_id", categories=pl.col("feat").str.extract_all(r"\d+").cast(pl.List(pl.Int32))
        )
    tables.users = _side_table(find_file(folder, "user_features*.csv"), "user_id", "user", tables.users)
    return tables.validate()


def _data_folder(folder: Path) -> Path:
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    if (folder / "data").is_dir() and not any(folder.glob("*.csv")):
        return folder / "data"
    return folder


def _side_table(path: Path | None, key: str, name: str, default: pl.DataFrame) -> pl.DataFrame:
    if path is None:
        return default
    table = read_table(path, separator=",", quoted=True, dtypes={key: pl.Utf8}, required=[key], infer_types=True)
    return table.drop("_line").rename({key: name})
