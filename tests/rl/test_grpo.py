"""GRPO pieces: group advantages, min-norm weights, cv weights, the clipped loss and k3 KL."""

import pytest
import torch

from recstack.errors import ConfigError, DataError
from recstack.registry import build
from recstack.rl import (
    GRPOConfig,
    MultiRewardGRPO,
    clipped_surrogate,
    group_advantages,
    kl_penalty,
    min_norm_two,
    min_norm_weights,
    token_weights,
)


def test_group_advantages_normalise_each_group_and_reward():
    rewards = torch.tensor([[[1.0, 0.0], [3.0, 0.0]], [[2.0, 5.0], [2.0, 1.0]]])  # [B=2, G=2, K=2]
    adv = group_advantages(rewards, eps=0.0 + 1e-12)
    std = torch.tensor(2.0).sqrt()  # unbiased std of (1, 3) and of (5, 1) / 2
    assert torch.allclose(adv[0, :, 0], torch.tensor([-1.0, 1.0]) / std)
    assert torch.allclose(adv[0, :, 1], torch.zeros(2))  # no spread: nothing to learn
    assert torch.allclose(adv[1, :, 0], torch.zeros(2))
    assert torch.allclose(adv[1, :, 1], torch.tensor([1.0, -1.0]) / std)
    unscaled = group_advantages(rewards[..., 0], scale=False)
    assert torch.allclose(unscaled, torch.tensor([[-1.0, 1.0], [0.0, 0.0]]))


def test_group_advantages_reject_bad_groups():
    with pytest.raises(DataError, match="at least 2 rollouts"):
        group_advantages(torch.zeros(3, 1))
    with pytest.raises(DataError, match="NaN"):
        group_advantages(torch.tensor([[0.0, float("nan")]]))


def test_mgda_weights_equal_the_closed_form_on_two_known_gradients():
    g1, g2 = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([-1.0, 1.0, 0.5])
    lam = float(g2 @ (g2 - g1) / (g2 - g1).norm() ** 2)
    assert 0 < lam < 1
    assert min_norm_two(g1, g2) == pytest.approx(lam)
    rewards = torch.rand(2, 4, 2)
    w = build("weighting", {"name": "mgda"}).weights(rewards, torch.stack([g1, g2]))
    assert w.tolist() == pytest.approx([lam, 1 - lam], abs=1e-6)
    d = w[0] * g1 + w[1] * g2  # the min-norm point is orthogonal to g1 - g2
    assert float(d @ (g1 - g2)) == pytest.approx(0.0, abs=1e-5)
    # a reward without signal (zero gradient) is left out rather than freezing the update
    flat = build("weighting", "mgda").weights(rewards, torch.stack([torch.zeros(3), g2]))
    assert flat.tolist() == [0.0, 1.0]
    plain = build("weighting", {"name": "mgda", "skip_flat": False}).weights(rewards, torch.stack([torch.zeros(3), g2]))
    assert plain.tolist() == [1.0, 0.0]  # plain MGDA: the zero gradient is the min-norm point
    assert build("weighting", "mgda").weights(rewards, torch.zeros(2, 3)).tolist() == [0.5, 0.5]
    # clipped ends: a gradient inside the other's half-space gets all the weight
    assert min_norm_two(torch.tensor([1.0, 0.0]), torch.tensor([3.0, 0.0])) == 1.0
    assert min_norm_two(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])) == 0.5


def test_min_norm_solver_for_more_rewards_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        grads = torch.randn(3, 6, generator=gen)
        w = min_norm_weights(grads, max_iter=5000)
        assert w.min() >= 0 and float(w.sum()) == pytest.approx(1.0)
        # brute force over a fine simplex grid
        steps = torch.linspace(0, 1, 201)
        a, b = torch.meshgrid(steps, steps, indexing="ij")
        keep = a + b <= 1
        grid = torch.stack([a[keep], b[keep], 1 - a[keep] - b[keep]], 1)
        best = (grid @ grads).norm(dim=1).min()
        assert float((w @ grads).norm()) <= float(best) + 1e-3


