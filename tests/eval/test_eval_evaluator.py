"""evaluate_retriever on a tiny hand-made Dataset, and the sampled-negative protocol."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from recstack.data.batch import UserBatch
from recstack.data.dataset import Dataset
from recstack.errors import ConfigError
from recstack.eval.evaluator import evaluate_retriever, sampled_metrics
from recstack.retrieval.base import Retriever


def tiny_dataset() -> Dataset:
    """3 users, 6 items; split 0 train, 1 valid, 2 test.

    user 1: train 5, 2 | valid 3 | test 4
    user 2: train 6, 1 | valid 2 | test 5
    user 3: train 3    | valid 6 | (no test row: not evaluated on test)
    """
    rows = [
        (1, 5, 1, 0),
        (1, 2, 2, 0),
        (1, 3, 3, 1),
        (1, 4, 4, 2),
        (2, 6, 1, 0),
        (2, 1, 2, 0),
        (2, 2, 3, 1),
        (2, 5, 4, 2),
        (3, 3, 1, 0),
        (3, 6, 2, 1),
    ]
    interactions = pl.DataFrame(
        rows, schema={"user": pl.Int32, "item": pl.Int32, "timestamp": pl.Int64, "split": pl.Int8}, orient="row"
    )
    items = pl.DataFrame({"item": pl.Series(range(1, 7), dtype=pl.Int32), "raw_id": [f"i{i}" for i in range(1, 7)]})
    users = pl.DataFrame({"user": pl.Series(range(1, 4), dtype=pl.Int32), "raw_id": ["ua", "ub", "uc"]})
    return Dataset(name="tiny", interactions=interactions, items=items, users=users)


class FixedRetriever(Retriever):
    """Scores item i as i for everyone (item 6 best); records the batches it is asked about."""

    name = "fixed"

    def __init__(self, num_items: int) -> None:
        self.num_items = num_items
        self.batches: list[UserBatch] = []

    def score_all(self, batch: UserBatch) -> torch.Tensor:
        self.batches.append(batch)
        return torch.arange(self.num_items + 1, dtype=torch.float32).expand(len(batch), -1).clone()


def test_history_masked_on_test() -> None:
    # Test history = train + valid. user 1 masks {5, 2, 3}: list 6, 4, 1 -> target 4 at rank 2.
    # user 2 masks {6, 1, 2}: list 5, 4, 3 -> target 5 at rank 1.
    retriever = FixedRetriever(6)
    m = evaluate_retriever(retriever, tiny_dataset(), "test", ks=(1, 2, 3))
    assert m["num_users"] == 2
    assert m["hr@1"] == pytest.approx(0.5)
    assert m["recall@2"] == pytest.approx(1.0)
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1) / 2)
    assert m["mrr@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["precision@3"] == pytest.approx(1 / 3)
    assert m["coverage@3"] == pytest.approx(5 / 6)  # {6, 4, 1} | {5, 4, 3}
    # ARP@3 from train popularity (items 1..6 = [1, 1, 1, 0, 1, 1]): user 1 (1+0+1)/3, user 2 (1+0+1)/3
    assert m["arp@3"] == pytest.approx(2 / 3)
    histories = [row for b in retriever.batches for row in b.history.tolist()]
    assert histories == [[5, 2, 3], [6, 1, 2]]


def test_without_masking_ranks_drop() -> None:
    # Unmasked list for everyone is 6, 5, 4: user 1's target 4 at rank 3, user 2's target 5 at rank 2.
    m = evaluate_retriever(FixedRetriever(6), tiny_dataset(), "test", ks=(1, 2, 3), exclude_history=False)
    assert (m["hr@1"], m["hr@2"], m["hr@3"]) == pytest.approx((0.0, 0.5, 1.0))
    assert m["mrr@3"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert m["coverage@3"] == pytest.approx(3 / 6)


def test_valid_split_uses_train_history_and_batches_agree() -> None:
    # Valid history = train only. user 1 masks {5, 2}: 6, 4, 3 -> target 3 at rank 3.
    # user 2 masks {6, 1}: 5, 4, 3, 2 -> target 2 at rank 4. user 3 masks {3}: 6 first -> rank 1.
    dataset = tiny_dataset()
    m = evaluate_retriever(FixedRetriever(6), dataset, "valid", ks=(1, 3, 4))
    assert m["num_users"] == 3
    assert (m["hr@1"], m["hr@3"], m["hr@4"]) == pytest.approx((1 / 3, 2 / 3, 1.0))
    one_by_one = evaluate_retriever(FixedRetriever(6), dataset, "valid", ks=(1, 3, 4), batch_size=1)
    assert one_by_one == pytest.approx(m)
    with pytest.raises(ConfigError, match="split"):
        evaluate_retriever(FixedRetriever(6), dataset, "train")


def test_sampled_metrics() -> None:
    # user 1: target 0.5 vs negatives [0.6, 0.1, 0.5]: one better, one tie -> pessimistic 3, average 2.5
    # user 2: target 0.9 beats every negative -> rank 1
    pos = torch.tensor([0.5, 0.9])
    neg = torch.tensor([[0.6, 0.1, 0.5], [0.1, 0.2, 0.3]])
    m = sampled_metrics(pos, neg, ks=(1, 2, 3))
    assert (m["hr@1"], m["hr@2"], m["hr@3"]) == pytest.approx((0.5, 0.5, 1.0))
    assert m["mrr@3"] == pytest.approx((1 / 3 + 1) / 2)
    avg = sampled_metrics(pos, neg, ks=(3,), metrics=("mrr",), ties="average")
    assert avg["mrr@3"] == pytest.approx((1 / 2.5 + 1) / 2)
