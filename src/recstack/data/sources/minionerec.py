"""MiniOneRec Amazon folder -> RawTables (order-only, with the given split and reference semantic IDs).

Files (<C> is the category, e.g. Industrial_and_Scientific):
  <C>.item.json    {"<idx>": {"title", "description", "brand", "categories"}} -> items; text fields
                   title, description, brand, categories. A description stored as a Python list
                   literal ("['a', 'b']") is joined with spaces.
  <C>.index.json   {"<idx>": ["<a_236>", "<b_231>", "<c_226>"]} -> extra["reference_semantic_ids"]
                   = {"<idx>": [236, 231, 226]} (MiniOneRec's own RQ codes, for comparison).
  <C>.valid.csv, <C>.test.csv, optional <C>.train.csv: next-item samples with columns user_id,
                   history_item_id (a list literal of item idx, oldest first), item_id, ... .

Interpretation (the files hold samples, not sequences): within each user the samples are taken in
file order train -> valid -> test, line by line. The first sample's history gives the start of the
user's sequence (positions 0..len-1; the csv truncates histories to the last 10 items, so older
items are unknown), each sample's target is the next position. Every history must agree with the
sequence so rebuilt (checked; a disagreement is a DataError naming the lines). Split: a target from
the valid file is "valid", from the test file "test", everything else "train". Raw item ids are
MiniOneRec's item idx strings; timestamps are positions (`timestamp_kind="order"`).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import polars as pl

from recstack.data.sources import source
from recstack.data.sources._read import find_file, read_table, require_file
from recstack.data.sources._sequences import assemble_from_samples
from recstack.data.tables import RawTables
from recstack.errors import DataError

TEXT_FIELDS = ["title", "description", "brand", "categories"]
SAMPLE_COLUMNS = ["user_id", "history_item_id", "item_id"]
_CODE = re.compile(r"^<[a-z]_(\d+)>$")


@source("minionerec")
def load_minionerec(path: str | Path, category: str | None = None) -> RawTables:
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    if category is None:
        found = find_file(folder, "*.item.json")
        if found is None:
            raise DataError(
                f"{folder}: no <Category>.item.json found (MiniOneRec layout: <C>.item.json, "
                "<C>.index.json, <C>.valid.csv, <C>.test.csv)"
            )
        category = found.name.removesuffix(".item.json")
    items = _read_items(folder / f"{category}.item.json")
    parts = []
    for order, split in enumerate(("train", "valid", "test")):
        path_ = folder / f"{category}.{split}.csv"
        if split == "train" and not path_.is_file():
            continue
        frame = read_table(path_, separator=",", quoted=True, dtypes={}, required=SAMPLE_COLUMNS)
        parts.append(
            frame.select(
                user="user_id",
                target="item_id",
                _line="_line",
                file=pl.lit(path_.name),
                split=pl.lit(split),
                order=pl.lit(order),
                history=pl.col("history_item_id").str.extract_all(r"[^\[\]\s,'\"]+"),
            )
        )
    samples = pl.concat(parts).sort("user", "order", "_line")
    start = pl.col("history").list.len().first().over("user").cast(pl.Int64)
    samples = samples.with_columns(position=start + pl.int_range(pl.len(), dtype=pl.Int64).over("user"))
    sequence = assemble_from_samples(samples, f"{folder}/{category}.*.csv")
    extra = {}
    index_path = folder / f"{category}.index.json"
    if index_path.is_file():
        extra["reference_semantic_ids"] = _read_semantic_ids(index_path)
    return RawTables(
        name=category,
        interactions=sequence.with_columns(view=pl.lit(1, dtype=pl.Int8)),
        items=items,
        labels=["view"],
        text_fields=TEXT_FIELDS,
        timestamp_kind="order",
        origin=str(folder),
        extra=extra,
    ).validate()


def _load_json_object(path: Path) -> dict:
    try:
        data = json.loads(require_file(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object keyed by item idx, got {type(data).__name__}")
    return data


def _read_items(path: Path) -> pl.DataFrame:
    data = _load_json_object(path)
    bad = next((k for k, v in data.items() if not isinstance(v, dict)), None)
    if bad is not None:
        raise DataError(f"{path}: item {bad!r} is not an object with title/description/brand/categories")
    # A small JSON object keyed by item: polars cannot read this shape column-wise, so build columns here.
    columns = {"item": list(data)}
    for field in TEXT_FIELDS:
        columns[field] = [_as_text(record.get(field)) for record in data.values()]
    return pl.DataFrame(columns, schema={c: pl.Utf8 for c in columns})


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(_as_text(v) for v in value)
    text = str(value)
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = ast.literal_eval(text)  # literals only: never executes code
        except (ValueError, SyntaxError):
            return text
        if isinstance(parsed, list):
            return " ".join(str(v) for v in parsed)
    return text


def _read_semantic_ids(path: Path) -> dict[str, list[int]]:
    data = _load_json_object(path)
    codes: dict[str, list[int]] = {}
    for item, tokens in data.items():
        matches = [_CODE.match(t) if isinstance(t, str) else None for t in (tokens if isinstance(tokens, list) else [])]
        if not matches or not all(matches):
            raise DataError(f'{path}: item {item!r}: expected a list like ["<a_12>", "<b_3>"], got {tokens!r}')
        codes[item] = [int(m.group(1)) for m in matches if m is not None]  # all matched (checked above)
    return codes
