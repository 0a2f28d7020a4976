"""The tokenmixer_large ranker (ranking/models/tokenmixer_large.py) on tiny data built here."""

from __future__ import annotations

import pytest
import torch

from recstack.cascade import Cascade, RunConfig
from recstack.config import from_dict
from recstack.data.prepare import PrepareConfig, prepare
from recstack.errors import ConfigError
from recstack.nn.per_token import PerTokenSparseMoE
from recstack.nn.token_mixing import MixRevertBlock
from recstack.world import World, WorldConfig
from tests.ranking.test_ranker import TINY_TRAIN, planted_world
from tests.ranking.test_rankmixer import check_overfits, model_and_inputs, round_trip_scores, tiny


@pytest.fixture(scope="module")
def planted():
    return prepare(
        planted_world(num_users=40, per_user=30),
        PrepareConfig(split="temporal", valid_fraction=0.15, test_fraction=0.15),
    )


@pytest.mark.learns
def test_tokenmixer_large_overfits_tiny_batch(planted):
    deep, inputs = model_and_inputs(tiny("tokenmixer_large", layers=4), planted)
    assert deep.tokenizer.names[0] == "global" and deep.aux_layers == [2]  # skip into layer 3 of 4, aux loss
    out = deep.loss(inputs)
    assert out["loss"] > out["click"] + out["like"] and out["aux_bce"] > 0
    model, inputs = model_and_inputs(tiny("tokenmixer_large"), planted)
    check_overfits(model, inputs)


def test_tokenmixer_large_save_load_identical_scores(planted, tmp_path):
    round_trip_scores(tiny("tokenmixer_large", moe_experts=4, moe_top_k=2), planted, tmp_path)


def test_moe_top_k_is_respected_inside_the_model(planted):
    model, inputs = model_and_inputs(
        tiny("tokenmixer_large", layers=2, moe_experts=4, moe_top_k=2, balance_weight=0.01), planted
    )
    out = model.loss(inputs)
    out["loss"].backward()
    moes = [m for m in model.modules() if isinstance(m, PerTokenSparseMoE)]
    assert len(moes) == 4 and out["moe_balance"] > 0  # mix + revert sub-layers of 2 blocks
    for moe in moes:
        assert ((moe.gates > 0).sum(-1) == 2).all() and moe.gate_scale == 2.0  # alpha = E / k
        assert moe.experts.w_in.grad is not None


@pytest.mark.parametrize(
    "flags",
    [
        {"token_mixing": "none"},
        {"token_mixing": "mix", "heads": None, "dim": 18},  # RankMixer-style mixing: heads = tokens = 6
        {"interlayer_gap": 0, "layers": 4},
        {"swiglu": "shared"},
        {"swiglu": "per_token_ffn", "tokenizer": {"global_token": False}},
        {"moe_experts": 2, "moe_top_k": 1, "moe_per_token": False, "balance_weight": 0.01},
        {"moe_experts": 2, "moe_top_k": 1, "moe_shared_expert": False, "gate_scale": 1.0, "moe_dispatch": "sort"},
        {"down_init": 1.0, "final_norm": False, "aux_head": "towers", "layers": 3, "interlayer_gap": 1},
        {"tokenizer": {"mode": "autosplit", "num_tokens": 4}, "mmoe_experts": 2},
    ],
)
def test_ablation_flags_build_and_run(planted, flags):
    model, inputs = model_and_inputs(tiny("tokenmixer_large", **flags), planted)
    out = model.loss(inputs)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model(inputs)["like"].shape == (32,)
    assert all(b.mode == flags.get("token_mixing", "mix_revert") for b in model.blocks if isinstance(b, MixRevertBlock))
    assert ("aux_bce" in out) == bool(model.aux_layers)
    if flags.get("interlayer_gap") == 0:
        assert model.aux_layers == []


def test_bad_heads_and_keys_fail_clearly(planted):
    with pytest.raises(ConfigError, match="heads"):
        model_and_inputs(tiny("tokenmixer_large", heads=3), planted)  # 16 % 3
    with pytest.raises(ConfigError, match="token_mixing"):
        tiny("tokenmixer_large", token_mixing="shuffle")


def test_tokenmixer_large_runs_as_the_cascade_ranker(tmp_path):
    world = World(WorldConfig(num_users=40, num_items=50, num_topics=4, seed=3))
    dataset = prepare(world.generate_sequences(mean_length=8), name="tinyworld")
    dataset.save()
    ranker = {
        "name": "tokenmixer_large",
        "dim": 16,
        "layers": 2,
        "features": {"dim": 4},
        "samples": {"max_history": 6},
        "train": dict(TINY_TRAIN, epochs=1),
    }
    config = from_dict(
        RunConfig,
        {
            "name": "t",
            "dataset": {"name": "tinyworld"},
            "ranker": ranker,
            "channels": {"popular": {"name": "popular"}, "itemcf": {"name": "itemcf"}},
            "merge": {"k_total": 20, "quotas": {"popular": 10, "itemcf": 10}},
            "eval": {"ks": [10]},
        },
    )
    cascade = Cascade(config).fit(dataset, tmp_path / "run", progress=lambda m: None)
    batch = dataset.user_batch(torch.arange(1, 9))
    page = cascade.recommend(batch, k=5)
    assert (page.items > 0).all()
    cascade.save(tmp_path / "run")
    assert torch.equal(Cascade.load(tmp_path / "run").recommend(batch, k=5).items, page.items)
