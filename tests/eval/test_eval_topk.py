"""Top-K metrics: hand-computed cases, sklearn ndcg agreement, leave-one-out identities, a naive reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score

from recstack.data.jagged import Jagged
from recstack.errors import ConfigError, DataError
from recstack.eval.topk import metrics_from_ranks, rank_of_target, topk_metrics

D2, D3, D4 = 1 / math.log2(3), 1 / math.log2(4), 1 / math.log2(5)  # discounts of ranks 2, 3, 4


def test_hand_computed_multi_target() -> None:
    # user 0: list [3, 1, 7, 0], targets {1, 7, 9} -> hits at ranks 2 and 3, T = 3
    # user 1: list [2, 2, 5, 6], targets {2, 2} -> the set {2}; the repeated 2 at rank 2 counts once
    # user 2: targets empty -> excluded from every mean
    pred = torch.tensor([[3, 1, 7, 0], [2, 2, 5, 6], [1, 2, 3, 4]])
    targets = Jagged.from_lists([[1, 7, 9], [2, 2], []])
    m = topk_metrics(pred, targets, ks=(1, 2, 4, 5))
    # @1: user 0 misses, user 1 hits at rank 1
    assert m["recall@1"] == pytest.approx((0 + 1) / 2)
    assert m["ndcg@1"] == pytest.approx((0 + 1) / 2)
    assert m["mrr@1"] == pytest.approx((0 + 1) / 2)
    # @2: user 0 recall 1/3, precision 1/2, DCG = D2, IDCG = 1 + D2, mrr 1/2; user 1 recall 1, precision 1/2
    assert m["recall@2"] == pytest.approx((1 / 3 + 1) / 2)
    assert m["hr@2"] == pytest.approx(1.0)
    assert m["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert m["ndcg@2"] == pytest.approx((D2 / (1 + D2) + 1) / 2)
    assert m["mrr@2"] == pytest.approx((1 / 2 + 1) / 2)
    # @4: user 0 hits 2 of 3: DCG = D2 + D3, IDCG over min(3, 4) = 3 ranks = 1 + D2 + D3; precision 2/4
    assert m["recall@4"] == pytest.approx((2 / 3 + 1) / 2)
    assert m["precision@4"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert m["ndcg@4"] == pytest.approx(((D2 + D3) / (1 + D2 + D3) + 1) / 2)
    # @5 is longer than the lists: missing slots are empty, precision still divides by 5
    assert m["precision@5"] == pytest.approx((2 / 5 + 1 / 5) / 2)
    assert m["recall@5"] == pytest.approx(m["recall@4"])
    per_user = topk_metrics(pred, targets, ks=(2,), metrics=("recall",), reduce=False)
    assert per_user["recall@2"][:2].tolist() == pytest.approx([1 / 3, 1.0])
    assert math.isnan(per_user["recall@2"][2])


def test_no_valid_users_gives_nan_and_bad_input_raises() -> None:
    assert math.isnan(topk_metrics(torch.tensor([[1, 2]]), Jagged.from_lists([[]]), ks=(1,))["hr@1"])
    with pytest.raises(DataError, match="rows"):
        topk_metrics(torch.tensor([[1, 2]]), Jagged.from_lists([[1], [2]]))
    with pytest.raises(ConfigError, match="valid"):
        topk_metrics(torch.tensor([[1, 2]]), Jagged.from_lists([[1]]), metrics=("auc",))


def test_thousands_of_targets_per_user() -> None:
    gen = torch.Generator().manual_seed(0)
    rows = [torch.randperm(20000, generator=gen)[:5000].add(1).tolist() for _ in range(4)]
    pred = torch.randint(1, 20001, (4, 50), generator=gen)
    pred = torch.stack([torch.unique(r)[:20] for r in pred])  # distinct items per row
    m = topk_metrics(pred, Jagged.from_lists(rows), ks=(20,), metrics=("recall", "precision"), reduce=False)
    for b, row in enumerate(rows):
        hits = len(set(pred[b].tolist()) & set(row))
        assert m["precision@20"][b] == pytest.approx(hits / 20)
        assert m["recall@20"][b] == pytest.approx(hits / 5000)


def test_ndcg_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    relevance = (rng.random((30, 40)) < 0.15).astype(float)
    relevance[np.arange(30), rng.integers(0, 40, 30)] = 1.0  # every user has a target
    scores = rng.random((30, 40))  # continuous: no ties, so the top-K order is unique
    pred = torch.from_numpy(np.argsort(-scores, axis=1)) + 1  # item id = column + 1
    targets = Jagged.from_lists([(np.nonzero(r)[0] + 1).tolist() for r in relevance])
    for k in (1, 5, 10, 40):
        ours = topk_metrics(pred, targets, ks=(k,), metrics=("ndcg",))[f"ndcg@{k}"]
        assert ours == pytest.approx(ndcg_score(relevance, scores, k=k))


def test_leave_one_out_recall_equals_hr_and_ranks_agree() -> None:
    gen = torch.Generator().manual_seed(2)
    scores = torch.rand(64, 101, generator=gen)
    scores[:, 0] = float("-inf")  # padding column
    target = torch.randint(1, 101, (64,), generator=gen)
    ks = (1, 5, 10, 20)
    pred = torch.topk(scores, max(ks), dim=1).indices
    full = topk_metrics(pred, Jagged.from_lengths(target, torch.ones(64, dtype=torch.long)), ks=ks)
    fast = metrics_from_ranks(rank_of_target(scores, target), ks=ks)
    for k in ks:
        assert full[f"recall@{k}"] == pytest.approx(full[f"hr@{k}"])
    assert full.keys() == fast.keys()
    for name in full:
        assert fast[name] == pytest.approx(full[name]), name


def test_rank_of_target_ties() -> None:
    # scores [1, 3, 3, 2], target column 2 (score 3): nothing better, one tie
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0], [1.0, 3.0, 3.0, 2.0]])
    target = torch.tensor([2, 3])  # second row: column 3 (score 2) has two better, no tie
    assert rank_of_target(scores, target, "pessimistic").tolist() == [2.0, 3.0]
    assert rank_of_target(scores, target, "optimistic").tolist() == [1.0, 3.0]
    assert rank_of_target(scores, target, "average").tolist() == [1.5, 3.0]
    # ndcg of rank 2 is 1/log2(3); mrr 1/2; precision@2 = 1/2
    m = metrics_from_ranks(torch.tensor([2.0]), ks=(1, 2))
    assert (m["hr@1"], m["hr@2"], m["ndcg@2"], m["mrr@2"], m["precision@2"]) == pytest.approx((0, 1, D2, 0.5, 0.5))
    with pytest.raises(DataError, match="NaN"):
        rank_of_target(torch.tensor([[float("nan"), 1.0]]), torch.tensor([1]))


def _naive(pred: list[list[int]], targets: list[list[int]], k: int) -> dict[str, float]:
    """Plain-Python reference, one user at a time."""
    sums, users = {"recall": 0.0, "hr": 0.0, "precision": 0.0, "ndcg": 0.0, "mrr": 0.0}, 0
    for row, target in zip(pred, targets):
        target = set(target) - {0}
        if not target:
            continue
        users += 1
        seen, hits, dcg, first = set(), 0, 0.0, None
        for rank, item in enumerate(row[:k], start=1):
            if item and item in target and item not in seen:
                hits, dcg = hits + 1, dcg + 1 / math.log2(rank + 1)
                first = first or rank
            seen.add(item)
        idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(target), k) + 1))
        sums["recall"] += hits / len(target)
        sums["hr"] += hits > 0
        sums["precision"] += hits / k
        sums["ndcg"] += dcg / idcg
        sums["mrr"] += 1 / first if first else 0.0
    return {name: v / users if users else float("nan") for name, v in sums.items()}


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_matches_naive_reference(data) -> None:
    batch = data.draw(st.integers(1, 6))
    width = data.draw(st.integers(1, 6))
    pred = data.draw(
        st.lists(st.lists(st.integers(0, 8), min_size=width, max_size=width), min_size=batch, max_size=batch)
    )
    targets = data.draw(st.lists(st.lists(st.integers(1, 8), max_size=5), min_size=batch, max_size=batch))
    k = data.draw(st.integers(1, 8))
    ours = topk_metrics(torch.tensor(pred), Jagged.from_lists(targets), ks=(k,))
    expected = _naive(pred, targets, k)
    for name, value in expected.items():
        if math.isnan(value):
            assert math.isnan(ours[f"{name}@{k}"])
        else:
            assert ours[f"{name}@{k}"] == pytest.approx(value), name
