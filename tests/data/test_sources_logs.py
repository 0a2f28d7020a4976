"""KuaiRand, KuaiRec and generic (YAML-mapped CSV/Parquet) sources on tiny fixtures."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from recstack.data.sources import get_source
from recstack.errors import ConfigError, DataError

KUAIRAND_HEADER = (
    "user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,"
    "long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab"
)


def write_kuairand(folder: Path) -> Path:
    data = folder / "data"
    data.mkdir(parents=True)
    (data / "log_standard_4_08_to_4_21_pure.csv").write_text(
        KUAIRAND_HEADER + "\n0,10,20220408,1000,1649383200000,1,0,0,0,0,0,1,5000,9000,0,0,0,0,1\n"
        "0,11,20220408,1005,1649383500000,0,0,0,0,0,1,0,100,8000,0,0,0,0,2\n"
    )
    (data / "log_standard_4_22_to_5_08_pure.csv").write_text(
        KUAIRAND_HEADER + "\n1,10,20220422,0900,1650589200000,1,1,1,0,0,0,1,9000,9000,3,4,1,0,1\n"
    )
    (data / "user_features_pure.csv").write_text(
        "user_id,user_active_degree,follow_user_num\n0,high_active,5\n1,full_active,12\n"
    )
    (data / "video_features_basic_pure.csv").write_text(
        "video_id,author_id,video_type,tag\n10,7,NORMAL,28\n11,8,AD,9\n"
    )
    return folder


def test_kuairand_labels_scenario_and_side_tables(tmp_path):
    raw = get_source("kuai")(write_kuairand(tmp_path / "KuaiRand-Pure"))
    inter = raw.interactions.sort("user", "timestamp")
    assert raw.timestamp_kind == "unix_ms" and raw.name == "KuaiRand-Pure"
    assert raw.labels == [
        "is_click",
        "is_like",
        "is_follow",
        "is_comment",
        "is_forward",
        "is_hate",
        "long_view",
        "is_profile_enter",
    ]
    assert inter["timestamp"].to_list() == [1649383200000, 1649383500000, 1650589200000]
    assert inter["is_click"].to_list() == [1, 0, 1] and inter["is_hate"].to_list() == [0, 1, 0]
    assert inter["scenario"].to_list() == ["1", "2", "1"] and inter["play_time_ms"].to_list() == [5000, 100, 9000]
    assert raw.users.sort("user")["follow_user_num"].to_list() == [5, 12]
    assert raw.items.sort("item")["video_type"].to_list() == ["NORMAL", "AD"]


def test_kuairand_non_numeric_flag_names_line(tmp_path):
    folder = write_kuairand(tmp_path / "kr")
    log = folder / "data" / "log_standard_4_22_to_5_08_pure.csv"
    log.write_text(log.read_text().replace(",1,1,1,0,0,0,1,9000", ",1,yes,1,0,0,0,1,9000"))
    with pytest.raises(
        DataError, match=r"log_standard_4_22_to_5_08_pure\.csv: line 2: column 'is_like' has value 'yes'"
    ):
        get_source("kuairand")(folder)


def write_kuairec(folder: Path, third_timestamp: str = "1593878903.5") -> Path:
    folder.mkdir()
    (folder / "small_matrix.csv").write_text(
        "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio\n"
        "14,148,4381,6067,2020-07-05 05:27:48.378,20200705.0,1593898068.378,0.722\n"
        "14,183,11635,6100,2020-07-05 05:28:00.057,20200705.0,1593898080.057,1.907\n"
        f"19,148,16000,6067,,,{third_timestamp},2.637\n"
    )
    (folder / "item_categories.csv").write_text('video_id,feat\n148,"[11, 28]"\n183,[8]\n')
    return folder


def test_kuairec_watch_ratio_like_and_missing_time(tmp_path):
    raw = get_source("kuairec")(write_kuairec(tmp_path / "ok"))
    assert raw.labels == ["watch_ratio", "like"] and raw.timestamp_kind == "unix_ms"
    assert raw.interactions["like"].to_list() == [0, 0, 1]  # watch_ratio >= 2.0
    assert raw.interactions["timestamp"].to_list() == [1593898068378, 1593898080057, 1593878903500]
    assert raw.items.sort("item")["categories"].to_list() == [[11, 28], [8]]
    folder = write_kuairec(tmp_path / "missing", third_timestamp="")
    with pytest.raises(DataError, match=r"small_matrix\.csv: line 4: missing timestamp.*missing_time='drop'"):
        get_source("kuairec")(folder)
    dropped = get_source("kuairec")(folder, missing_time="drop")
    assert dropped.interactions.height == 2 and dropped.extra["dropped_missing_time"] == 1


def write_generic(folder: Path, mapping: str) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "log.csv").write_text(
        "uid,iid,ts,clk,page\nu1,a,2024-01-02 00:00:00,1,home\n"
        "u1,b,2024-01-01 00:00:00,0,search\nu2,a,2024-01-03 00:00:00,1,home\n"
    )
    pl.DataFrame({"id": ["a", "b"], "title": ["Apple", None], "price": [1.0, 2.0]}).write_parquet(
        folder / "items.parquet"
    )
    (folder / "map.yaml").write_text(mapping)
    return folder / "map.yaml"


MAPPING = """
name: shop
interactions: {path: log.csv, user: uid, item: iid, timestamp: ts, timestamp_format: "%Y-%m-%d %H:%M:%S",
               labels: {click: clk}, scenario: page}
