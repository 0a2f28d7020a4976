"""HSTU ranker: overfitting, save -> load, grouped (M-FALCON-style) scoring, no leakage, cascade, ablations."""

from __future__ import annotations

import pytest
import torch

from recstack.errors import ConfigError
from recstack.registry import build
from tests.ranking.ranker_checks import (
    WINDOW,
    check_cascade,
    check_memorises,
    check_no_leakage,
    check_save_load_and_grouped_scoring,
    spread_rows,
    tiny_model,
    tiny_world,
)

SPEC = {
    "name": "hstu_ranker",
    "features": {"dim": 8},
    "samples": {"max_history": 8},
    "dim": 16,
    "layers": 1,
    "heads": 2,
    "attention_dim": 8,
    "linear_dim": 8,
    "dropout": 0.0,
    "expert_hidden": [16],
    "tower_hidden": [8],
    "num_experts": 2,
}


@pytest.fixture(scope="module")
def world():
    return tiny_world()


@pytest.mark.learns
def test_overfits_tiny_batch(world):
    _, builder, model = tiny_model(world, SPEC)
    samples = builder.train_samples()
    inputs = samples.inputs(8, spread_rows(samples, 32))
    check_memorises(model, inputs, 0.97, steps=150, lr=5e-3)  # random labels; see overfit_aucs on the lr


@pytest.mark.parametrize(
    "flags",
    [
        {"action_encoding": "none", "target_self": False, "rab_time": False, "window": 3},
        {"rab_position": False, "normalization": "causal", "user_features": False, "layers": 2},
    ],
)
def test_ablation_flags_train(world, flags):
    _, builder, model = tiny_model(world, {**SPEC, **flags})
    assert (model.event is None) == (flags.get("action_encoding") == "none")
    inputs = builder.train_samples().inputs(8, torch.arange(32), WINDOW)
    loss = model.loss(inputs)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.project.weight.grad is not None


def test_target_self_flag_changes_what_a_target_sees(world):
    _, builder, model = tiny_model(world, SPEC)
    samples = builder.train_samples()
    with_history = torch.nonzero(samples.history_end > samples.history.offsets[samples.users]).squeeze(1)
    inputs = samples.inputs(8, with_history[:8])  # a target without history keeps its diagonal either way
    model.eval()
    with torch.no_grad():
        alone = model(inputs)["click"]
        model.config.target_self = False
        without_self = model(inputs)["click"]
    assert not torch.allclose(alone, without_self)


def test_grouped_batch_hides_later_events(world):
    ranker, builder, model = tiny_model(world, {**SPEC, "aggregate_users": True, "aggregate_window": WINDOW})
    check_no_leakage(model, builder.train_samples().inputs(8, torch.arange(300), ranker.group_window))


def test_fit_save_load_and_grouped_scores(world, tmp_path):
    ranker = build("ranker", {**SPEC, "train": {"epochs": 1, "batch_size": 256, "progress": False, "patience": 0}}).fit(
        world
    )
    assert ranker.train_result is not None and "click/auc" in ranker.train_result.history[0]["metrics"]
    check_save_load_and_grouped_scoring(ranker, world, tmp_path)


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="action_encoding"):
        build("ranker", {"name": "hstu_ranker", "action_encoding": "interleave"})
    with pytest.raises(ConfigError, match="normalization"):
        build("ranker", {"name": "hstu_ranker", "normalization": "length"})


def test_runs_as_cascade_ranker(world, tmp_path):
    check_cascade(world, {**SPEC, "aggregate_users": False}, tmp_path)
