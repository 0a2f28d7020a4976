"""PageLLM parts: target pages, preference pairs, reward models, PPO on a planted toy page problem."""

import pytest
import torch

from recstack.page.pagellm.config import PageModelConfig, PPOConfig
from recstack.page.pagellm.context import PageContext
from recstack.page.pagellm.model import PagePolicy, blocked_before
from recstack.page.pagellm.pairs import PAIR_FAMILIES, build_pairs, target_pages
from recstack.page.pagellm.ppo import gae, ppo_train
from recstack.page.pagellm.rewards import (
    ItemRewardModel,
    MixedReward,
    pair_accuracy,
    position_weights,
    train_bradley_terry,
)
from tests.helpers import check_at_least, seeded

SMALL = PageModelConfig(dim=32, heads=2, layers=1, dropout=0.0, history_len=4)


def toy_context(rows: int, engaged_col: int | None = 3) -> tuple[PageContext, torch.Tensor]:
    """8 pool items (ids 1..8) in three categories: 1-3 -> 0, 4-6 -> 1, 7-8 -> 2; codes [9, 3]."""
    codes = torch.tensor(
        [[0, 0, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 0, 1], [1, 1, 0], [2, 0, 0], [2, 1, 0]]
    )
    items = torch.arange(1, 9).expand(rows, 8).clone()
    engaged = torch.zeros(rows, 8, dtype=torch.bool)
    if engaged_col is not None:
        engaged[:, engaged_col] = True
    features = torch.zeros(rows, 8, 2)
    history = torch.zeros(rows, 4, dtype=torch.long)
    return PageContext(items, torch.arange(8).expand(rows, 8).clone(), features, history, engaged), codes


def test_target_pages_put_engaged_items_first_then_pool_order():
    context, _ = toy_context(2)
    context.items[1, 0] = 0  # an unusable slot is skipped
    pages = target_pages(context, 4)
    assert pages.tolist() == [[3, 0, 1, 2], [3, 1, 2, 4]]


