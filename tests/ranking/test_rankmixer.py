"""The rankmixer ranker (ranking/models/rankmixer.py) on tiny data built here."""

from __future__ import annotations

import pytest
import torch

from recstack.data.batch import Candidates
from recstack.data.prepare import PrepareConfig, prepare
from recstack.errors import ConfigError
from recstack.ranking.base import Ranker
from recstack.registry import build
from tests.ranking.ranker_checks import check_memorises, unfitted_model
from tests.ranking.test_ranker import TINY_TRAIN, planted_world


@pytest.fixture(scope="module")
def planted():
    return prepare(
        planted_world(num_users=40, per_user=30),
        PrepareConfig(split="temporal", valid_fraction=0.15, test_fraction=0.15),
    )


def tiny(name: str, **overrides):
    spec = {
        "name": name,
        "features": {"dim": 4},
        "samples": {"max_history": 6},
        "dim": 16,
        "layers": 2,
        "tower_hidden": [8],
        "train": dict(TINY_TRAIN, epochs=2),
        "score_rows": 64,
        **overrides,
    }
    return build("ranker", spec)


def model_and_inputs(ranker, dataset, rows: int = 32):
    """An unfitted model of `ranker` for `dataset` and the inputs of its first `rows` train samples."""
    model, builder = unfitted_model(ranker, dataset)
    return model, builder.train_samples().inputs(ranker.config.samples.max_history, torch.arange(rows))


def check_overfits(model, inputs, steps: int = 40) -> None:
    check_memorises(model, inputs, 0.99, steps, lr=1e-2)


def round_trip_scores(ranker, dataset, tmp_path) -> None:
    """fit -> score -> save -> load -> identical scores."""
    ranker.fit(dataset)
    batch = dataset.user_batch(torch.tensor([1, 2, 5, 0]), before="test", features=("timestamp", "click"))
    items = torch.tensor([[1, 2, 3, 0], [4, 0, 5, 6], [7, 8, 9, 10], [1, 2, 0, 0]])
    cands = Candidates(items, torch.zeros(4, 4), torch.ones(4, 4, dtype=torch.long), ["x"])
    scores = ranker.score(batch, cands)
    assert scores["like"].shape == (4, 4) and torch.equal(scores["like"][items == 0], torch.zeros(4))
    ranker.save(tmp_path / "ranker")
    again = Ranker.load(tmp_path / "ranker").score(batch, cands)
    assert all(torch.equal(again[t], scores[t]) for t in scores)


@pytest.mark.learns
def test_rankmixer_overfits_tiny_batch(planted):
    model, inputs = model_and_inputs(tiny("rankmixer", tokenizer={"mode": "autosplit", "num_tokens": 4}), planted)
    assert model.tokenizer.num_tokens == 4
    check_overfits(model, inputs)


def test_rankmixer_save_load_identical_scores(planted, tmp_path):
    round_trip_scores(
        tiny("rankmixer", tokenizer={"mode": "autosplit", "num_tokens": 4}, mmoe_experts=2), planted, tmp_path
    )


def test_rankmixer_relu_moe_adds_l1_and_ablations_run(planted):
    model, inputs = model_and_inputs(
        tiny("rankmixer", moe_experts=3, tokenizer={"mode": "autosplit", "num_tokens": 4}), planted
    )
    out = model.loss(inputs)
    assert out["moe_l1"] > 0
    out["loss"].backward()
    for flags in ({"token_mixing": False}, {"shared_ffn": True}):
        model, inputs = model_and_inputs(
            tiny("rankmixer", tokenizer={"mode": "autosplit", "num_tokens": 4}, **flags), planted
        )
        model.loss(inputs)["loss"].backward()
        assert model(inputs)["like"].shape == (32,)


def test_rankmixer_heads_must_divide_dim(planted):
    assert tiny("rankmixer", tokenizer={"num_tokens": 4}).config.tokenizer.mode == "autosplit"  # its own default
    # semantic groups on this data: user, item_id, item_side, context, sequence = 5 tokens; 16 % 5 != 0
    with pytest.raises(ConfigError, match="divisible by the 5 tokens"):
        model_and_inputs(tiny("rankmixer", tokenizer={"mode": "groups", "global_token": False}), planted)
