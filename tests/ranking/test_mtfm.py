"""MTFM ranker: overfitting, save -> load, grouped scoring, no leakage across a user's group, cascade, ablations."""

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
    "name": "mtfm",
    "features": {"dim": 8},
    "samples": {"max_history": 8},
    "dim": 24,
    "heads": 3,
    "kv_heads": 1,
    "blocks": 1,
    "target_layers": 2,
    "realtime": 3,
    "expert_hidden": [16],
    "tower_hidden": [8],
    "num_experts": 2,
}


@pytest.fixture(scope="module")
def world():
    return tiny_world()


@pytest.mark.learns
def test_overfits_tiny_batch(world):
    # Each scenario has its own MMoE and towers, so a tower sees only its scenario's ~10 of the 32 rows; when
    # most of them carry label 0 for a task, the cheapest fit switches off all 8 ReLU units of that tower and
    # the few 1s are stuck at its bias (seed 6: a "like" tower with 3 of 14 positive, 0.93 even at lr 2e-3).
    # 16 units per tower keep some alive; the task stays to memorise 32 random labels through every part.
    _, builder, model = tiny_model(world, {**SPEC, "target_layers": 1, "tower_hidden": [16]})
    samples = builder.train_samples()
    inputs = samples.inputs(8, spread_rows(samples, 32))
    assert {"history_time", "history_event", "scenario"} <= set(inputs)
    check_memorises(model, inputs, 0.97, steps=150, lr=5e-3)


def test_structure_follows_flags(world):
    _, _, model = tiny_model(world, {**SPEC, "blocks": 2, "target_layers": 3})
    assert len(model.layers) == 8 and model.target_layer == [False, True, True, True] * 2
    assert len(model.tokenize_t) == len(model.heads) == 4  # 3 world scenarios + unknown
    _, _, shared = tiny_model(world, {**SPEC, "scenario_tokenizers": False, "scenario_heads": False})
    assert len(shared.tokenize_t) == len(shared.heads) == 1
    attn = model.layers[1].attn
    assert attn.n_heads == 3 and attn.n_kv_heads == 1 and attn.kv.out_features == 2 * 8


@pytest.mark.parametrize(
    "flags",
    [
        {"target_layers": 0, "full_attention": "softmax", "kv_heads": 3},  # full attention only, plain MHA
        {"group_norm": False, "cross_features": False, "event_features": False, "realtime_window": 86400.0},
        {"scenario_tokenizers": False, "scenario_heads": False, "realtime": 0},
    ],
)
def test_ablation_flags_train(world, flags):
    _, builder, model = tiny_model(world, {**SPEC, **flags})
    inputs = builder.train_samples().inputs(8, torch.arange(32), WINDOW)
    loss = model.loss(inputs)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.tokenize_h.layers[0].weight.grad is not None


def test_grouped_batch_hides_later_events(world):
    ranker, builder, model = tiny_model(world, {**SPEC, "aggregate_users": True, "aggregate_window": WINDOW})
    check_no_leakage(model, builder.train_samples().inputs(8, torch.arange(300), ranker.group_window))


def test_fit_aggregated_save_load_and_scores(world, tmp_path):
    ranker = build(
        "ranker",
        {
            **SPEC,
            "aggregate_users": True,
            "aggregate_window": WINDOW,
            "train": {"epochs": 1, "batch_size": 256, "progress": False, "patience": 0},
        },
    ).fit(world)
    assert ranker.event_labels == ["click", "long_view", "like", "purchase"] and ranker.time_scale == 1.0
    check_save_load_and_grouped_scoring(ranker, world, tmp_path)


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="kv_heads"):
        build("ranker", {"name": "mtfm", "heads": 3, "kv_heads": 2})
    with pytest.raises(ConfigError, match="realtime_window"):
        build("ranker", {"name": "mtfm", "realtime_window": 0})


def test_runs_as_cascade_ranker(world, tmp_path):
    check_cascade(world, {**SPEC, "aggregate_users": True}, tmp_path)
