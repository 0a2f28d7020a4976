"""AUC, GAUC, logloss: hand-computed cases and agreement with scikit-learn (ties included)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from recstack.errors import DataError
from recstack.eval.pointwise import auc, average_ranks, gauc, logloss, pointwise_metrics


def test_auc_hand_computed_with_tie() -> None:
    # positives score 0.9, 0.4; negatives 0.4, 0.1. Pairs (pos, neg): (0.9,0.4)=1 (0.9,0.1)=1
    # (0.4,0.4)=0.5 (0.4,0.1)=1 -> 3.5 / 4 = 0.875
    assert auc(torch.tensor([1, 0, 1, 0]), torch.tensor([0.9, 0.4, 0.4, 0.1])) == pytest.approx(0.875)
    assert average_ranks(torch.tensor([0.9, 0.4, 0.4, 0.1], dtype=torch.float64)).tolist() == [4, 2.5, 2.5, 1]


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.integers(0, 2, 500)
        scores = np.round(rng.random(500), 1)  # 11 distinct values: many ties
        assert auc(torch.from_numpy(labels), torch.from_numpy(scores)) == pytest.approx(roc_auc_score(labels, scores))


def test_auc_edge_cases() -> None:
    assert math.isnan(auc(torch.tensor([1, 1]), torch.tensor([0.2, 0.3])))
    with pytest.raises(DataError, match="position 1"):
        auc(torch.tensor([1, 2]), torch.tensor([0.2, 0.3]))
    with pytest.raises(DataError, match="length"):
        auc(torch.tensor([1, 0, 1]), torch.tensor([0.2, 0.3]))


def test_gauc_hand_computed() -> None:
    # user 1: labels [1,0,0] scores [0.8,0.3,0.9]: the positive beats 0.3, loses to 0.9 -> AUC 0.5, n = 3
    # user 2: labels [0,1] scores [0.2,0.6] -> AUC 1.0, n = 2
    # user 3: only positives -> skipped.  GAUC = (3 * 0.5 + 2 * 1.0) / 5 = 0.7
    users = torch.tensor([2, 1, 3, 1, 2, 1, 3])  # interleaved on purpose
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 1])
    scores = torch.tensor([0.2, 0.8, 0.5, 0.3, 0.6, 0.9, 0.1])
    assert gauc(users, labels, scores) == pytest.approx(0.7)
    assert math.isnan(gauc(torch.tensor([1, 1]), torch.tensor([1, 1]), torch.tensor([0.1, 0.2])))


def test_gauc_matches_per_user_loop() -> None:
    rng = np.random.default_rng(1)
    users = rng.integers(0, 40, 2000)
    labels = rng.integers(0, 2, 2000)
    scores = np.round(rng.random(2000), 1)  # ties within users
    numerator = denominator = 0.0
    for u in np.unique(users):
        mask = users == u
        if labels[mask].min() != labels[mask].max():
            numerator += mask.sum() * roc_auc_score(labels[mask], scores[mask])
            denominator += mask.sum()
    expected = numerator / denominator
    got = gauc(torch.from_numpy(users), torch.from_numpy(labels), torch.from_numpy(scores))
    assert got == pytest.approx(expected)


def test_logloss_hand_and_sklearn() -> None:
    # -(ln 0.8 + ln 0.6) / 2 = (0.223144 + 0.510826) / 2
    assert logloss(torch.tensor([1, 0]), torch.tensor([0.8, 0.4])) == pytest.approx(0.366985, abs=1e-6)
    rng = np.random.default_rng(2)
    labels, probs = rng.integers(0, 2, 300), rng.random(300)
    assert logloss(torch.from_numpy(labels), torch.from_numpy(probs)) == pytest.approx(log_loss(labels, probs))
    with pytest.raises(DataError, match="probs"):
        logloss(torch.tensor([1]), torch.tensor([1.5]))


def test_pointwise_metrics_per_task() -> None:
    labels = {"click": torch.tensor([1, 0, 1, 0]), "like": torch.tensor([0, 1, 1, 0])}
    probs = {"click": torch.tensor([0.9, 0.4, 0.4, 0.1]), "like": torch.tensor([0.3, 0.2, 0.6, 0.7])}
    users = torch.tensor([1, 1, 2, 2])
    out = pointwise_metrics(labels, probs, users)
    assert set(out) == {f"{t}/{m}" for t in ("click", "like") for m in ("auc", "gauc", "logloss")}
    assert out["click/auc"] == pytest.approx(0.875)
    # like: positives 0.2, 0.6 vs negatives 0.3, 0.7: only (0.6, 0.3) is won -> 1/4; each user loses -> GAUC 0
    assert out["like/auc"] == pytest.approx(0.25)
    assert out["like/gauc"] == pytest.approx(0.0)
    # click: user 1 (0.9 pos vs 0.4 neg) = 1, user 2 (0.4 pos vs 0.1 neg) = 1
    assert out["click/gauc"] == pytest.approx(1.0)
    logits = {t: torch.logit(p) for t, p in probs.items()}
    assert pointwise_metrics(labels, logits, users, logits=True) == pytest.approx(out)
    with pytest.raises(DataError, match="'click'.*logits=True"):
        pointwise_metrics(labels, logits, users)
    with pytest.raises(DataError, match="'like'"):
        pointwise_metrics(labels, {"click": probs["click"]})
    assert "click/gauc" not in pointwise_metrics(labels, probs)
