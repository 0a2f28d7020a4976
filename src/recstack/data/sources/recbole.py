"""RecBole atomic files -> RawTables.

Atomic form: `<name>.inter` (+ optional `.item`, `.user`), tab-separated with typed headers
`field:token | float | token_seq | float_seq`. token -> str; float -> Float64; token_seq -> str (kept
as text: token_seq columns of `.item` are the text fields); float_seq -> List(Float64).
Labels: every float field of `.inter` except the timestamp, plus `view` = 1. Timestamps: the
`timestamp` field (whole seconds -> unix_seconds, fractional -> unix_ms), else the row order per user.

Sequential form (UniSRec / RecBole benchmark files): `<name>.train.inter`, `.valid.inter`,
`.test.inter` with user_id, item_id_list (space-separated history), item_id; optional
`<name>.text` (item_id, text) and `<name>.item2index` / `.user2index` (raw id <TAB> index, no header),
used to turn index tokens back into raw ids. Each user's full sequence is rebuilt: train targets sit
at position len(history) (histories truncated to the longest length L are ordered by file order),
the valid target follows the last train target, the test target the valid one. The given split is
kept in `split`; timestamps are positions (`timestamp_kind="order"`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast

import polars as pl

from recstack.data.sources import source
from recstack.data.sources._read import read_table, require_file
from recstack.data.sources._sequences import assemble_from_samples
from recstack.data.tables import RawTables
from recstack.errors import DataError

FIELD_TYPES = {"token": pl.Utf8, "float": pl.Float64, "token_seq": pl.Utf8, "float_seq": pl.Utf8}
SEQUENTIAL_SPLITS = ("train", "valid", "test")


def read_atomic(path: Path, renames: dict[str, str] | None = None) -> tuple[pl.DataFrame, dict[str, str]]:
    """One atomic file -> (frame with bare field names, {field: recbole type}); `_line` column kept."""
    require_file(path)
    with path.open("rb") as handle:
        header = handle.readline().decode("utf-8", "replace").rstrip("\r\n").split("\t")
    types: dict[str, str] = {}
    for column in header:
        field, _, kind = column.partition(":")
        if kind not in FIELD_TYPES:
            raise DataError(
                f"{path}: header column {column!r} is not 'name:type' with type one of {', '.join(FIELD_TYPES)}"
            )
        types[field] = kind
    frame = read_table(
        path, separator="\t", dtypes={f"{f}:{k}": FIELD_TYPES[k] for f, k in types.items()}, required=header[:1]
    )
    frame = frame.rename({f"{f}:{k}": f for f, k in types.items()})
    for field, kind in types.items():
        if kind == "float_seq":
            frame = frame.with_columns(pl.col(field).str.split(" ").cast(pl.List(pl.Float64), strict=False))
    renames = {k: v for k, v in (renames or {}).items() if k in types}
    return frame.rename(renames), {renames.get(f, f): k for f, k in types.items()}


@source("recbole")
def load_recbole(
    path: str | Path,
    name: str | None = None,
    user_field: str = "user_id",
    item_field: str = "item_id",
    time_field: str = "timestamp",
) -> RawTables:
    """Folder with RecBole atomic files (atomic or sequential form, detected); `name` picks the dataset."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    name = name or _dataset_name(folder)
    renames = {user_field: "user", item_field: "item", time_field: "timestamp"}
    if any((folder / f"{name}.{split}.inter").is_file() for split in SEQUENTIAL_SPLITS):
        return _load_sequential(folder, name, renames)
    inter_path = folder / f"{name}.inter"
    inter, types = read_atomic(inter_path, renames)
    for key in ("user", "item"):
        if key not in inter.columns:
            raise DataError(f"{inter_path}: missing column {dict(zip(renames.values(), renames))[key]!r}")
    labels = [f for f, k in types.items() if k == "float" and f not in ("timestamp", "user", "item")]
    timestamp_kind: Literal["unix_seconds", "unix_ms", "order"] = "order"
    if "timestamp" in inter.columns:
        timestamp_kind, stamps = _timestamps(inter, inter_path)
        inter = inter.with_columns(timestamp=stamps)
    else:
        inter = inter.with_columns(timestamp=pl.int_range(pl.len(), dtype=pl.Int64).over("user"))
    inter = inter.drop("_line").with_columns(view=pl.lit(1, dtype=pl.Int8))
    tables = RawTables(
        name=name, interactions=inter, labels=labels + ["view"], timestamp_kind=timestamp_kind, origin=str(inter_path)
    )
    if (folder / f"{name}.item").is_file():
        items, item_types = read_atomic(folder / f"{name}.item", renames)
        tables.items = items.drop("_line")
        tables.text_fields = [f for f, k in item_types.items() if k == "token_seq"]
    if (folder / f"{name}.user").is_file():
        tables.users = read_atomic(folder / f"{name}.user", renames)[0].drop("_line")
    return tables.validate()


def _dataset_name(folder: Path) -> str:
    stems = {p.name.split(".")[0] for p in folder.glob("*.inter")}
    if len(stems) != 1:
        found = ", ".join(sorted(stems)) or "none"
        raise DataError(
            f"{folder}: expected the .inter files of exactly one RecBole dataset "
            f"(<name>.inter or <name>.train.inter); found: {found}. Pass name=..."
        )
    return stems.pop()