items: {path: items.parquet, item: id, text: [title]}
"""


def test_generic_mapping_with_text_timestamps_and_parquet_items(tmp_path):
    raw = get_source("generic")(write_generic(tmp_path / "g", MAPPING))
    assert raw.name == "shop" and raw.labels == ["click"] and raw.text_fields == ["title"]
    inter = raw.interactions.sort("user", "timestamp")
    assert inter.columns == ["user", "item", "timestamp", "click", "scenario"]
    assert inter.select("user", "item", "click", "scenario").rows() == [
        ("u1", "b", 0, "search"),
        ("u1", "a", 1, "home"),
        ("u2", "a", 1, "home"),
    ]
    assert inter["timestamp"][0] == 1704067200  # 2024-01-01 00:00:00 UTC
    assert raw.items.sort("item").rows() == [("a", "Apple", 1.0), ("b", "", 2.0)]


def test_generic_order_only_without_timestamp_or_labels(tmp_path):
    raw = get_source("generic")(write_generic(tmp_path / "g", "interactions: {path: log.csv, user: uid, item: iid}"))
    assert raw.timestamp_kind == "order" and raw.labels == ["view"]
    assert raw.interactions.select("user", "item", "timestamp").rows() == [
        ("u1", "a", 0),
        ("u1", "b", 1),
        ("u2", "a", 0),
    ]


def test_generic_errors_name_key_file_and_column(tmp_path):
    with pytest.raises(ConfigError, match="unknown key interactions.usr in InteractionsMapping"):
        get_source("generic")(write_generic(tmp_path / "a", "interactions: {path: log.csv, usr: uid}"))
    with pytest.raises(DataError, match=r"log\.csv: column 'user' \(mapped by interactions\.user\) not found"):
        get_source("generic")(write_generic(tmp_path / "b", "interactions: {path: log.csv}"))
    with pytest.raises(DataError, match=r"log\.csv: line 2: timestamp '2024-01-02 00:00:00' is not a number"):
        get_source("generic")(
            write_generic(tmp_path / "c", "interactions: {path: log.csv, user: uid, item: iid, timestamp: ts}")
        )
    with pytest.raises(DataError, match=r"wrong delimiter"):
        get_source("generic")(
            write_generic(tmp_path / "d", "delimiter: ';'\ninteractions: {path: log.csv, user: uid, item: iid}")
        )
