import numpy as np
import polars as pl
import pytest

from recstack.data import splits
from recstack.data.dataset import TEST, TRAIN, VALID, Dataset
from recstack.data.prepare import PrepareConfig, prepare
from recstack.data.tables import RawTables
from recstack.errors import DataError
from tests.helpers import make_raw


def raw_from(rows, **kwargs):
    users, items, times = zip(*rows)
    frame = pl.DataFrame({"user": list(users), "item": list(items), "timestamp": list(times)})
    return RawTables("hand", frame, **kwargs)


def test_ids_contiguous_from_one_and_sorted_by_time():
    raw = raw_from([("b", "x", 5), ("a", "y", 3), ("a", "x", 1), ("b", "z", 2), ("a", "z", 2)])
    ds = prepare(raw)
    assert ds.num_users == 2 and ds.num_items == 3
    assert ds.users["raw_id"].to_list() == ["a", "b"]
    assert ds.items["item"].to_list() == [1, 2, 3]
    # user a (id 1): x@1, z@2, y@3 -> items 1, 3, 2
    assert ds.sequences().row(1).tolist() == [1, 3, 2]
    assert ds.sequences().row(0).tolist() == []  # padding row


def test_leave_one_out_split():
    raw = raw_from([("a", f"i{k}", k) for k in range(5)] + [("b", "i0", 0), ("b", "i1", 1)])
    ds = prepare(raw)
    a = ds.interactions.filter(pl.col("user") == 1)["split"].to_list()
    assert a == [TRAIN, TRAIN, TRAIN, VALID, TEST]
    b = ds.interactions.filter(pl.col("user") == 2)["split"].to_list()
    assert b == [TRAIN, TRAIN]  # too short for valid + test: stays in train
    users, targets = ds.eval_users("test")
    assert users.tolist() == [1] and targets.tolist() == [[ds.items.filter(pl.col("raw_id") == "i4")["item"][0]]]


def test_history_before_split_excludes_targets():
    ds = prepare(raw_from([("a", f"i{k}", k) for k in range(5)]))
    assert ds.sequences(before="valid").lengths()[1] == 3
    assert ds.sequences(before="test").lengths()[1] == 4
    batch = ds.user_batch(np.array([1]), before="test")
    assert batch.history.row(0).tolist() == ds.sequences(before="test").row(1).tolist()
    assert batch.history_features["timestamp"].tolist() == [0, 1, 2, 3]


def test_dedup_and_kcore_are_reported():
    rows = [
        ("a", "x", 1),
        ("a", "x", 1),
        ("a", "y", 2),
        ("a", "z", 3),
        ("b", "x", 1),
        ("b", "y", 2),
        ("b", "z", 4),
        ("c", "q", 1),
    ]
    ds = prepare(raw_from(rows), PrepareConfig(min_user_interactions=2, min_item_interactions=2))
    steps = {s["step"]: s for s in ds.meta["report"]}
    assert steps["dedup"]["rows_removed"] == 1
    assert steps["k_core"]["rows_removed"] == 1 and steps["k_core"]["details"]["users_removed"] == 1
    assert ds.interactions.height == 6
    assert ds.meta["counts"]["interactions"] == 6


def test_kcore_iterates_until_stable():
    # item "w" has 2 users, but one of them (d) falls below 2 interactions after "v" goes -> w falls too.
    rows = [
        ("a", "x", 1),
        ("a", "y", 2),
        ("b", "x", 1),
        ("b", "y", 2),
        ("c", "w", 1),
        ("c", "x", 2),
        ("d", "w", 1),
        ("d", "v", 2),
    ]
    ds = prepare(raw_from(rows), PrepareConfig(min_user_interactions=2, min_item_interactions=2))
    assert sorted(ds.items["raw_id"].to_list()) == ["x", "y"]
    assert ds.meta["report"][0]["details"]["rounds"] >= 2


