"""MovieLens (GroupLens) in all its public layouts -> RawTables with one schema.

Detected from the files in the folder, first match wins:
  100K        u.data (user TAB item TAB rating TAB unix_ts), u.item ('|', latin-1: id, title, dates,
              URL, 19 genre flags named by u.genre), u.user (id|age|gender|occupation|zip)
  1M / 10M    ratings.dat (user::item::rating::ts), movies.dat (id::title::genres), users.dat
              (id::gender::age::occupation::zip; absent in 10M)
  20M+/latest ratings.csv (userId,movieId,rating,timestamp), movies.csv (movieId,title,genres)
  order-only  user_sequence.txt ("<user> <item> ..." oldest first, as ML-1M prepared by DiffuRec)
              + movies.dat + users.dat: timestamp = position, label `view` only
  RecBole     ml-100k.inter/.item/.user (RecBole's copy of 100K), read by the recbole source

Every layout gives items (item, title, genres '|'-separated) and, where the files have users, users
(user, age Int64, gender, occupation, zip_code). Labels: rating (Float64), like = rating >= 4 (Int8),
view = 1 (Int8). The RecBole copy stores "Toy Story" + release_year "1995"; we rebuild
"Toy Story (1995)" and read its "unkonwn" placeholder as "unknown", so both copies of 100K agree.
Titles are stripped of surrounding spaces (u.item has a few trailing ones).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recstack.data.sources import source
from recstack.data.sources._read import read_table
from recstack.data.sources._sequences import sequences_from_lines
from recstack.data.sources.recbole import load_recbole
from recstack.data.tables import RawTables
from recstack.errors import DataError

GENRES_100K = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
RATINGS = ["user", "item", "rating", "timestamp"]
RATING_TYPES = {"rating": pl.Float64, "timestamp": pl.Int64}
USER_COLUMNS = ["user", "age", "gender", "occupation", "zip_code"]
LIKE_THRESHOLD = 4.0

LAYOUTS = (
    "u.data (100K), ratings.dat (1M/10M), ratings.csv (20M/25M/latest), user_sequence.txt + movies.dat "
    "(order-only 1M), or ml-100k.inter (RecBole)"
)


@source("movielens")
def load_movielens(path: str | Path) -> RawTables:
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (expected a MovieLens folder with {LAYOUTS})")
    if (folder / "u.data").is_file():
        tables = _load_100k(folder)
    elif (folder / "ratings.dat").is_file():
        tables = _load_dat(folder)
    elif (folder / "ratings.csv").is_file():
        tables = _load_csv(folder)
    elif (folder / "user_sequence.txt").is_file():
        tables = _load_order_only(folder)
    elif any(folder.glob("*.inter")):
        tables = _from_recbole(load_recbole(folder))
    else:
        raise DataError(f"{folder}: no MovieLens files found; expected {LAYOUTS}")
    return tables.validate()


def with_rating_labels(interactions: pl.DataFrame) -> pl.DataFrame:
    """Add like = rating >= 4 and view = 1 (Int8)."""
    return interactions.with_columns(
        like=(pl.col("rating") >= LIKE_THRESHOLD).cast(pl.Int8), view=pl.lit(1, dtype=pl.Int8)
    )


def _tables(
    folder: Path, interactions: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame | None, origin: Path
) -> RawTables:
    has_rating = "rating" in interactions.columns
    labels = ["rating", "like", "view"] if has_rating else ["view"]
    tables = RawTables(
        name=folder.name,
        interactions=interactions.select("user", "item", "timestamp", *labels),
        items=items.select("item", pl.col("title").str.strip_chars(), pl.col("genres").fill_null("")),
        labels=labels,
        text_fields=["title", "genres"],
        timestamp_kind="unix_seconds" if has_rating else "order",
        origin=str(origin),
    )
    if users is not None:
        tables.users = users.select(USER_COLUMNS)
    return tables


def _load_100k(folder: Path) -> RawTables:
    ratings = read_table(folder / "u.data", separator="\t", names=RATINGS, dtypes=RATING_TYPES, required=RATINGS)
    genres = list(GENRES_100K)
    if (folder / "u.genre").is_file():
        genre_table = read_table(
            folder / "u.genre",
            separator="|",
            names=["genre", "index"],
            dtypes={"index": pl.Int64},
            required=["genre", "index"],
        ).sort("index")
        genres = genre_table["genre"].to_list()
    flags = [f"flag_{i}" for i in range(len(genres))]
    items = read_table(
        folder / "u.item",
        separator="|",
        encoding="auto",
        dtypes={},
        names=["item", "title", "release_date", "video_release_date", "imdb_url", *flags],
        required=["item", "title", *flags],
    )
    named = [pl.when(pl.col(flag) == "1").then(pl.lit(genre)) for flag, genre in zip(flags, genres)]
    items = items.with_columns(genres=pl.concat_list(named).list.drop_nulls().list.join("|"))
    users = (
        read_table(
            folder / "u.user", separator="|", names=USER_COLUMNS, dtypes={"age": pl.Int64}, required=USER_COLUMNS
        )
        if (folder / "u.user").is_file()
        else None
    )
    return _tables(folder, with_rating_labels(ratings), items, users, folder / "u.data")


def _movies_dat(folder: Path) -> pl.DataFrame:
    return read_table(
        folder / "movies.dat",
        separator="::",
        encoding="auto",
        names=["item", "title", "genres"],
        dtypes={},
        required=["item", "title"],
    )


def _users_dat(folder: Path) -> pl.DataFrame | None:
    if not (folder / "users.dat").is_file():
        return None
    return read_table(
        folder / "users.dat",
        separator="::",
        encoding="auto",
        names=["user", "gender", "age", "occupation", "zip_code"],
        dtypes={"age": pl.Int64},
        required=USER_COLUMNS,
    )


def _load_dat(folder: Path) -> RawTables:
    ratings = read_table(folder / "ratings.dat", separator="::", names=RATINGS, dtypes=RATING_TYPES, required=RATINGS)
    return _tables(folder, with_rating_labels(ratings), _movies_dat(folder), _users_dat(folder), folder / "ratings.dat")


def _load_csv(folder: Path) -> RawTables:
    ratings = read_table(
        folder / "ratings.csv",
        separator=",",
        quoted=True,
        dtypes={"rating": pl.Float64, "timestamp": pl.Int64},
        required=["userId", "movieId", "rating", "timestamp"],
    )
    ratings = ratings.select(pl.col("userId").alias("user"), pl.col("movieId").alias("item"), "rating", "timestamp")
    movies = read_table(folder / "movies.csv", separator=",", quoted=True, dtypes={}, required=["movieId", "title"])
    movies = movies.rename({"movieId": "item"})
    if "genres" not in movies.columns:
        movies = movies.with_columns(genres=pl.lit(""))
    return _tables(folder, with_rating_labels(ratings), movies, None, folder / "ratings.csv")


def _load_order_only(folder: Path) -> RawTables:
    path = folder / "user_sequence.txt"
    if not (folder / "movies.dat").is_file():
        raise DataError(f"{folder}: user_sequence.txt needs movies.dat beside it (MovieID::Title::Genres)")
    sequences = sequences_from_lines(path).with_columns(view=pl.lit(1, dtype=pl.Int8))
    return _tables(folder, sequences, _movies_dat(folder), _users_dat(folder), path)


def _from_recbole(raw: RawTables) -> RawTables:
    """RecBole's ML-100K copy -> the same schema as the GroupLens files."""
    title = pl.col("movie_title").replace("unkonwn", "unknown")
    year = pl.col("release_year")  # "1995", or "V" for a video release whose title already ends "(1995)"
    has_year = year.is_not_null() & (year != "unkonwn") & (year != "")
    items = raw.items.with_columns(
        title=pl.when(has_year).then(pl.format("{} ({})", title, year)).otherwise(title),
        genres=pl.col("class").fill_null("").str.replace_all(" ", "|"),
    )
    users = raw.users.with_columns(pl.col("age").cast(pl.Int64, strict=False))
    if users["age"].null_count():
        raise DataError(f"{raw.origin}: users table has a non-integer age")
    inter = raw.interactions
    if "rating" not in inter.columns:
        raise DataError(f"{raw.origin}: RecBole MovieLens file has no rating:float column")
    inter = with_rating_labels(inter.select("user", "item", "timestamp", "rating"))
    folder = Path(raw.origin).parent
    return _tables(folder, inter, items, users, Path(raw.origin))