def _timestamps(inter: pl.DataFrame, path: Path) -> tuple[Literal["unix_seconds", "unix_ms"], pl.Series]:
    stamps = inter["timestamp"]
    if stamps.null_count() or stamps.is_nan().any():
        row = int(cast(int, (stamps.is_null() | stamps.is_nan()).arg_max()))
        raise DataError(f"{path}: line {inter['_line'][row]}: missing timestamp")
    if (stamps.round(0) == stamps).all():
        return "unix_seconds", stamps.cast(pl.Int64)
    return "unix_ms", (stamps * 1000).round(0).cast(pl.Int64)


def _load_sequential(folder: Path, name: str, renames: dict[str, str]) -> RawTables:
    list_field = next(k for k, v in renames.items() if v == "item") + "_list"
    parts = []
    for split in SEQUENTIAL_SPLITS:
        path = folder / f"{name}.{split}.inter"
        if not path.is_file():
            continue
        frame, _ = read_atomic(path, renames)
        if list_field not in frame.columns or "user" not in frame.columns or "item" not in frame.columns:
            raise DataError(
                f"{path}: sequential RecBole file needs columns user_id, {list_field}, item_id; "
                f"found {', '.join(c for c in frame.columns if c != '_line')}"
            )
        parts.append(
            frame.select(
                "user",
                "_line",
                target="item",
                split=pl.lit(split),
                file=pl.lit(path.name),
                history=pl.col(list_field).fill_null("").str.extract_all(r"\S+"),
            )
        )
    samples = _positions(pl.concat(parts), str(folder))
    sequence = assemble_from_samples(samples, f"{folder}/{name}.*.inter")
    sequence = _map_index(sequence, folder / f"{name}.user2index", "user")
    sequence = _map_index(sequence, folder / f"{name}.item2index", "item")
    tables = RawTables(
        name=name,
        interactions=sequence.with_columns(view=pl.lit(1, dtype=pl.Int8)),
        labels=["view"],
        timestamp_kind="order",
        origin=str(folder),
    )
    if (folder / f"{name}.text").is_file():
        text, _ = read_atomic(folder / f"{name}.text", renames)
        tables.items = text.drop("_line").with_columns(pl.exclude("item").fill_null(""))
        tables.text_fields = [c for c in tables.items.columns if c != "item"]
    return tables.validate()


def _positions(samples: pl.DataFrame, origin: str) -> pl.DataFrame:
    """Position of each sample's target in its user's full sequence (see module docstring)."""
    samples = samples.with_columns(length=pl.col("history").list.len().cast(pl.Int64))
    longest = int(cast(int, samples["length"].max()))
    train = samples.filter(pl.col("split") == "train").sort("_line")
    steps = train.filter(pl.col("length") < longest).select(pl.col("length").diff().over("user"))["length"]
    descending = bool((steps < 0).sum() > (steps > 0).sum())  # UniSRec lists the longest prefix first
    train = train.with_columns(
        position=pl.when(pl.col("length") < longest)
        .then(pl.col("length"))
        .otherwise(
            longest
            + pl.col("_line")
            .rank("ordinal", descending=descending)
            .over("user", pl.col("length") == longest)
            .cast(pl.Int64)
            - 1
        )
    )
    last_train = train.group_by("user").agg(after_train=pl.col("position").max() + 1)
    valid = samples.filter(pl.col("split") == "valid").join(last_train, on="user", how="left")
    valid = valid.with_columns(position=pl.coalesce("after_train", "length")).drop("after_train")
    after_valid = valid.select("user", after_valid=pl.col("position") + 1)
    test = (
        samples.filter(pl.col("split") == "test")
        .join(after_valid, on="user", how="left")
        .join(last_train, on="user", how="left")
        .with_columns(position=pl.coalesce("after_valid", "after_train", "length"))
        .drop("after_valid", "after_train")
    )
    for part in (valid, test):
        repeated = part.filter(pl.col("user").is_duplicated())
        if repeated.height:
            raise DataError(
                f"{origin}: {repeated['file'][0]} line {repeated['_line'][0]}: user "
                f"{repeated['user'][0]!r} has more than one row (one valid/test sample per user)"
            )
    return pl.concat([train, valid, test]).drop("length")


def _map_index(sequence: pl.DataFrame, path: Path, key: str) -> pl.DataFrame:
    """Replace index tokens by raw ids using `<name>.<key>2index` (raw <TAB> index) when present."""
    if not path.is_file():
        return sequence
    index = read_table(path, separator="\t", dtypes={}, names=["raw", "index"], required=["raw", "index"])
    mapped = sequence.join(
        index.select("raw", "index"), left_on=key, right_on="index", how="left", maintain_order="left"
    )
    missing = mapped.filter(pl.col("raw").is_null())
    if missing.height:
        raise DataError(f"{path}: no raw id for {key} index {missing[key][0]!r} ({missing.height} rows)")
    return mapped.with_columns(pl.col("raw").alias(key)).drop("raw")