def test_given_split_is_kept():
    frame = pl.DataFrame(
        {
            "user": ["a"] * 4,
            "item": ["p", "q", "r", "s"],
            "timestamp": [0, 1, 2, 3],
            "split": ["train", "train", "test", "valid"],
        }
    )
    ds = prepare(RawTables("given", frame))
    assert ds.meta["split"] == "given"
    assert ds.interactions["split"].to_list() == [TRAIN, TRAIN, TEST, VALID]


def test_temporal_and_random_user_splits():
    ts = np.arange(100)
    split = splits.temporal(ts, 0.1, 0.2)
    assert (split == TEST).sum() == 20 and (split == VALID).sum() == 10
    assert split[:70].max() == TRAIN
    users = np.repeat(np.arange(50), 10)
    s = splits.random_user(users, 0.2, 0.2, 0.3, seed=1)
    held = s.reshape(50, 10)
    test_users = (held == TEST).any(1)
    assert 3 <= test_users.sum() <= 20
    assert (held[test_users][:, -3:] == TEST).all() and (held[test_users][:, :7] == TRAIN).all()
    assert (s == splits.random_user(users, 0.2, 0.2, 0.3, seed=1)).all()


def test_save_load_roundtrip_and_no_partial_output(tmp_path):
    ds = prepare(make_raw())
    path = ds.save(tmp_path / "ds")
    loaded = Dataset.load(path)
    assert loaded.interactions.equals(ds.interactions)
    assert loaded.items.equals(ds.items)
    assert loaded.meta["counts"] == ds.meta["counts"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_load_missing_dataset_names_command():
    with pytest.raises(DataError, match="recstack data prepare nope"):
        Dataset.load("nope")


def test_validation_errors_name_row_and_column():
    frame = pl.DataFrame({"user": ["a", None], "item": ["x", "y"], "timestamp": [1, 2]})
    with pytest.raises(DataError, match="row 1: missing value in column 'user'"):
        prepare(RawTables("bad", frame, origin="log.csv"))
    frame = pl.DataFrame({"user": ["a"], "item": ["x"], "timestamp": [-5]})
    with pytest.raises(DataError, match="log.csv: interactions row 0: negative timestamp"):
        prepare(RawTables("bad", frame, origin="log.csv"))
    frame = pl.DataFrame({"user": ["a"], "item": ["x"], "time": [1]})
    with pytest.raises(DataError, match="no column 'timestamp'"):
        prepare(RawTables("bad", frame, origin="log.csv"))
    frame = pl.DataFrame({"user": ["a"], "item": ["x"], "timestamp": ["yesterday"]})
    with pytest.raises(DataError, match="column 'timestamp' .* has type"):
        prepare(RawTables("bad", frame, origin="log.csv"))
    with pytest.raises(DataError, match="interactions table is empty"):
        prepare(RawTables("bad", frame.clear(), origin="log.csv"))


def test_unknown_ids_error_or_reported_drop():
    frame = pl.DataFrame({"user": ["a", "a", "b"], "item": ["x", "ghost", "x"], "timestamp": [1, 2, 3]})
    items = pl.DataFrame({"item": ["x"]})
    with pytest.raises(DataError, match="row 1: unknown item id 'ghost'"):
        prepare(RawTables("u", frame, items=items))
    ds = prepare(RawTables("u", frame, items=items), PrepareConfig(drop_unknown_ids=True))
    assert ds.interactions.height == 2
    assert ds.meta["report"][0]["step"] == "unknown_items" and ds.meta["report"][0]["rows_removed"] == 1


def test_scenario_and_event_become_codes():
    frame = pl.DataFrame(
        {
            "user": ["a", "a", "b"],
            "item": ["x", "y", "x"],
            "timestamp": [1, 2, 3],
            "scenario": ["search", "feed", "feed"],
            "event": ["click", "click", "buy"],
        }
    )
    ds = prepare(RawTables("s", frame))
    assert ds.meta["scenario_names"] == ["feed", "search"]
    assert ds.interactions["scenario"].dtype == pl.Int16
    assert ds.interactions.filter(pl.col("user") == 1)["scenario"].to_list() == [1, 0]