def test_cv_weights_follow_the_coefficient_of_variation():
    rewards = torch.tensor([[[1.0, 10.0], [3.0, 10.0], [2.0, 13.0]]])  # [1, 3, 2]
    cv = rewards.std(dim=1) / rewards.mean(dim=1).abs()
    expected = (cv / cv.sum()).reshape(-1)
    w = build("weighting", {"name": "cv"}).weights(rewards)
    assert w.tolist() == pytest.approx(expected.tolist(), rel=1e-4)
    assert w[0] > w[1]  # the reward with the more informative spread gets more weight
    ema = build("weighting", {"name": "cv", "ema": 0.5})
    first = ema.weights(rewards)
    flat = torch.tensor([[[1.0, 1.0], [1.0, 3.0], [1.0, 2.0]]])  # all spread now in reward 2
    second = ema.weights(flat)
    assert second.tolist() == pytest.approx((0.5 * first + 0.5 * torch.tensor([0.0, 1.0])).tolist(), abs=1e-6)
    per_group = build("weighting", {"name": "cv", "per_group": True}).weights(torch.cat([rewards, flat]))
    assert per_group.shape == (2, 2) and per_group[1].tolist() == pytest.approx([0.0, 1.0])
    no_spread = build("weighting", {"name": "cv"}).weights(torch.ones(2, 3, 2))
    assert no_spread.tolist() == [0.5, 0.5]


def test_fixed_weights_and_config_errors():
    assert build("weighting", "fixed").weights(torch.rand(1, 2, 4)).tolist() == [0.25] * 4
    with pytest.raises(ConfigError, match="2 entries but there are 3"):
        build("weighting", {"name": "fixed", "weights": [1.0, 0.0]}).weights(torch.rand(1, 2, 3))
    with pytest.raises(ConfigError, match="unknown key"):
        build("weighting", {"name": "cv", "alpha": 1})
    with pytest.raises(ConfigError, match="per_reward"):
        MultiRewardGRPO(GRPOConfig(reward_norm="sum"), build("weighting", "mgda"), [torch.nn.Parameter(torch.ones(1))])


def test_clipped_surrogate_and_k3_kl():
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    old = torch.log(torch.tensor([[0.25, 0.25]]))  # ratio 2 then 1
    loss = clipped_surrogate(logp, old, torch.tensor([1.0]), 0.2, 0.2)
    assert loss[0].tolist() == pytest.approx([-1.2, -1.0])  # positive advantage: the ratio is capped at 1.2
    loss = clipped_surrogate(logp, old, torch.tensor([-1.0]), 0.2, 0.2)
    assert loss[0].tolist() == pytest.approx([2.0, 1.0])  # negative advantage: the unclipped (worse) term
    ref = torch.log(torch.tensor([[0.25, 0.25]]))
    kl = kl_penalty(logp, ref)
    delta = ref - logp
    assert torch.allclose(kl, delta.exp() - delta - 1)
    assert (kl >= 0).all() and float(kl[0, 1]) == 0.0
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert token_weights(mask, "grpo").flatten().tolist() == pytest.approx([0.25, 0.25, 0.0, 0.5, 0.0, 0.0])
    assert float(token_weights(mask, "bnpo").sum()) == pytest.approx(1.0)


def test_policy_gradient_with_ratio_one_pushes_up_the_better_rollout():
    logits = torch.nn.Parameter(torch.zeros(3))
    arms = torch.tensor([0, 1, 2, 0])  # one group of G = 4 rollouts
    logp = torch.log_softmax(logits, 0)[arms].unsqueeze(1)
    rewards = torch.tensor([[[1.0], [0.0], [0.0], [1.0]]])
    grpo = MultiRewardGRPO(GRPOConfig(), build("weighting", "fixed"), [logits])
    out = grpo.loss(logp, torch.ones_like(logp), rewards)
    out.loss.backward()
    assert logits.grad[0] < 0 < logits.grad[1]  # gradient descent raises arm 0
    assert out.stats["reward_mean"] == pytest.approx([0.5])
