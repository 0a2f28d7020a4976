"""Swing: hand example, equality with a brute-force reference, sampling, retrieval, save/load."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest
import torch

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError
from recstack.registry import build
from recstack.retrieval.base import Retriever
from recstack.retrieval.i2i import interaction_matrix
from recstack.retrieval.swing import Swing, SwingConfig, sample_users_per_item

# 4 users: u1 {1,2,3}, u2 {1,2}, u3 {2,3,4}, u4 {1,4}
HAND = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 2), (3, 3), (3, 4), (4, 1), (4, 4)]


def make_dataset(pairs: list[tuple[int, int]], num_users: int, num_items: int) -> Dataset:
    users, items = zip(*pairs)
    frame = pl.DataFrame(
        {
            "user": pl.Series(users, dtype=pl.Int32),
            "item": pl.Series(items, dtype=pl.Int32),
            "timestamp": pl.Series(range(len(users)), dtype=pl.Int64),
            "split": pl.Series([0] * len(users), dtype=pl.Int8),
        }
    ).sort(["user", "timestamp"], maintain_order=True)
    return Dataset(
        "tiny",
        interactions=frame,
        items=pl.DataFrame({"item": range(1, num_items + 1), "raw_id": [str(i) for i in range(num_items)]}),
        users=pl.DataFrame({"user": range(1, num_users + 1), "raw_id": [str(u) for u in range(num_users)]}),
        meta={},
    )


def random_pairs(num_users: int, num_items: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, num_items + 1) ** 0.8
    pairs = []
    for user in range(1, num_users + 1):
        items = rng.choice(np.arange(1, num_items + 1), size=int(rng.integers(1, 9)), p=popularity / popularity.sum())
        pairs += [(user, int(i)) for i in items]  # repeats on purpose: they must count once
    return pairs


def brute_force_swing(
    user_items: dict[int, set[int]], num_items: int, alpha: float, weights: dict[int, float]
) -> np.ndarray:
    """The Swing definition, literally: every item pair, every unordered pair of their common users."""
    sim = np.zeros((num_items + 1, num_items + 1))
    for i, j in itertools.permutations(range(1, num_items + 1), 2):
        users = sorted(u for u, items in user_items.items() if i in items and j in items)
        for u, v in itertools.combinations(users, 2):
            sim[i, j] += weights[u] * weights[v] / (alpha + len(user_items[u] & user_items[v]))
    return sim


def user_sets(matrix) -> dict[int, set[int]]:
    matrix = matrix.tocsr()
    return {u: set(matrix.indices[matrix.indptr[u] : matrix.indptr[u + 1]].tolist()) for u in range(matrix.shape[0])}


def test_hand_example() -> None:
    plain = Swing(SwingConfig(user_weighting=False, max_users_per_item=None)).fit(make_dataset(HAND, 4, 4))
    sim = plain.neighbours.toarray()
    expected = np.zeros((5, 5))
    # only pairs (u1,u2) sharing {1,2} and (u1,u3) sharing {2,3} overlap on two items: 1 / (1 + 2)
    expected[1, 2] = expected[2, 1] = expected[2, 3] = expected[3, 2] = 1 / 3
    np.testing.assert_allclose(sim, expected, rtol=1e-6)
    weighted = Swing(SwingConfig(alpha_user=5.0, beta=0.35)).fit(make_dataset(HAND, 4, 4)).neighbours
    w = {n: (n + 5.0) ** -0.35 for n in (2, 3)}
    assert weighted[1, 2] == pytest.approx(w[3] * w[2] / 3, rel=1e-6)
    assert weighted[2, 3] == pytest.approx(w[3] * w[3] / 3, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_equals_brute_force_on_random_data(seed: int) -> None:
    data = make_dataset(random_pairs(25, 15, seed), 25, 15)
    config = SwingConfig(neighbours=15, alpha=0.5, alpha_user=1.0, beta=0.5, max_users_per_item=None)
    model = Swing(config).fit(data)
    sets = user_sets(interaction_matrix(data))
    weights = {u: (len(items) + 1.0) ** -0.5 for u, items in sets.items()}
    np.testing.assert_allclose(
        model.neighbours.toarray(), brute_force_swing(sets, 15, 0.5, weights), rtol=1e-5, atol=1e-7
    )


def test_sampling_caps_users_per_item_and_matches_reference() -> None:
    data = make_dataset(random_pairs(40, 10, seed=2), 40, 10)
    full = interaction_matrix(data)
    sampled = sample_users_per_item(full, max_users=6, seed=7)
    assert np.diff(sampled.tocsc().indptr).max() <= 6
    assert (sampled.multiply(full) != sampled).nnz == 0  # a subset of the data
    model = Swing(SwingConfig(neighbours=10, user_weighting=False, max_users_per_item=6, seed=7)).fit(data)
    reference = brute_force_swing(user_sets(sampled), 10, 1.0, {u: 1.0 for u in range(41)})
    np.testing.assert_allclose(model.neighbours.toarray(), reference, rtol=1e-5, atol=1e-7)


def test_retrieve_invariants_cold_start_and_save_load(tmp_path) -> None:
    pairs = random_pairs(30, 20, seed=4)
    data = make_dataset(pairs + [(31, 1)], 32, 20)  # user 32 has no history
    model = build("retriever", {"name": "swing", "neighbours": 5, "num_triggers": 4}).fit(data)
    users = torch.arange(1, 33)
    batch = data.user_batch(users, before="valid")
    cands = model.retrieve(batch, k=8)
    for row, (items, history) in enumerate(zip(cands.items.tolist(), batch.history.tolist())):
        assert 0 not in items and len(set(items)) == 8 and not set(items) & set(history)
        assert torch.all(cands.scores[row, :-1] >= cands.scores[row, 1:])
    popular = torch.argsort(-data.item_popularity()[1:], stable=True)[:8] + 1
    assert cands.items[-1].tolist() == popular.tolist()
    model.save(tmp_path / "swing")
    loaded = Retriever.load(tmp_path / "swing")
    again = loaded.retrieve(batch, k=8)
    assert torch.equal(again.items, cands.items) and torch.equal(again.scores, cands.scores)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="max_users_per_item"):
        build("retriever", {"name": "swing", "max_users_per_item": 1})
    with pytest.raises(ConfigError, match="trigger_decay"):
        build("retriever", {"name": "swing", "trigger_decay": 0.0})
