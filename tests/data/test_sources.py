"""MovieLens and Amazon sources on tiny hand-written files; bad input must name the file and line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from recstack.data.sources import get_source, source_names
from recstack.errors import ConfigError, DataError

GENRES = [
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
]
# (item, title, year, genres): "Café" checks latin-1 decoding, the trailing space the strip.
MOVIES = [
    ("1", "Toy Story", "1995", ["Animation", "Children's", "Comedy"]),
    ("2", "Café", "1996", ["Drama"]),
    ("3", "Land Before Time III (1995)", "V", ["Animation"]),
]
RATINGS = [("1", "1", 5, 100), ("1", "2", 3, 50), ("2", "2", 4, 70), ("2", "3", 1, 80), ("3", "1", 2, 90)]
USERS = [("1", 24, "M", "technician", "85711"), ("2", 53, "F", "other", "94043"), ("3", 23, "M", "writer", "32067")]


def grouplens_title(title: str, year: str) -> str:
    return f"{title} ({year})"


def write_100k(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS))
    lines = [
        f"{i}|{grouplens_title(t, y)} |01-Jan-{y}||http://x|" + "|".join("1" if g in gs else "0" for g in GENRES)
        for i, t, y, gs in MOVIES
    ]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (folder / "u.user").write_text("".join(f"{u}|{a}|{g}|{o}|{z}\n" for u, a, g, o, z in USERS))
    (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n")
    return folder


def write_recbole_100k(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "ml-100k.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS)
    )
    (folder / "ml-100k.item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        + "".join(f"{i}\t{t}\t{y}\t{' '.join(gs)}\n" for i, t, y, gs in MOVIES)
    )
    (folder / "ml-100k.user").write_text(
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        + "".join(f"{u}\t{a}\t{g}\t{o}\t{z}\n" for u, a, g, o, z in USERS)
    )
    return folder


def test_registry_lists_every_source_and_rejects_unknown_names():
    assert {"movielens", "amazon", "recbole", "minionerec", "kuairand", "kuairec", "generic"} <= set(source_names())
    with pytest.raises(ConfigError, match="unknown source 'nope'.*movielens"):
        get_source("nope")


def test_movielens_100k_labels_text_and_users(tmp_path):
    raw = get_source("movielens")(write_100k(tmp_path / "ml"))
    inter = raw.interactions.sort("user", "timestamp")
    assert inter.height == 5 and inter["user"].n_unique() == 3 and inter["item"].n_unique() == 3
    assert inter["rating"].to_list() == [3.0, 5.0, 4.0, 1.0, 2.0]
    assert inter["like"].to_list() == [0, 1, 1, 0, 0] and inter["like"].dtype == pl.Int8
    assert raw.labels == ["rating", "like", "view"] and raw.timestamp_kind == "unix_seconds"
    items = raw.items.sort("item")
    assert items["title"].to_list() == ["Toy Story (1995)", "Café (1996)", "Land Before Time III (1995) (V)"]
    assert items["genres"][0] == "Animation|Children's|Comedy"
    assert raw.users.sort("user")["age"].to_list() == [24, 53, 23]


def test_recbole_copy_of_100k_gives_identical_tables(tmp_path):
    grouplens = get_source("movielens")(write_100k(tmp_path / "gl"))
    recbole = get_source("movielens")(write_recbole_100k(tmp_path / "rb"))
    for table in ("interactions", "items", "users"):
        a, b = getattr(grouplens, table), getattr(recbole, table)
        key = a.columns[:2] if table == "interactions" else a.columns[:1]
        assert a.sort(key).equals(b.sort(key)), table
    assert grouplens.labels == recbole.labels and grouplens.text_fields == recbole.text_fields


def test_movielens_1m_dat_and_latest_csv(tmp_path):
    dat = tmp_path / "ml-1m"
    dat.mkdir()
    (dat / "ratings.dat").write_text("1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    (dat / "movies.dat").write_bytes("10::Amélie (2001)::Comedy|Romance\n20::Heat (1995)::Action\n".encode("latin-1"))
    (dat / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    raw = get_source("movielens")(dat)
    assert raw.interactions.height == 3 and raw.items.sort("item")["title"][0] == "Amélie (2001)"
    assert raw.users.columns == ["user", "age", "gender", "occupation", "zip_code"]

    csv = tmp_path / "ml-latest"
    csv.mkdir()
    (csv / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.5,964982703\n2,1,3.5,964982224\n")
    (csv / "movies.csv").write_text('movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama\n')
    raw = get_source("movielens")(csv)
    assert raw.interactions["like"].to_list() == [1, 0]
    assert raw.items["title"][0] == "American President, The (1995)" and raw.users.height == 0


def test_movielens_order_only_sequences(tmp_path):
    folder = tmp_path / "ml-1m-seq"
    folder.mkdir()
    (folder / "user_sequence.txt").write_text("1 20 10\n2 10\n")
    (folder / "movies.dat").write_text("10::A (2001)::Comedy\n20::B (1995)::Action\n")
    raw = get_source("movielens")(folder)
    assert raw.timestamp_kind == "order" and raw.labels == ["view"]
    assert raw.interactions.select("user", "item", "timestamp").rows() == [
        ("1", "20", 0),
        ("1", "10", 1),
        ("2", "10", 0),
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        ("1,1,5,100\n2,2,3,200\n", r"u\.data: line 1 has 1 field.*wrong delimiter"),
        ("1\t1\t5\t100\n2\t2\t3\n", r"u\.data: line 2: missing value in column 'timestamp' \(truncated"),
        ("1\t1\t5\t100\n2\t2\tgood\t200\n", r"u\.data: line 2: column 'rating' has value 'good'"),
        ("1\t1\t5\t100\n2\t2\t3\t200\t9\n", r"u\.data: line 2 has more than 4 fields"),
        ("", r"u\.data: file is empty"),
    ],
)
def test_bad_u_data_names_file_and_line(tmp_path, content, message):
    folder = write_100k(tmp_path / "ml")
    (folder / "u.data").write_text(content)
    with pytest.raises(DataError, match=message):
        get_source("movielens")(folder)


def test_missing_column_and_missing_files(tmp_path):
    folder = tmp_path / "latest"
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating\n1,1,4.0\n")
    (folder / "movies.csv").write_text("movieId,title,genres\n1,A,Drama\n")
    with pytest.raises(DataError, match=r"ratings\.csv: missing column 'timestamp'"):
        get_source("movielens")(folder)
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    with pytest.raises(DataError, match="no MovieLens files found"):
        get_source("movielens")(empty)


def test_amazon_sequences_with_item_text(tmp_path):
    folder = tmp_path / "beauty"
    folder.mkdir()
    (folder / "user_sequence.txt").write_text("U1 B1 B2 B3\nU2 B3  B4\n")
    records = [
        {"asin": "B1", "title": "Lipstick &amp; gloss", "categories": [["Beauty", "Makeup"], ["Gift"]]},
        {"asin": "B2", "title": "Soap", "categories": ["Beauty", "Bath"]},
        {"asin": "B3", "title": "Comb", "categories": "Beauty"},
    ]
    (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    raw = get_source("amazon")(folder)
    assert raw.interactions.select("user", "item", "timestamp").rows() == [
        ("U1", "B1", 0),
        ("U1", "B2", 1),
        ("U1", "B3", 2),
        ("U2", "B3", 0),
        ("U2", "B4", 1),
    ]
    items = {r["item"]: r for r in raw.items.iter_rows(named=True)}
    assert items["B1"]["categories"] == "Beauty > Makeup; Gift" and items["B2"]["categories"] == "Beauty > Bath"
    assert items["B3"]["categories"] == "Beauty" and items["B1"]["title"] == "Lipstick &amp; gloss"
    assert items["B4"]["title"] == "" and items["B4"]["categories"] == ""  # not described: kept, empty text
    assert raw.labels == ["view"] and raw.timestamp_kind == "order"


def test_amazon_sequence_errors_name_file_and_line(tmp_path):
    folder = tmp_path / "beauty"
    folder.mkdir()
    (folder / "user_sequence.txt").write_text("U1 B1\nU2 B2\nU1 B3\n")
    with pytest.raises(DataError, match=r"user_sequence\.txt: user 'U1' appears on more than one line \(lines 1 and 3"):
        get_source("amazon")(folder)
    (folder / "user_sequence.txt").write_text("U1 B1\n")
    (folder / "items.jsonl").write_text('{"asin": "B1", "title": "x"}\n{"asin": "B2", "title": \n')
    with pytest.raises(DataError, match=r"items\.jsonl: line 2: invalid JSON"):
        get_source("amazon")(folder)


def test_amazon_2018_reviews_and_meta(tmp_path):
    folder = tmp_path / "sci"
    folder.mkdir()
    reviews = [
        {"reviewerID": "A", "asin": "P1", "overall": 5.0, "unixReviewTime": 10, "reviewText": "good"},
        {"reviewerID": "A", "asin": "P2", "overall": 2.0, "unixReviewTime": 20},
        {"reviewerID": "B", "asin": "P1", "overall": 4.0, "unixReviewTime": 15},
    ]
    with gzip.open(folder / "Industrial_and_Scientific_5.json.gz", "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in reviews)
    meta = [
        {
            "asin": "P1",
            "title": "Tape",
            "brand": "3M",
            "category": ["Industrial", "Tapes"],
            "description": ["Strong.", "Sticky."],
        },
        {"asin": "P1", "title": "Tape (again)"},
        {"asin": "P9", "title": "never reviewed"},
    ]
    (folder / "meta_Industrial_and_Scientific.json").write_text("".join(json.dumps(m) + "\n" for m in meta))
    raw = get_source("amazon")(folder)
    assert raw.name == "Industrial_and_Scientific" and raw.labels == ["rating", "like", "view"]
    assert raw.interactions.sort("user", "timestamp")["like"].to_list() == [1, 0, 1]
    items = {r["item"]: r for r in raw.items.iter_rows(named=True)}
    assert items["P1"] == {
        "item": "P1",
        "title": "Tape",
        "brand": "3M",
        "categories": "Industrial > Tapes",
        "description": "Strong. Sticky.",
    }
    assert items["P2"]["title"] == "" and set(items) == {"P1", "P2"}
    assert raw.extra == {"meta_duplicates_dropped": 1, "meta_unreviewed_items": 1}
