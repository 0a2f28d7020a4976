"""ItemCF: hand-computed similarities, retrieval invariants, cold start, save/load."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.registry import build
from recstack.retrieval.base import Retriever
from recstack.retrieval.itemcf import ItemCF, ItemCFConfig

# 4 users: u1 {1,2,3}, u2 {1,2}, u3 {2,3,4}, u4 {1,4}; a valid row that must be ignored when fitting.
HAND = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 2), (3, 3), (3, 4), (4, 1), (4, 4)]


def make_dataset(
    pairs: list[tuple[int, int]], num_users: int, num_items: int, splits: list[int] | None = None
) -> Dataset:
    users, items = zip(*pairs) if pairs else ((), ())
    frame = pl.DataFrame(
        {
            "user": pl.Series(users, dtype=pl.Int32),
            "item": pl.Series(items, dtype=pl.Int32),
            "timestamp": pl.Series(range(len(users)), dtype=pl.Int64),
            "split": pl.Series(splits or [0] * len(users), dtype=pl.Int8),
        }
    ).sort(["user", "timestamp"], maintain_order=True)
    return Dataset(
        "tiny",
        interactions=frame,
        items=pl.DataFrame({"item": range(1, num_items + 1), "raw_id": [f"i{i}" for i in range(1, num_items + 1)]}),
        users=pl.DataFrame({"user": range(1, num_users + 1), "raw_id": [f"u{u}" for u in range(1, num_users + 1)]}),
        meta={},
    )


def random_dataset(num_users: int = 40, num_items: int = 30, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    pairs = []
    for user in range(1, num_users + 1):  # test data only: a loop is fine here
        length = 0 if user == num_users else int(rng.integers(1, 12))  # the last user is cold
        popularity = 1.0 / np.arange(1, num_items + 1)
        items = rng.choice(np.arange(1, num_items + 1), size=length, p=popularity / popularity.sum())
        pairs += [(user, int(i)) for i in items]
    return make_dataset(pairs, num_users, num_items)


def test_hand_computed_similarities() -> None:
    data = make_dataset(HAND + [(2, 4)], 4, 4, splits=[0] * len(HAND) + [1])
    model = ItemCF(ItemCFConfig(neighbours=10)).fit(data)
    sim = model.neighbours.toarray()
    a, b = 1 / math.log(4), 1 / math.log(3)  # IUF of users with 3 and 2 items
    expected = {
        (1, 2): (a + b) / 3,
        (1, 3): a / math.sqrt(6),
        (1, 4): b / math.sqrt(6),
        (2, 3): 2 * a / math.sqrt(6),
        (2, 4): a / math.sqrt(6),
        (3, 4): a / 2,
    }
    for (i, j), value in expected.items():
        assert sim[i, j] == pytest.approx(value, rel=1e-6)
        assert sim[j, i] == pytest.approx(value, rel=1e-6)
    assert np.all(np.diag(sim) == 0) and sim[0].sum() == 0 and sim[:, 0].sum() == 0


def test_alpha_one_normalises_by_trigger_only() -> None:
    model = ItemCF(ItemCFConfig(alpha=1.0, iuf=False)).fit(make_dataset(HAND, 4, 4))
    sim = model.neighbours.toarray()
    assert sim[3, 4] == pytest.approx(1 / 2) and sim[1, 2] == pytest.approx(2 / 3)


def test_neighbours_are_pruned_to_top_n() -> None:
    model = ItemCF(ItemCFConfig(neighbours=2)).fit(random_dataset())
    assert np.diff(model.neighbours.indptr).max() <= 2


def test_retrieve_invariants_and_cold_start() -> None:
    data = random_dataset()
    model = build("retriever", {"name": "itemcf", "neighbours": 5, "num_triggers": 3, "trigger_decay": 0.8}).fit(data)
    users = torch.arange(1, data.num_users + 1)
    batch = data.user_batch(users, before="valid")
    cands = model.retrieve(batch, k=12)
    assert cands.items.shape == (len(users), 12) and cands.channel_names == ["itemcf"]
    history = batch.history.tolist()
    for row, items in enumerate(cands.items.tolist()):
        available = data.num_items - len(set(history[row]))
        real = [i for i in items if i > 0]
        assert len(real) == min(12, available)  # no padding while items remain
        assert len(set(real)) == len(real)  # no duplicates
        assert not set(real) & set(history[row])  # no history items
        assert items[len(real) :] == [0] * (12 - len(real))
        scores = cands.scores[row, : len(real)]
        assert torch.all(scores[:-1] >= scores[1:])  # best first
    assert torch.equal(cands.channels, (cands.items > 0).long())
    popular = torch.argsort(-data.item_popularity()[1:], stable=True)[:12] + 1
    assert cands.items[-1].tolist() == popular.tolist()  # cold user: popular items


def test_exclude_history_off_and_large_k() -> None:
    data = random_dataset()
    model = ItemCF().fit(data)
    batch = data.user_batch(torch.tensor([1, 2]), before="valid")
    cands = model.retrieve(batch, k=1000, exclude_history=False)
    assert cands.items.shape == (2, data.num_items)
    assert sorted(cands.items[0].tolist()) == list(range(1, data.num_items + 1))


def test_save_load_gives_identical_candidates(tmp_path) -> None:
    data = random_dataset(seed=3)
    model = ItemCF(ItemCFConfig(neighbours=4)).fit(data)
    batch = data.user_batch(torch.arange(1, data.num_users + 1), before="valid")
    model.save(tmp_path / "itemcf")
    loaded = Retriever.load(tmp_path / "itemcf")
    assert isinstance(loaded, ItemCF) and loaded.config == model.config
    a, b = model.retrieve(batch, 7), loaded.retrieve(batch, 7)
    assert torch.equal(a.items, b.items) and torch.equal(a.scores, b.scores)


def test_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="alpha"):
        build("retriever", {"name": "itemcf", "alpha": 2.0})
    with pytest.raises(ConfigError, match="unknown key"):
        build("retriever", {"name": "itemcf", "neighbors": 3})
    data = make_dataset(HAND, 4, 4)
    with pytest.raises(DataError, match="not fitted"):
        ItemCF().retrieve(data.user_batch(torch.tensor([1])), 3)
    model = ItemCF().fit(data)
    bad = make_dataset([(1, 9)], 1, 9).user_batch(torch.tensor([1]))
    with pytest.raises(DataError, match="history"):
        model.retrieve(bad, 3)