def test_preference_families_degrade_the_target_page_as_documented():
    context, codes = toy_context(16)
    pairs = build_pairs(context, codes, 3, list(PAIR_FAMILIES), 2, torch.Generator().manual_seed(seeded()))
    counts = pairs.counts()
    assert all(counts[f] > 0 for f in PAIR_FAMILIES), counts
    category = codes[:, 0]
    for index, family in enumerate(PAIR_FAMILIES):
        fam = pairs.subset(pairs.family == index)
        assert (fam.better == torch.tensor([3, 0, 1])).all()  # engaged item (col 3, category 1) first
        if family == "relevance":  # replaced by a non-engaged, off-page item of the same category (cols 4, 5)
            assert torch.isin(fam.worse[:, 0], torch.tensor([4, 5])).all()
        if family == "ranking":  # a position swap: same items, engaged item lower
            assert (fam.worse[:, 0] != 3).all() and (fam.worse == 3).any(1).all()
            assert torch.equal(fam.worse.sort(1).values, fam.better.sort(1).values)
        if family == "diversity":  # categories collapsed onto slot 1's
            assert (category[fam.worse + 1] == 1).all()
        if family == "redundancy":  # an off-page item of slot 1's category replaces a lower slot
            assert (fam.worse[:, 0] == 3).all() and torch.isin(fam.worse[:, 1:], torch.tensor([4, 5])).any(1).all()
    # without an engaged item only the families that need none remain
    context, codes = toy_context(4, engaged_col=None)
    counts = build_pairs(context, codes, 2, list(PAIR_FAMILIES), 1, torch.Generator().manual_seed(0)).counts()
    assert counts["relevance"] == counts["ranking"] == 0 and counts["redundancy"] > 0


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[1.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    live = torch.ones(1, 3)
    # gamma 1, lambda 0.5: deltas = [1 + 1 - 0.5, 0 + 1.5 - 1, 2 - 1.5] = [1.5, 0.5, 0.5]
    # A2 = 0.5; A1 = 0.5 + 0.5 * 0.5 = 0.75; A0 = 1.5 + 0.5 * 0.75 = 1.875
    assert torch.allclose(gae(rewards, values, live, 1.0, 0.5), torch.tensor([[1.875, 0.75, 0.5]]))


def test_policy_pages_are_distinct_and_log_probs_match_generation():
    torch.manual_seed(seeded())
    context, codes = toy_context(6)
    context.items[:, 5] = 0  # e.g. a history item removed from the pool
    policy = PagePolicy(codes, [3, 2, 2], 2, 4, SMALL).eval()
    generator = torch.Generator().manual_seed(seeded())
    page = policy.generate(context, greedy=False, generator=generator)
    assert (page != 5).all()
    assert all(len(set(row.tolist())) == 4 for row in page)
    log_probs, entropy, _ = policy.evaluate(context, page)
    assert torch.isfinite(log_probs).all() and (log_probs <= 0).all() and (entropy > 0).all()
    blocked = blocked_before(page, context.valid)
    assert blocked[:, 0, 5].all() and not blocked[:, 0, page[:, 0]].any()


@pytest.mark.learns
def test_item_reward_model_learns_position_swaps():
    torch.manual_seed(seeded())
    context, codes = toy_context(64)
    generator = torch.Generator().manual_seed(seeded())
    pairs = build_pairs(context, codes, 4, ["relevance", "ranking"], 2, generator)
    weights = position_weights(4, "dcg")
    model = ItemRewardModel(codes, [3, 2, 2], 2, 4, SMALL)

    def score(ctx, page):
        return model(ctx, page, weights)

    train_bradley_terry(
        score, list(model.parameters()), context, pairs.rows, pairs.better, pairs.worse, 30, 3e-3, 64, generator
    )
    check_at_least(pair_accuracy(score, context, pairs.rows, pairs.better, pairs.worse), 0.95, "item RM pair accuracy")


# ---- PPO on a planted best page ------------------------------------------------------------------
RELEVANCE = torch.tensor([0.0, 1.0, 0.6, 0.55, 0.5, 0.0, 0.0, 0.4, 0.0])  # by item id; item 0 = padding


def planted(codes: torch.Tensor, alpha: float, page_on: bool, item_on: bool) -> MixedReward:
    """Page reward: distinct categories - 1 (order-blind); item reward: the item's relevance."""

    def page_fn(ctx, page):
        cats = codes[ctx.items.gather(1, page), 0]
        return torch.tensor([len(set(row.tolist())) - 1.0 for row in cats])

    def item_fn(ctx, page):
        return RELEVANCE[ctx.items.gather(1, page)]

    return MixedReward(page_fn if page_on else None, item_fn if item_on else None, alpha, position_weights(3, "dcg"))


@pytest.mark.learns
def test_ppo_with_the_mixed_reward_finds_the_planted_page_and_each_reward_alone_fails():
    """Best mixed page: items 1 (cat 0, rel 1.0), 4 (cat 1, 0.5), 7 (cat 2, 0.4) in that order. The item
    reward alone stacks category 0 (1, 2, 3); the page reward alone is order- and relevance-blind."""
    context, codes = toy_context(1, engaged_col=None)
    results = {}
    for name, (page_on, item_on, steps) in {"mixed": (1, 1, 150), "item": (0, 1, 80), "page": (1, 0, 80)}.items():
        config = PPOConfig(steps=steps, batch_size=64, epochs=4, lr=1e-3, kl_coef=0.0, entropy_coef=0.01)
        torch.manual_seed(seeded())
        policy = PagePolicy(codes, [3, 2, 2], 2, 3, SMALL)
        generator = torch.Generator().manual_seed(seeded(7))
        ppo_train(policy, None, context, planted(codes, 0.5, bool(page_on), bool(item_on)), config, generator)
        greedy = (policy.generate(context, greedy=True)[0] + 1).tolist()
        samples = policy.generate(context.repeat(256), greedy=False, generator=generator)
        relevance = (RELEVANCE[samples + 1] * position_weights(3, "dcg")).sum(1).mean()
        results[name] = greedy, len({int(codes[i, 0]) for i in greedy}), float(relevance)
    assert results["mixed"][0] == [1, 4, 7], results
    assert results["item"][1] < 3, results  # relevant items, too few categories
    assert results["page"][1] == 3, results  # diverse, but blind to which items lead:
    check_at_least(results["mixed"][2] - results["page"][2], 0.2, "page-only reward misplaces key items")


# ---- the LLM backbone (tiny random Llama, no download) --------------------------------------------
def tiny_llm_policy(slots: int = 3, rank: int = 4):
    from recstack.llm.lora import LoraSettings
    from recstack.llm.tiny import tiny_llama
    from recstack.page.pagellm.llm_policy import LLMPagePolicy

    llm = tiny_llama(seed=seeded())
    llm.add_lora(LoraSettings(r=rank))
    _, codes = toy_context(1)
    return LLMPagePolicy(llm, codes, [3, 2, 2], slots)


def test_llm_policy_writes_distinct_pool_items_and_scores_them_consistently():
    torch.manual_seed(seeded())
    policy = tiny_llm_policy().eval()
    context, _ = toy_context(4)
    context.items[:, 1] = 0  # an unusable pool slot is never written
    generator = torch.Generator().manual_seed(seeded())
    page = policy.generate(context, greedy=False, generator=generator)
    assert (page != 1).all() and all(len(set(row.tolist())) == 3 for row in page)
    log_probs, entropy, values = policy.evaluate(context, page)
    assert log_probs.shape == entropy.shape == values.shape == (4, 3)
    assert torch.isfinite(log_probs).all() and (log_probs <= 0).all()


@pytest.mark.learns
def test_llm_policy_learns_a_planted_page_by_sft():
    """SFT through LoRA + the added semantic-ID tokens: the policy learns to write the target page."""
    torch.manual_seed(seeded())
    policy = tiny_llm_policy(rank=16)
    context, _ = toy_context(8)
    target = torch.tensor([[3, 6, 0]]).expand(8, 3)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(150):
        loss = -policy.evaluate(context, target)[0].sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    policy.eval()
    assert torch.equal(policy.generate(context, greedy=True), target)
    check_at_least(float(policy.evaluate(context, target)[0].sum(1).mean().exp()), 0.5, "LLM page SFT likelihood")
