"""POPO with the tiny Llama: per-step logs of rewards and weights, the KL reference, and resume."""

import pytest
import torch

from recstack.config import from_dict
from recstack.llm.taiji.categories import CategoryPaths
from recstack.llm.taiji.embedding import CatalogueSearch, TextEmbedder
from recstack.llm.taiji.popo import POPOConfig, POPOTrainer
from recstack.llm.taiji.prompting import PromptConfig, TaijiPrompts, build_contexts
from recstack.llm.taiji.rewards import RewardConfig, RewardResult, TaijiRewards
from recstack.llm.tiny import tiny_llama
from tests.helpers import seeded
from tests.llm.taiji_data import BagOfWordsModel, categorised_dataset


@pytest.fixture(scope="module")
def setup():
    dataset = categorised_dataset()
    categories = CategoryPaths.from_dataset(dataset)
    embedder = TextEmbedder(model=BagOfWordsModel())
    rewards = TaijiRewards(categories, RewardConfig(id_k=10), CatalogueSearch(dataset, embedder, cache=False), embedder)
    prompts = TaijiPrompts(dataset, categories, PromptConfig(history_tokens=100, history_items=3, time=False))
    contexts = build_contexts(dataset, range(1, 9), "train_last")
    return prompts, rewards, contexts


class TextRewards:
    """Two rewards a random model's outputs already vary in: the share of ASCII characters and of even code points."""

    def score(self, texts, contexts):
        vowels = torch.tensor([sum(ord(c) < 128 for c in t) / max(1, len(t)) for t in texts])
        spaces = torch.tensor([sum(ord(c) % 2 == 0 for c in t) / max(1, len(t)) for t in texts])
        ok = torch.ones(len(texts), dtype=torch.bool)
        return RewardResult(torch.stack([vowels, spaces], 1), ok, vowels, {"format_broken": 0.0, "category_match": 0.0})


def trainer(setup, weighting="mgda", steps=2, kl=0.04, rewards=None):
    prompts, real_rewards, _ = setup
    rewards = rewards or real_rewards
    torch.manual_seed(seeded(0))  # the LoRA A matrices are drawn from the global RNG
    policy = tiny_llama(seed=seeded(0), context_window=1024)
    config = from_dict(
        POPOConfig,
        {
            "steps": steps,
            "users_per_step": 2,
            "group_size": 3,
            "max_new_tokens": 10,
            "save_every": 1,
            "progress": False,
            "lr": 1e-2,
            "weighting": {"name": weighting},
            "grpo": {"kl_coef": kl},
            "lora": {"r": 2},
            "seed": seeded(0),
        },
    )
    return POPOTrainer(policy, prompts, rewards, config)


def adapter(t):
    return {n: p.detach().clone() for n, p in t.policy.model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("weighting", ["mgda", "cv", "fixed"])
def test_popo_steps_log_rewards_and_weights(setup, weighting):
    t = trainer(setup, weighting)
    start = adapter(t)
    log = t.train(setup[2])
    assert [e["step"] for e in log] == [1, 2]
    for entry in log:
        weights = (entry["weight_semantic"], entry["weight_id"])
        assert min(weights) >= 0 and sum(weights) == pytest.approx(1.0, abs=1e-5)
        assert entry["kl"] >= 0 and 0 <= entry["format_broken"] <= 1 and len(entry["users"]) == 2
    # the random tiny model never writes the answer format: both rewards are 0 and reported as broken
    assert all(e["format_broken"] == 1.0 and e["reward_semantic"] == 0.0 for e in log)
    assert all(torch.isfinite(p).all() for p in adapter(t).values())
    assert adapter(t).keys() == start.keys()


@pytest.mark.parametrize("weighting", ["mgda", "cv"])
def test_popo_moves_the_adapter_when_rewards_vary(setup, weighting):
    t = trainer(setup, weighting, rewards=TextRewards())
    start = adapter(t)
    log = t.train(setup[2])
    moved = max(float((adapter(t)[n] - start[n]).abs().max()) for n in start)
    assert moved > 1e-4
    assert any(0.0 < e["weight_semantic"] < 1.0 for e in log) or weighting == "mgda"
    assert log[-1]["kl"] >= 0.0


def test_popo_resume_continues_to_the_same_adapter(setup, tmp_path):
    whole = trainer(setup, steps=3, kl=0.5, rewards=TextRewards())
    whole.train(setup[2], tmp_path / "whole")
    first = trainer(setup, steps=1, kl=0.5, rewards=TextRewards())
    first.train(setup[2], tmp_path / "split")
    resumed = trainer(setup, steps=3, kl=0.5, rewards=TextRewards())
    log = resumed.train(setup[2], tmp_path / "split")
    assert [e["step"] for e in log] == [1, 2, 3]
    a, b = adapter(whole), adapter(resumed)
    assert any(not torch.equal(a[n], adapter(first)[n]) for n in a)  # the later steps did change it
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    assert (tmp_path / "split" / "checkpoint" / "adapter" / "adapter_config.json").is_file()
