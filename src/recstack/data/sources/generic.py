"""Any CSV / TSV / Parquet log, described by a YAML column mapping -> RawTables.

    name: my-shop                      # default: the YAML file's stem
    delimiter: ","                     # for text files
    interactions: {path: log.csv, user: uid, item: iid, timestamp: ts, labels: {click: clk}, scenario: page}
    items: {path: items.parquet, item: id, text: [title]}
    users: {path: users.csv, user: uid}

Relative paths resolve against the YAML file's folder. Only mapped interaction columns are kept.
Timestamps: a numeric column (rounded to whole units of `timestamp_kind`), or text parsed with
`timestamp_format` (strptime, -> unix seconds); no timestamp column -> file order per user
(`timestamp_kind="order"`). No labels mapped -> a single label `view` = 1. Item/user side tables
keep every column (or the listed `features`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from recstack.config import from_dict, load_yaml
from recstack.data.sources import source
from recstack.data.sources._read import read_table, require_file
from recstack.data.tables import RawTables
from recstack.errors import ConfigError, DataError


@dataclass
class InteractionsMapping:
    path: str = ""
    user: str = "user"
    item: str = "item"
    timestamp: str | None = None
    timestamp_kind: Literal["unix_seconds", "unix_ms"] = "unix_seconds"
    timestamp_format: str | None = None
    """strptime format for text timestamps, e.g. "%Y-%m-%d %H:%M:%S" (result in unix seconds)."""
    labels: dict[str, str] = field(default_factory=dict)
    """label name -> column."""
    scenario: str | None = None
    event: str | None = None
    split: str | None = None
    """column holding "train" / "valid" / "test" when the log ships its own split."""


@dataclass
class ItemsMapping:
    path: str = ""
    item: str = "item"
    text: list[str] = field(default_factory=list)
    features: list[str] | None = None
    """columns to keep besides the id and text; None = all."""


@dataclass
class UsersMapping:
    path: str = ""
    user: str = "user"
    features: list[str] | None = None


@dataclass
class GenericSourceConfig:
    name: str = ""
    delimiter: str = ","
    interactions: InteractionsMapping = field(default_factory=InteractionsMapping)
    items: ItemsMapping | None = None
    users: UsersMapping | None = None


@source("generic")
def load_generic(path: str | Path) -> RawTables:
    """Read the YAML mapping at `path` and the files it names."""
    yaml_path = Path(path)
    config = from_dict(GenericSourceConfig, load_yaml(yaml_path))
    return load_mapped(config, yaml_path.parent, default_name=yaml_path.stem)


def load_mapped(config: GenericSourceConfig, base: Path, default_name: str = "generic") -> RawTables:
    spec = config.interactions
    if not spec.path:
        raise ConfigError("interactions.path is required (the interaction log file)")
    log_path = _resolve(base, spec.path)
    frame = _read(log_path, config.delimiter)
    _require(
        frame,
        log_path,
        {
            "interactions.user": spec.user,
            "interactions.item": spec.item,
            "interactions.timestamp": spec.timestamp,
            "interactions.scenario": spec.scenario,
            "interactions.event": spec.event,
            "interactions.split": spec.split,
            **{f"interactions.labels.{k}": v for k, v in spec.labels.items()},
        },
    )
    columns = [pl.col(spec.user).cast(pl.Utf8).alias("user"), pl.col(spec.item).cast(pl.Utf8).alias("item")]
    for key in ("scenario", "event", "split"):
        if getattr(spec, key):
            columns.append(pl.col(getattr(spec, key)).cast(pl.Utf8).alias(key))
    for label, column in spec.labels.items():
        dtype = frame.schema[column]
        if not (dtype.is_numeric() or dtype == pl.Boolean):
            raise DataError(f"{log_path}: label {label!r} maps to column {column!r} of type {dtype}, expected numbers")
        columns.append((pl.col(column).cast(pl.Int8) if dtype == pl.Boolean else pl.col(column)).alias(label))
    inter = frame.select(*columns, "_line")
    timestamp_kind = spec.timestamp_kind if spec.timestamp else "order"
    inter = inter.with_columns(timestamp=_timestamps(frame, spec, log_path))
    labels = list(spec.labels) or ["view"]
    if not spec.labels:
        inter = inter.with_columns(view=pl.lit(1, dtype=pl.Int8))
    ordered = ["user", "item", "timestamp", *labels, *[c for c in ("scenario", "event", "split") if c in inter.columns]]
    tables = RawTables(
        name=config.name or default_name,
        interactions=inter.select(ordered),
        labels=labels,
        timestamp_kind=timestamp_kind,
        origin=str(log_path),
    )
    if config.items is not None:
        tables.items, tables.text_fields = _side(
            config.items, config.items.item, "item", base, config.delimiter, config.items.text
        )
    if config.users is not None:
        tables.users, _ = _side(config.users, config.users.user, "user", base, config.delimiter, [])
    return tables.validate()


def _resolve(base: Path, path: str) -> Path:
    resolved = Path(path).expanduser()
    return resolved if resolved.is_absolute() else base / resolved


def _read(path: Path, delimiter: str) -> pl.DataFrame:
    if path.suffix == ".parquet":
        try:
            frame = pl.read_parquet(require_file(path))
        except pl.exceptions.PolarsError as exc:
            raise DataError(f"{path}: cannot read Parquet ({exc})") from exc
        return frame.with_row_index("_line", offset=1)
    separator = "\t" if path.suffix == ".tsv" and delimiter == "," else delimiter
    return read_table(path, separator=separator, quoted=True, dtypes={}, infer_types=True)


def _require(frame: pl.DataFrame, path: Path, mapping: dict[str, str | None]) -> None:
    present = [c for c in frame.columns if c != "_line"]
    for key, column in mapping.items():
        if column is not None and column not in frame.columns:
            hint = " (a single column: wrong delimiter?)" if len(present) == 1 else ""
            raise DataError(
                f"{path}: column {column!r} (mapped by {key}) not found; columns present: {', '.join(present)}{hint}"
            )
        if column is not None and frame[column].null_count():
            line = frame.filter(pl.col(column).is_null())["_line"][0]
            raise DataError(f"{path}: line {line}: missing value in column {column!r} (mapped by {key})")


def _timestamps(frame: pl.DataFrame, spec: InteractionsMapping, path: Path) -> pl.Series:
    if spec.timestamp is None:
        return frame.select(t=pl.int_range(pl.len(), dtype=pl.Int64).over(spec.user))["t"]
    column = frame[spec.timestamp]
    if spec.timestamp_format:
        parsed = column.cast(pl.Utf8).str.strptime(pl.Datetime("us"), spec.timestamp_format, strict=False)
        bad = parsed.is_null()
        if bad.any():
            row = int(bad.arg_max())
            raise DataError(
                f"{path}: line {frame['_line'][row]}: timestamp {column[row]!r} does not match "
                f"timestamp_format {spec.timestamp_format!r}"
            )
        return parsed.dt.epoch("s")
    if column.dtype.is_float():
        return column.round(0).cast(pl.Int64)
    cast = column.cast(pl.Int64, strict=False)
    bad = cast.is_null()
    if bad.any():
        row = int(bad.arg_max())
        raise DataError(
            f"{path}: line {frame['_line'][row]}: timestamp {column[row]!r} is not a number; set "
            "interactions.timestamp_format for text dates"
        )
    return cast


def _side(
    spec: ItemsMapping | UsersMapping, key: str, name: str, base: Path, delimiter: str, text: list[str]
) -> tuple[pl.DataFrame, list[str]]:
    if not spec.path:
        raise ConfigError(f"{name}s.path is required when {name}s is given")
    path = _resolve(base, spec.path)
    frame = _read(path, delimiter)
    keep = spec.features if spec.features is not None else [c for c in frame.columns if c not in (key, "_line", *text)]
    _require(frame, path, {f"{name}s.{name}": key})
    for column in [*text, *keep]:
        if column not in frame.columns:
            raise DataError(
                f"{path}: column {column!r} (listed in {name}s) not found; columns present: "
                f"{', '.join(c for c in frame.columns if c != '_line')}"
            )
    table = frame.select(
        pl.col(key).cast(pl.Utf8).alias(name), *[pl.col(c).cast(pl.Utf8).fill_null("") for c in text], *keep
    )
    return table, list(text)
