"""Two-tower retrieval: learning on planted clusters, logQ correction, FAISS serving, persistence."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch

from recstack.data.dataset import Dataset
from recstack.eval.evaluator import evaluate_retriever
from recstack.registry import build
from recstack.retrieval.base import Retriever
from recstack.retrieval.popular import Popular
from recstack.retrieval.two_tower import TwoTower, TwoTowerConfig, in_batch_logits, sampled_logits
from recstack.train import TrainConfig
from tests.helpers import check_at_least, check_at_most, seeded


def planted(
    num_users: int = 150, num_items: int = 150, clusters: int = 6, per_user: int = 12, seed: int = 0
) -> Dataset:
    """Users belong to a cluster and consume distinct items of their cluster; last item test, one before valid."""
    rng = np.random.default_rng(seeded(seed))
    item_cluster = np.arange(num_items) % clusters
    user_cluster = rng.integers(0, clusters, num_users)
    # Each user's items: a random ordering of their cluster's items, first `per_user` taken.
    pools = np.stack([np.flatnonzero(item_cluster == c) for c in range(clusters)])  # [C, items per cluster]
    order = np.argsort(rng.random((num_users, pools.shape[1])), axis=1)[:, :per_user]
    items = np.take_along_axis(pools[user_cluster], order, axis=1) + 1
    splits = np.tile(np.r_[np.zeros(per_user - 2), 1, 2], num_users)
    inter = pl.DataFrame(
        {
            "user": np.repeat(np.arange(1, num_users + 1), per_user).astype(np.int32),
            "item": items.ravel().astype(np.int32),
            "timestamp": np.tile(np.arange(per_user), num_users).astype(np.int64),
            "split": splits.astype(np.int8),
        }
    )
    items_t = pl.DataFrame(
        {
            "item": np.arange(1, num_items + 1, dtype=np.int32),
            "raw_id": [f"i{i}" for i in range(num_items)],
            "title": [f"movie number {i}" for i in range(num_items)],
            "category": [f"c{c}|all" for c in item_cluster],
        }
    )
    users_t = pl.DataFrame(
        {
            "user": np.arange(1, num_users + 1, dtype=np.int32),
            "raw_id": [f"u{u}" for u in range(num_users)],
            "group": [f"g{c % 2}" for c in user_cluster],
        }
    )
    return Dataset("planted", inter, items_t, users_t, meta={"labels": [], "text_fields": ["title"]})


def config(**overrides) -> TwoTowerConfig:
    train = TrainConfig(epochs=8, batch_size=128, lr=5e-3, progress=False, patience=0, seed=seeded(42))
    return replace(TwoTowerConfig(dim=32, hidden=[64], num_negatives=32, train=train), **overrides)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return planted()


@pytest.fixture(scope="module")
def fitted(dataset) -> TwoTower:
    # Collaborative signal only: the category column would give the clusters away.
    return TwoTower(config(item_feature_columns=[], user_feature_columns=[], serving="faiss")).fit(dataset)


@pytest.mark.learns
def test_learns_planted_clusters_and_beats_popularity(dataset, fitted):
    losses = [h["train"]["loss"] for h in fitted.train_result.history]
    check_at_most(losses[-1] / losses[0], 0.8, "last / first epoch loss")
    popular = evaluate_retriever(Popular().fit(dataset), dataset, "test", ks=(10,))["recall@10"]
    learned = evaluate_retriever(fitted, dataset, "test", ks=(10,))["recall@10"]
    check_at_least(learned, 0.4, "test recall@10")
    check_at_least(learned - 3 * popular, 0.0, "test recall@10 - 3 x popularity's")


@pytest.mark.parametrize(
    "overrides", [dict(loss="sampled", sampler="uniform"), dict(loss="mixed", pooling="mean", user_id=True)]
)
@pytest.mark.learns
def test_other_losses_and_towers_train(dataset, overrides):
    model = TwoTower(config(**overrides, train=replace(config().train, epochs=3))).fit(dataset)
    losses = [h["train"]["loss"] for h in model.train_result.history]
    check_at_most(losses[-1] / losses[0], 1.0, "last / first epoch loss")
    check_at_least(evaluate_retriever(model, dataset, "valid", ks=(10,))["recall@10"], 0.1, "valid recall@10")


def test_in_batch_logq_hand_example():
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    ids = torch.tensor([7, 8, 9])
    log_q = torch.log(torch.tensor([0.5, 0.25, 0.125]))
    plain = in_batch_logits(users, items, ids, None, temperature=0.5)
    assert torch.allclose(plain, users @ items.T / 0.5)
    corrected = in_batch_logits(users, items, ids, log_q, temperature=0.5)
    # Column j loses log Q(item j): the rarer the item, the more its logit is raised.
    assert torch.allclose(corrected - plain, -log_q.expand(3, 3))
    assert math.isclose(float(corrected[0, 2] - corrected[0, 0]), math.log(0.5) - math.log(0.125), rel_tol=1e-6)
    # The same item appearing twice: it is not a negative of the other row.
    dup = in_batch_logits(users, items, torch.tensor([7, 8, 7]), log_q, temperature=0.5)
    assert dup[0, 2] == float("-inf") and dup[2, 0] == float("-inf") and torch.isfinite(dup.diagonal()).all()


def test_sampled_logq_hand_example():
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    negatives = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    negative_ids = torch.tensor([3, 4, 5])
    log_q = torch.log(torch.tensor([0.2, 0.5, 0.3]))
    logits = sampled_logits(users, negatives, negative_ids, torch.tensor([4, 6]), log_q, temperature=1.0)
    expected = users @ negatives.T - log_q
    expected[0, 1] = float("-inf")  # item 4 is row 0's positive: an accidental hit
    assert torch.equal(torch.isinf(logits), torch.isinf(expected))
    assert torch.allclose(logits[torch.isfinite(logits)], expected[torch.isfinite(expected)])


def test_faiss_flat_equals_exact_and_results_are_clean(dataset, fitted):
    users, _ = dataset.eval_users("test")
    batch = dataset.user_batch(users, before="test")
    assert fitted.ann is not None and fitted.ann.size == dataset.num_items
    served = fitted.retrieve(batch, 20)
    exact_model = replace_serving(fitted, "exact")
    exact = exact_model.retrieve(batch, 20)
    # Items of a planted cluster end up almost interchangeable: near-ties may swap between FAISS and
    # torch arithmetic, so compare the served items' exact scores with the exact top-k scores.
    assert (served.items == exact.items).float().mean() > 0.9
    assert torch.allclose(served.scores, exact.scores, atol=1e-4)
    assert torch.allclose(exact_model.score_all(batch).gather(1, served.items), exact.scores, atol=1e-4)
    items = served.items
    assert (items > 0).all()  # 150 items, histories of 11: always 20 candidates, never padding
    assert (items.sort(1).values[:, 1:] != items.sort(1).values[:, :-1]).all()  # no duplicates
    history_rows = batch.history.row_ids()
    in_history = (items[history_rows] == batch.history.values.unsqueeze(1)).any(1)
    assert not in_history.any()


def replace_serving(model: TwoTower, serving: str) -> TwoTower:
    other = TwoTower(replace(model.config, serving=serving))
    other.model, other.feature_columns = model.model, model.feature_columns
    return other


def test_save_load_gives_identical_candidates(dataset, fitted, tmp_path):
    batch = dataset.user_batch(torch.arange(1, 40), before="valid")
    fitted.save(tmp_path / "tt")
    assert (tmp_path / "tt" / "ann.faiss").is_file() and (tmp_path / "tt" / "model.safetensors").is_file()
    loaded = Retriever.load(tmp_path / "tt")
    assert isinstance(loaded, TwoTower) and loaded.ann is not None
    a, b = fitted.retrieve(batch, 10), loaded.retrieve(batch, 10)
    assert torch.equal(a.items, b.items) and torch.allclose(a.scores, b.scores)


def test_features_are_detected_and_persisted(dataset, tmp_path):
    model = build(
        "retriever",
        {
            "name": "two_tower",
            "dim": 16,
            "hidden": [],
            "ann": {"kind": "hnsw"},
            "serving": "faiss",
            "train": {"epochs": 1, "progress": False},
        },
    )
    model.fit(dataset)
    # "title" is a text field and "raw_id" an id: only the categorical columns are used.
    assert model.feature_columns == {"item": ["category"], "user": ["group"]}
    assert model.model.item_features is not None and model.model.item_features.bag.num_embeddings == 7
    batch = dataset.user_batch(torch.tensor([0, 1, 2]), before="test")  # user 0 = unknown, empty history
    model.save(tmp_path / "f")
    loaded = Retriever.load(tmp_path / "f")
    assert loaded.feature_columns == model.feature_columns
    a, b = model.retrieve(batch, 5), loaded.retrieve(batch, 5)
    assert torch.equal(a.items, b.items) and a.items.shape == (3, 5) and (a.items > 0).all()


def test_fit_is_deterministic(dataset):
    cfg = config(dim=8, hidden=[], loss="mixed", train=replace(config().train, epochs=1))
    a, b = TwoTower(cfg).fit(dataset), TwoTower(cfg).fit(dataset)
    assert torch.equal(a.item_vectors(), b.item_vectors())


def test_feature_bag_is_sum_over_columns_of_token_means():
    from recstack.nn.categorical import FeatureBag, categorical_tokens

    frame = pl.DataFrame(
        {
            "item": [1, 2, 3],
            "genres": ["Action, Comedy", "Drama", None],
            "year": [1995, None, 1995],
            "tags": [["a", "b"], [], None],
        }
    )
    table = categorical_tokens(frame, "item", 4, ["genres", "year", "tags"])
    assert table.tokens.tolist()[0] == [] and table.tokens.tolist()[3] == [table.vocab.index("year=1995")]
    bag = FeatureBag(len(table.vocab), table.weights.numel(), 4, dim=3).set_tokens(table)
    w, v = bag.bag.weight, table.vocab.index
    want = (
        (w[v("genres=Action")] + w[v("genres=Comedy")]) / 2 + w[v("year=1995")] + (w[v("tags=a")] + w[v("tags=b")]) / 2
    )
    out = bag(torch.tensor([[1, 0], [2, 3]]))
    assert out.shape == (2, 2, 3) and (out[0, 1] == 0).all()
    assert torch.allclose(out[0, 0], want) and torch.allclose(out[1, 0], w[v("genres=Drama")])
