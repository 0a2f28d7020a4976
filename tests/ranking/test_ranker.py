"""The Ranker protocol and the dcn_din_mmoe baseline on tiny datasets built here."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from recstack.data.batch import Candidates
from recstack.data.dataset import TRAIN
from recstack.data.prepare import PrepareConfig, prepare
from recstack.data.tables import RawTables
from recstack.errors import ConfigError
from recstack.ranking.base import Ranker, evaluate_ranker
from recstack.ranking.features import FeatureConfig, FeatureEncoder, build_schema
from recstack.ranking.samples import SampleBuilder, SampleConfig, gather_history
from recstack.registry import build
from tests.helpers import check_at_least, make_raw, seeded
from tests.ranking.ranker_checks import check_memorises

TINY_TRAIN = {"epochs": 6, "batch_size": 256, "lr": 1e-2, "patience": 0, "progress": False, "seed": seeded()}


def tiny_ranker(**overrides):
    spec = {
        "name": "dcn_din_mmoe",
        "features": {"dim": 8},
        "samples": {"max_history": 8},
        "deep_hidden": [16],
        "expert_hidden": [16],
        "tower_hidden": [8],
        "attention_hidden": [8],
        "num_experts": 2,
        "train": dict(TINY_TRAIN),
        "score_rows": 64,
        **overrides,
    }
    return build("ranker", spec)


def planted_world(num_users: int = 80, num_items: int = 60, per_user: int = 40, seed: int = 0) -> RawTables:
    """Impression log: like = 1 when the user's group equals the item's group (10% label noise)."""
    rng = np.random.default_rng(seeded(seed))
    user_group, item_group = rng.integers(0, 3, num_users), rng.integers(0, 3, num_items)
    users = np.repeat(np.arange(num_users), per_user)
    items = rng.integers(0, num_items, users.size)
    match = user_group[users] == item_group[items]
    noise = rng.random(users.size) < 0.1
    like = (match ^ noise).astype(np.int8)
    click = np.maximum(like, rng.random(users.size) < 0.3).astype(np.int8)
    times = np.tile(np.arange(per_user), num_users) * 100 + users
    frame = pl.DataFrame(
        {
            "user": [f"u{u}" for u in users],
            "item": [f"i{i}" for i in items],
            "timestamp": times.astype(np.int64),
            "click": click,
            "like": like,
        }
    )
    item_table = pl.DataFrame(
        {
            "item": [f"i{i}" for i in range(num_items)],
            "group": [f"g{g}" for g in item_group],
            "title": [f"t {i}" for i in range(num_items)],
        }
    )
    user_table = pl.DataFrame({"user": [f"u{u}" for u in range(num_users)], "group": [f"g{g}" for g in user_group]})
    return RawTables(
        "planted", frame, items=item_table, users=user_table, labels=["click", "like"], text_fields=["title"]
    )


@pytest.fixture(scope="module")
def planted():
    return prepare(planted_world(), PrepareConfig(split="temporal", valid_fraction=0.15, test_fraction=0.15))


@pytest.fixture(scope="module")
def positive_only():
    """MovieLens-like: every row a consumption with a rating (like = rating >= 4 is derived)."""
    return prepare(make_raw(num_users=30, num_items=40, per_user=10), PrepareConfig())


def all_user_candidates(dataset, k: int = 12, seed: int = 0) -> Candidates:
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, dataset.num_items + 1, (dataset.num_users, k), generator=gen)
    items[:, -2:] = 0  # empty slots
    scores = torch.where(items > 0, torch.rand(items.shape, generator=gen), torch.tensor(float("-inf")))
    return Candidates.from_topk(items, scores, "random")


def test_samples_of_impression_log(planted):
    builder = SampleBuilder(planted, SampleConfig(max_history=5))
    assert builder.tasks == ["click", "like"] and not builder.positive_only and builder.history_label == "click"
    train = builder.train_samples()
    assert len(train) == int((builder.split == TRAIN).sum())
    # History of each sample = the user's earlier clicked train rows (strictly earlier in time).
    inter = planted.interactions.with_row_index("row")
    row = inter.filter((pl.col("split") == TRAIN) & (pl.col("user") == 3)).row(10, named=True)
    index = int(np.flatnonzero(builder.split == TRAIN).tolist().index(row["row"]))
    earlier = inter.filter(
        (pl.col("user") == 3)
        & (pl.col("timestamp") < row["timestamp"])
        & (pl.col("click") == 1)
        & (pl.col("split") == TRAIN)
    )["item"].to_list()
    hist = gather_history(train.history, train.users[index : index + 1], train.history_end[index : index + 1], 5)[0]
    expected = ([0] * 5 + earlier)[-5:]
    assert hist.tolist() == expected
    valid = builder.eval_samples("valid")
    assert len(valid) == int((builder.split == 1).sum())  # impressions: no added negatives


def test_positive_only_negatives_and_candidates(positive_only):
    config = SampleConfig(negatives_per_positive=3, retrieved_share=0.67, eval_negatives=4)
    builder = SampleBuilder(positive_only, config)
    assert builder.positive_only and builder.tasks == ["like", "view"] and builder.history_label is None
    candidates = all_user_candidates(positive_only)
    consumed = builder.consumed_keys(builder.split == TRAIN)
    pool = builder.candidate_pool(candidates, None, consumed)
    users = torch.arange(1, positive_only.num_users + 1)
    negatives = builder.draw_negatives(users, 3, consumed, pool, torch.Generator().manual_seed(0))
    keys = users.unsqueeze(1) * builder.key_base + negatives
    assert not torch.isin(keys[:, :2], consumed).any()  # retrieved negatives were never consumed
    has_pool = (pool[users] > 0).sum(1) >= 2
    from_pool = (negatives[:, :2].unsqueeze(-1) == pool[users].unsqueeze(1)).any(-1)
    assert from_pool[has_pool].all()
    valid = builder.eval_samples("valid", candidates)
    n_pos = int((builder.split == 1).sum())
    assert len(valid) == n_pos * 5 and valid.labels["view"].sum() == n_pos
    again = builder.eval_samples("valid", candidates)
    assert torch.equal(valid.items, again.items)  # fixed seed


def test_feature_schema_detects_columns(planted):
    schema, tables = build_schema(planted, FeatureConfig(dim=4))
    assert schema.item_columns == ["group"] and schema.user_columns == ["group"]  # title is free text
    encoder = FeatureEncoder(schema, FeatureConfig(dim=4)).set_tables(tables)
    assert encoder.item_vectors(torch.tensor([[1, 0], [2, 99]])).shape == (2, 2, 8)
    assert encoder.user_vectors(torch.tensor([1, 0, 999])).shape == (3, 8)


@pytest.mark.parametrize(
    "variant",
    [{"structure": "stacked", "cross_low_rank": 4, "cross_experts": 2}, {"attention_softmax": True, "cross_layers": 0}],
)
def test_model_variants_give_logits_per_task(planted, variant):
    ranker = tiny_ranker(**variant)
    builder = SampleBuilder(planted, ranker.config.samples)
    ranker.tasks = builder.tasks
    schema, tables = build_schema(planted, ranker.config.features)
    model = ranker.build_model(schema)
    model.features.set_tables(tables)
    inputs = builder.train_samples().inputs(8, torch.arange(16))
    logits = model(inputs)
    assert set(logits) == {"click", "like"} and logits["like"].shape == (16,)
    model.loss(inputs)["loss"].backward()


def test_explicit_feature_column_must_be_usable(planted):
    with pytest.raises(ConfigError, match="title"):
        build_schema(planted, FeatureConfig(item_columns=["title"]))


@pytest.mark.learns
def test_tiny_model_overfits_tiny_batch(planted):
    ranker = tiny_ranker()
    builder = SampleBuilder(planted, ranker.config.samples)
    ranker.tasks = builder.tasks
    schema, tables = build_schema(planted, ranker.config.features)
    torch.manual_seed(seeded())
    model = ranker.build_model(schema)
    model.features.set_tables(tables)
    inputs = builder.train_samples().inputs(8, torch.arange(64))
    check_memorises(model, inputs, 0.99, steps=150, lr=1e-2)  # arbitrary labels memorised


@pytest.mark.learns
def test_ranker_learns_planted_signal_and_round_trips(planted, tmp_path):
    ranker = tiny_ranker().fit(planted)
    assert ranker.train_result is not None and len(ranker.train_result.history) >= 1
    metrics = evaluate_ranker(ranker, planted, "test")
    check_at_least(metrics["like/auc"], 0.8, "test like AUC on the planted group rule")
    assert {"click/auc", "click/gauc", "click/logloss", "like/gauc"} <= set(metrics)

    users = torch.tensor([1, 2, 5, 0])  # 0 = unknown user
    batch = planted.user_batch(users, before="test", features=("timestamp", "click"))
    items = torch.tensor([[1, 2, 3, 0], [4, 0, 5, 6], [7, 8, 9, 10], [1, 2, 0, 0]])
    cands = Candidates(items, torch.zeros(4, 4), torch.ones(4, 4, dtype=torch.long), ["x"])
    scores = ranker.score(batch, cands)
    assert set(scores) == {"click", "like"}
    assert scores["like"].shape == (4, 4) and torch.equal(scores["like"][items == 0], torch.zeros(4))
    assert ((scores["like"][items > 0] > 0) & (scores["like"][items > 0] < 1)).all()

    ranker.save(tmp_path / "ranker")
    loaded = Ranker.load(tmp_path / "ranker")
    assert loaded.tasks == ranker.tasks and loaded.train_result.history == ranker.train_result.history
    again = loaded.score(batch, cands)
    assert all(torch.equal(again[t], scores[t]) for t in scores)


def test_positive_only_fit_with_candidates(positive_only, tmp_path):
    ranker = tiny_ranker(train=dict(TINY_TRAIN, epochs=2)).fit(positive_only, all_user_candidates(positive_only))
    assert ranker.tasks == ["like", "view"] and ranker.positive_only
    assert ranker.train_result.history[0]["metrics"].keys() >= {"like/auc", "view/auc"}
    metrics = evaluate_ranker(ranker, positive_only, "valid")
    assert 0.0 <= metrics["view/auc"] <= 1.0 and metrics["samples"] > 0
    users, _ = positive_only.eval_users("test")  # retrieved negatives for the evaluated users only
    subset = _first_rows(all_user_candidates(positive_only, seed=1), users.numel())
    with_retrieved = evaluate_ranker(ranker, positive_only, "test", subset, users)
    assert with_retrieved["samples"] == metrics["samples"]
    batch = positive_only.user_batch(torch.arange(1, 6), before="valid")
    scores = ranker.score(batch, _first_rows(all_user_candidates(positive_only), 5))
    assert scores["view"].shape == (5, 12) and torch.equal(scores["view"][:, -2:], torch.zeros(5, 2))


def _first_rows(candidates: Candidates, n: int) -> Candidates:
    return Candidates(candidates.items[:n], candidates.scores[:n], candidates.channels[:n], candidates.channel_names)
