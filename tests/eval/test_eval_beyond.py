"""Coverage, popularity bias (ARP, Gini) and novelty on hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from recstack.errors import DataError
from recstack.eval.beyond import coverage, gini_index, novelty, popularity_bias

PRED = torch.tensor([[1, 2, 0], [2, 3, 0]])  # 0 = empty slot


def test_coverage() -> None:
    # distinct recommended items {1, 2, 3} out of 5
    assert coverage(PRED, num_items=5) == pytest.approx(0.6)
    with pytest.raises(DataError, match="0..2"):
        coverage(PRED, num_items=2)


def test_gini_index() -> None:
    # sorted [0, 0, 3], n = 3: sum (2i - 4) c_i = 2 * 3 = 6; / (3 * 3) = 2/3 (maximal = (n-1)/n)
    assert gini_index(torch.tensor([3, 0, 0])) == pytest.approx(2 / 3)
    assert gini_index(torch.tensor([4, 4, 4, 4])) == pytest.approx(0.0)
    assert math.isnan(gini_index(torch.zeros(3)))


def test_popularity_bias() -> None:
    popularity = torch.tensor([0.0, 10, 5, 1, 0, 0])  # items 1..5
    out = popularity_bias(PRED, popularity)
    # ARP: user 1 (10 + 5) / 2 = 7.5, user 2 (5 + 1) / 2 = 3 -> 5.25
    assert out["arp"] == pytest.approx(5.25)
    # recommendation counts of items 1..5 = [1, 2, 1, 0, 0]; sorted [0,0,1,1,2], weights [-4,-2,0,2,4]
    # -> (2 + 8) / (5 * 4) = 0.5
    assert out["gini"] == pytest.approx(0.5)


def test_novelty() -> None:
    # popularity [_, 3, 1]: p = (pop + 1) / (4 + 2) -> p1 = 2/3, p2 = 1/3
    # mean(-log2(2/3), -log2(1/3)) = (0.584963 + 1.584963) / 2
    assert novelty(torch.tensor([[1, 2]]), torch.tensor([0.0, 3, 1])) == pytest.approx(1.084963, abs=1e-6)
