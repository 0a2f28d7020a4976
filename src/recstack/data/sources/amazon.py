"""Amazon review data -> RawTables, in two public layouts (detected from the folder).

(a) Sequences (P5 / OpenP5 / GRAM / SASRec): `user_sequence.txt`, one line per user
    "<user> <item1> ... <itemN>" oldest first; order-only (timestamp = position), label `view` = 1.
    Optional `items.jsonl`: {"asin", "title", "categories"} per line, categories a string, a list or
    a list of category paths -> text fields title, categories ("A > B; C > D"). Items of the
    sequences that items.jsonl does not describe still get a row, with empty text.
(b) Amazon 2018 5-core reviews: `<Category>_5.json[.gz]` (jsonl: reviewerID, asin, overall,
    unixReviewTime) + optional `meta_<Category>.json[.gz]` (asin, title, brand, category list,
    description list) -> labels rating, like (= rating >= 4), view; text fields title, brand,
    categories, description. The meta files repeat some asins: the first record is kept and the count
    of repeats is in `extra["meta_duplicates_dropped"]`; meta records of items nobody reviewed are not
    kept (count in `extra["meta_unreviewed_items"]`).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recstack.data.sources import source
from recstack.data.sources._read import find_file, flatten_json_text, read_ndjson
from recstack.data.sources._sequences import sequences_from_lines
from recstack.data.sources.movielens import with_rating_labels
from recstack.data.tables import RawTables
from recstack.errors import DataError

REVIEW_PATTERNS = ("*_5.json.gz", "*_5.json", "*_5.jsonl", "*_5.jsonl.gz", "reviews*.json*")
META_PATTERNS = ("meta_*.json.gz", "meta_*.json", "meta_*.jsonl", "meta_*.jsonl.gz")


@source("amazon")
def load_amazon(path: str | Path) -> RawTables:
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    if (folder / "user_sequence.txt").is_file():
        return load_amazon_sequences(folder)
    reviews = find_file(folder, *REVIEW_PATTERNS)
    if reviews is None:
        raise DataError(
            f"{folder}: no Amazon files found; expected user_sequence.txt (+ items.jsonl) or a "
            f"5-core reviews file <Category>_5.json[.gz] (+ meta_<Category>.json[.gz])"
        )
    return load_amazon_reviews(reviews, find_file(folder, *META_PATTERNS))


def load_amazon_sequences(folder: Path) -> RawTables:
    path = folder / "user_sequence.txt"
    inter = sequences_from_lines(path).with_columns(view=pl.lit(1, dtype=pl.Int8))
    seen = inter.select("item").unique(maintain_order=True)
    text_fields = ["title", "categories"]
    items_path = folder / "items.jsonl"
    if items_path.is_file():
        described = read_ndjson(
            items_path, {"asin": pl.Utf8, "title": pl.Utf8, "categories": pl.Utf8}, required=["asin"]
        )
        _reject_repeats(described, "asin", items_path)
        described = flatten_json_text(described, "categories").select(
            item="asin", title=pl.col("title").fill_null(""), categories="categories"
        )
        items = pl.concat([described, seen.join(described, on="item", how="anti")], how="diagonal")
    else:
        items = seen
    items = items.with_columns(
        *(pl.col(f).fill_null("") if f in items.columns else pl.lit("").alias(f) for f in text_fields)
    )
    return RawTables(
        name=folder.name,
        interactions=inter,
        items=items,
        labels=["view"],
        text_fields=text_fields,
        timestamp_kind="order",
        origin=str(path),
    ).validate()


def load_amazon_reviews(reviews_path: Path, meta_path: Path | None = None) -> RawTables:
    reviews = read_ndjson(
        reviews_path,
        {"reviewerID": pl.Utf8, "asin": pl.Utf8, "overall": pl.Float64, "unixReviewTime": pl.Int64},
        required=["reviewerID", "asin", "overall", "unixReviewTime"],
    )
    inter = with_rating_labels(
        reviews.select(user="reviewerID", item="asin", timestamp="unixReviewTime", rating="overall")
    )
    items = inter.select("item").unique(maintain_order=True)
    extra: dict = {}
    text_fields = ["title", "brand", "categories", "description"]
    if meta_path is not None:
        meta = read_ndjson(
            meta_path,
            {"asin": pl.Utf8, "title": pl.Utf8, "brand": pl.Utf8, "category": pl.Utf8, "description": pl.Utf8},
            required=["asin"],
        )
        before = meta.height
        meta = meta.unique("asin", keep="first", maintain_order=True)
        extra["meta_duplicates_dropped"] = before - meta.height
        reviewed = meta.filter(pl.col("asin").is_in(items["item"].implode()))
        extra["meta_unreviewed_items"] = meta.height - reviewed.height
        meta = flatten_json_text(reviewed.rename({"category": "categories"}), "categories")
        meta = flatten_json_text(meta, "description", inner=" ")
        items = items.join(meta.rename({"asin": "item"}), on="item", how="left", maintain_order="left")
    items = items.select(
        "item", *(pl.col(f).fill_null("") if f in items.columns else pl.lit("").alias(f) for f in text_fields)
    )
    name = reviews_path.name.split(".")[0].removesuffix("_5")
    return RawTables(
        name=name,
        interactions=inter,
        items=items,
        labels=["rating", "like", "view"],
        text_fields=text_fields,
        timestamp_kind="unix_seconds",
        origin=str(reviews_path),
        extra=extra,
    ).validate()


def _reject_repeats(frame: pl.DataFrame, key: str, path: Path) -> None:
    repeated = frame.filter(pl.col(key).is_duplicated())
    if repeated.height:
        lines = repeated.filter(pl.col(key) == repeated[key][0])["_line"].to_list()
        raise DataError(f"{path}: {key} {repeated[key][0]!r} is described twice (lines {lines[0]} and {lines[1]})")
