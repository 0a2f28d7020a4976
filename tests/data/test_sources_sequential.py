"""RecBole (atomic and sequential) and MiniOneRec sources: sequences rebuilt from samples, given splits."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from recstack.data.sources import get_source
from recstack.errors import DataError

HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def rows(frame: pl.DataFrame, *columns: str) -> list[tuple]:
    return frame.sort("user", "timestamp").select(columns).rows()


def test_recbole_atomic_types_labels_and_order(tmp_path):
    (tmp_path / "shop.inter").write_text(
        "user_id:token\titem_id:token\trating:float\nu1\ti2\t4\nu1\ti1\t2.5\nu2\ti1\t1\n"
    )
    (tmp_path / "shop.item").write_text(
        "item_id:token\ttitle:token_seq\tprice:float\tvec:float_seq\n"
        "i1\tred pen\t1.5\t0.1 0.2\ni2\tblue pen\t2\t0.3 0.4\n"
    )
    raw = get_source("recbole")(tmp_path)
    assert raw.labels == ["rating", "view"] and raw.timestamp_kind == "order" and raw.text_fields == ["title"]
    assert rows(raw.interactions, "user", "item", "timestamp", "rating") == [
        ("u1", "i2", 0, 4.0),
        ("u1", "i1", 1, 2.5),
        ("u2", "i1", 0, 1.0),
    ]
    assert raw.items.sort("item")["vec"].to_list() == [[0.1, 0.2], [0.3, 0.4]]
    (tmp_path / "shop.inter").write_text("user_id:token\titem_id:int\nu1\ti1\n")
    with pytest.raises(DataError, match=r"shop\.inter: header column 'item_id:int'"):
        get_source("recbole")(tmp_path)


def test_recbole_fractional_timestamps_become_milliseconds(tmp_path):
    (tmp_path / "k.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu\ta\t10.25\nu\tb\t11\n")
    raw = get_source("recbole")(tmp_path)
    assert raw.timestamp_kind == "unix_ms" and raw.interactions["timestamp"].to_list() == [10250, 11000]


def write_unisrec(folder: Path, test_history: str = "3 4 5") -> Path:
    """User 0: items 0..6 (train 0-4, valid 5, test 6), histories truncated to 3; user 1: 7 8 | 0 | 1.

    Index tokens map to raw ids "A<index>" / "U<index>" through item2index / user2index.
    """
    folder.mkdir(exist_ok=True)
    train = ["0\t1 2 3\t4", "0\t0 1 2\t3", "0\t0 1\t2", "0\t0\t1", "1\t7\t8"]  # newest first, as UniSRec writes
    (folder / "S.train.inter").write_text(HEADER + "\n".join(train) + "\n")
    (folder / "S.valid.inter").write_text(HEADER + "0\t2 3 4\t5\n1\t7 8\t0\n")
    (folder / "S.test.inter").write_text(HEADER + f"0\t{test_history}\t6\n1\t7 8 0\t1\n")
    (folder / "S.item2index").write_text("".join(f"A{i}\t{i}\n" for i in range(9)))
    (folder / "S.user2index").write_text("U0\t0\nU1\t1\n")
    (folder / "S.text").write_text("item_id:token\ttext:token_seq\n" + "".join(f"A{i}\tthing {i}\n" for i in range(9)))
    return folder


def test_recbole_sequential_rebuilds_truncated_sequences_and_keeps_split(tmp_path):
    raw = get_source("recbole")(write_unisrec(tmp_path / "sci"))
    assert raw.timestamp_kind == "order" and raw.text_fields == ["text"]
    expected_user0 = [(f"A{i}", i, "train") for i in range(5)] + [("A5", 5, "valid"), ("A6", 6, "test")]
    assert rows(raw.interactions.filter(pl.col("user") == "U0"), "item", "timestamp", "split") == expected_user0
    assert rows(raw.interactions.filter(pl.col("user") == "U1"), "item", "split") == [
        ("A7", "train"),
        ("A8", "train"),
        ("A0", "valid"),
        ("A1", "test"),
    ]
    assert raw.items.filter(pl.col("item") == "A3")["text"][0] == "thing 3"


def test_recbole_sequential_disagreeing_history_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"samples disagree on item 3 of user '0'.*S\.(train|test)\.inter line"):
        get_source("recbole")(write_unisrec(tmp_path / "sci", test_history="8 4 5"))


def write_minionerec(folder: Path, test_history: str = "[0, 1, 2, 3]") -> Path:
    folder.mkdir(exist_ok=True)
    items = {
        str(i): {
            "title": f"item {i}",
            "description": "['Strong.', 'Cheap.']" if i == 0 else "plain",
            "brand": "B",
            "categories": "",
        }
        for i in range(6)
    }
    (folder / "C.item.json").write_text(json.dumps(items))
    (folder / "C.index.json").write_text(json.dumps({str(i): [f"<a_{i}>", f"<b_{i + 10}>", "<c_0>"] for i in range(6)}))
    head = "user_id,history_item_title,item_title,history_item_id,item_id,history_item_sid,item_sid\n"
    (folder / "C.valid.csv").write_text(
        head + 'U1,"[\'item 0\', \'item 1\']",item 2,"[0, 1]",2,x,y\nU1,"[]",item 3,"[0, 1, 2]",3,x,y\n'
    )
    (folder / "C.test.csv").write_text(head + f'U1,"[]",item 4,"{test_history}",4,x,y\nU2,"[]",item 0,[5],0,x,y\n')
    return folder


def test_minionerec_sequences_split_text_and_semantic_ids(tmp_path):
    raw = get_source("minionerec")(write_minionerec(tmp_path / "ind"))
    assert rows(raw.interactions, "user", "item", "timestamp", "split") == [
        ("U1", "0", 0, "train"),
        ("U1", "1", 1, "train"),
        ("U1", "2", 2, "valid"),
        ("U1", "3", 3, "valid"),
        ("U1", "4", 4, "test"),
        ("U2", "5", 0, "train"),
        ("U2", "0", 1, "test"),
    ]
    assert raw.extra["reference_semantic_ids"]["3"] == [3, 13, 0]
    assert raw.items.filter(pl.col("item") == "0")["description"][0] == "Strong. Cheap."
    assert raw.name == "C" and raw.text_fields == ["title", "description", "brand", "categories"]


def test_minionerec_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"disagree on item 1 of user 'U1'.*C\.(valid|test)\.csv line"):
        get_source("minionerec")(write_minionerec(tmp_path / "a", test_history="[0, 9, 2, 3]"))
    folder = write_minionerec(tmp_path / "b")
    (folder / "C.index.json").write_text(json.dumps({"0": ["a_1", "<b_2>"]}))
    with pytest.raises(DataError, match=r"C\.index\.json: item '0'"):
        get_source("minionerec")(folder)
    (folder / "C.index.json").unlink()
    (folder / "C.valid.csv").write_text("user_id,item_id\nU1,2\n")
    with pytest.raises(DataError, match=r"C\.valid\.csv: missing column 'history_item_id'"):
        get_source("minionerec")(folder)
