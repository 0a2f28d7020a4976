"""Page arrangers through the cascade: fused, ranker_topk, mmr, pagellm (fit, arrange, save / load)."""

import pytest
import torch

from recstack.cascade import Cascade, RunConfig
from recstack.config import from_dict
from recstack.data.batch import Candidates, UserBatch
from recstack.data.jagged import Jagged
from recstack.data.prepare import prepare
from recstack.errors import ConfigError
from recstack.page.base import build_page, history_mask, page_order
from recstack.world import World, WorldConfig

TINY_PAGELLM = {
    "name": "pagellm",
    "k": 5,
    "pool": 12,
    "model": {"dim": 16, "heads": 2, "layers": 1, "history_len": 5},
    "item_space": {"dim": 8, "levels": 2, "codebook_size": 4},
    "sft_epochs": 2,
    "reward_epochs": 1,
    "batch_size": 32,
    "ppo": {"steps": 2, "batch_size": 16, "epochs": 1},
}


@pytest.fixture(scope="module")
def world_dataset(tmp_path_factory):
    world = World(WorldConfig(num_users=80, num_items=100, num_topics=5, seed=4))
    return prepare(world.generate_sequences(mean_length=10), name="tinypages")


def run_config(page: dict) -> RunConfig:
    return from_dict(
        RunConfig,
        {
            "name": "t",
            "dataset": {"name": "tinypages"},
            "channels": {"popular": {"name": "popular"}, "itemcf": {"name": "itemcf"}},
            "ranker": {"name": "dcn_din_mmoe", "train": {"epochs": 1, "batch_size": 256}},
            "merge": {"k_total": 30},
            "page": page,
            "eval": {"ks": [10, 20], "page_ks": [5]},
        },
    )


def test_page_order_puts_the_chosen_columns_first_then_the_rest_by_score():
    cands = Candidates(torch.tensor([[5, 6, 7, 0]]), torch.zeros(1, 4), torch.ones(1, 4, dtype=torch.long), ["c"])
    page = page_order(cands, torch.tensor([[0.1, 0.9, 0.5, 2.0]]), torch.tensor([[2, -1]]))
    assert page.items.tolist() == [[7, 6, 5, 0]]  # chosen 7, then 6 > 5, empty slot last
    assert page.scores[0, 0] == float("inf") and page.scores[0, -1] == float("-inf")


def test_history_mask_marks_items_the_user_consumed():
    batch = UserBatch(torch.tensor([1, 2]), Jagged.from_lists([[3, 4], [9]]))
    assert history_mask(batch, torch.tensor([[4, 5], [9, 3]])).tolist() == [[True, False], [True, False]]


TINY_LLM_PAGE = {**TINY_PAGELLM, "backbone": "llm", "llm": {"model": "tiny"}, "lora": {"r": 4}, "sft_epochs": 1}


@pytest.mark.parametrize(
    "page",
    [
        {"name": "ranker_topk"},
        {"name": "mmr", "pool": 12, "item_space": {"dim": 8, "codebook_size": 4}},
        TINY_PAGELLM,
        TINY_LLM_PAGE,
    ],
    ids=["ranker_topk", "mmr", "pagellm", "pagellm-llm"],
)
def test_arrangers_fit_serve_and_survive_save_load(world_dataset, tmp_path, page):
    cascade = Cascade(run_config(page)).fit(world_dataset, tmp_path / "run", progress=lambda m: None)
    cascade.save(tmp_path / "run")
    users = torch.arange(1, 31)
    batch = world_dataset.user_batch(users, before="test")
    shown = cascade.recommend(batch, k=5)
    again = Cascade.load(tmp_path / "run").recommend(batch, k=5)
    assert torch.equal(shown.items, again.items)
    assert (shown.items > 0).all()
    for row in range(len(users)):  # never a repeat, never something the user already consumed
        items = shown.items[row].tolist()
        assert len(set(items)) == len(items)
        assert not set(items) & set(batch.history.row(row).tolist())
    metrics = cascade.evaluate(world_dataset, "test")
    assert 0.0 <= metrics["page"]["ndcg@5"] <= 1.0


def test_pagellm_reports_each_stage_and_mmr_at_lambda_one_is_the_fused_page(world_dataset, tmp_path):
    cascade = Cascade(run_config(TINY_PAGELLM)).fit(world_dataset, tmp_path / "run", progress=lambda m: None)
    report = cascade.page_tuning
    assert report is not None and set(report["pairs"]) == {"relevance", "ranking", "diversity", "redundancy"}
    assert 0.0 <= report["page_reward"]["heldout_pair_accuracy"] <= 1.0
    assert report["ppo"]["seconds_per_step"] > 0
    inputs = cascade.page_inputs(world_dataset, "valid")
    fused = build_page({"k": 5, "channel_weights": cascade.config.page["channel_weights"], "tune": False})
    mmr = build_page({"name": "mmr", "k": 5, "mmr_lambda": 1.0, "pool": 12, "tune": False,
                      "channel_weights": cascade.config.page["channel_weights"]})  # fmt: skip
    mmr.fit(inputs)
    assert torch.equal(mmr.arrange(inputs, 5).items[:, :5], fused.arrange(inputs, 5).items[:, :5])


def test_a_learned_page_needs_a_ranker():
    config = run_config({"name": "pagellm"})
    config.ranker = None
    with pytest.raises(ConfigError, match="no ranker"):
        Cascade(config)
