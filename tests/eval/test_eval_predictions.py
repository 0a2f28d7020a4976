"""Prediction files: round trip with internal and raw ids, agreement with evaluate_retriever, errors."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import torch

from recstack.data.dataset import Dataset
from recstack.errors import DataError
from recstack.eval.evaluator import evaluate_retriever
from recstack.eval.predictions import evaluate_prediction_file, write_predictions


def tiny_dataset() -> Dataset:
    """user 1: train 5, 2 | test 4;  user 2: train 6, 1 | test 5, 3;  user 3: train 3 | test 6."""
    rows = [
        (1, 5, 1, 0),
        (1, 2, 2, 0),
        (1, 4, 3, 2),
        (2, 6, 1, 0),
        (2, 1, 2, 0),
        (2, 5, 3, 2),
        (2, 3, 4, 2),
        (3, 3, 1, 0),
        (3, 6, 2, 2),
    ]
    interactions = pl.DataFrame(
        rows, schema={"user": pl.Int32, "item": pl.Int32, "timestamp": pl.Int64, "split": pl.Int8}, orient="row"
    )
    items = pl.DataFrame({"item": pl.Series(range(1, 7), dtype=pl.Int32), "raw_id": [f"i{i}" for i in range(1, 7)]})
    users = pl.DataFrame({"user": pl.Series(range(1, 4), dtype=pl.Int32), "raw_id": ["ua", "ub", "uc"]})
    return Dataset(name="tiny", interactions=interactions, items=items, users=users)


# Lists per user (best first, 0 = empty): user 1 [4, 6, 0] hits at 1; user 2 [6, 3, 5]: hits at 2, 3 of
# targets {5, 3}; user 3 [1, 2, 0] misses.
USERS = torch.tensor([1, 2, 3])
ITEMS = torch.tensor([[4, 6, 0], [6, 3, 5], [1, 2, 0]])
SCORES = torch.tensor([[0.9, 0.5, float("-inf")], [0.8, 0.7, 0.1], [0.3, 0.2, float("-inf")]])


def test_round_trip_internal_and_raw(tmp_path: Path) -> None:
    dataset = tiny_dataset()
    internal = write_predictions(tmp_path / "internal.parquet", USERS, ITEMS, SCORES)
    raw = write_predictions(tmp_path / "raw.parquet", USERS, ITEMS, SCORES, dataset=dataset)
    frame = pl.read_parquet(raw)
    assert frame.columns == ["user", "item", "score", "rank"]
    assert frame.height == 7  # empty slots are not written
    assert frame.row(0) == ("ua", "i4", pytest.approx(0.9), 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["internal.parquet", "raw.parquet"]  # no temp files
    m = evaluate_prediction_file(internal, dataset, "test", ks=(1, 3))
    # hr@1: only user 1 -> 1/3. recall@3: (1 + 2/2 + 0) / 3. mrr@3: (1 + 1/2 + 0) / 3
    assert m["hr@1"] == pytest.approx(1 / 3)
    assert m["recall@3"] == pytest.approx(2 / 3)
    assert m["mrr@3"] == pytest.approx(0.5)
    assert m["num_users_without_predictions"] == 0
    assert evaluate_prediction_file(raw, dataset, "test", ks=(1, 3)) == pytest.approx(m)


def test_agrees_with_evaluate_retriever(tmp_path: Path) -> None:
    from recstack.retrieval.base import Retriever

    class Fixed(Retriever):
        name = "fixed"

        def score_all(self, batch):  # item i scores i
            return torch.arange(7, dtype=torch.float32).expand(len(batch), -1).clone()

    dataset = tiny_dataset()
    users, _ = dataset.eval_users("test")
    candidates = Fixed().retrieve(dataset.user_batch(users, before="test"), 3)
    path = write_predictions(tmp_path / "p.parquet", users, candidates.items, candidates.scores, dataset)
    expected = evaluate_retriever(Fixed(), dataset, "test", ks=(1, 2, 3))
    got = evaluate_prediction_file(path, dataset, "test", ks=(1, 2, 3))
    assert got.pop("num_users_without_predictions") == 0
    assert got == pytest.approx(expected)


def test_missing_users_count_as_misses_and_score_only_files(tmp_path: Path) -> None:
    dataset = tiny_dataset()
    # Only user 2, no rank column: ordered by score -> [5, 3] after sorting 0.9 > 0.4 > 0.1
    path = tmp_path / "p.parquet"
    pl.DataFrame({"user": ["ub", "ub", "ub"], "item": ["i6", "i5", "i3"], "score": [0.1, 0.9, 0.4]}).write_parquet(path)
    m = evaluate_prediction_file(path, dataset, "test", ks=(1, 2))
    assert m["num_users_without_predictions"] == 2
    assert m["hr@1"] == pytest.approx(1 / 3)  # users 1 and 3 count as misses
    assert m["recall@2"] == pytest.approx(1 / 3)  # user 2 gets both targets in the top 2


@pytest.mark.parametrize(
    "frame, message",
    [
        (pl.DataFrame({"user": [1], "item": [2]}), "missing column 'score'"),
        (pl.DataFrame({"user": [1], "item": [9], "rank": [1]}), "column 'item' row 0: internal id 9"),
        (
            pl.DataFrame({"user": ["ua", "zz"], "item": ["i1", "i2"], "rank": [1, 1]}),
            "column 'user' row 1: raw id 'zz'",
        ),
        (pl.DataFrame({"user": [1, 1], "item": [2, 3], "rank": [1, None]}), "column 'rank' row 1: missing"),
        (pl.DataFrame({"user": [1, 1], "item": [2, 2], "rank": [1, 2]}), "same item"),
        (pl.DataFrame({"user": [1], "item": [2], "rank": [0]}), "ranks start at 1"),
    ],
)
def test_errors_name_file_and_column(tmp_path: Path, frame: pl.DataFrame, message: str) -> None:
    path = tmp_path / "bad.parquet"
    frame.write_parquet(path)
    with pytest.raises(DataError, match="bad.parquet") as info:
        evaluate_prediction_file(path, tiny_dataset(), "test")
    assert message in str(info.value)


def test_bad_shapes_write_nothing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="expected users"):
        write_predictions(tmp_path / "p.parquet", USERS[:2], ITEMS, SCORES)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="does not exist"):
        evaluate_prediction_file(tmp_path / "none.parquet", tiny_dataset(), "test")
