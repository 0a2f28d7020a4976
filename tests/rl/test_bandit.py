"""POPO on a toy two-reward bandit: a softmax policy over arms trained with MultiRewardGRPO.

Arms (reward 1, reward 2): three arms give (1, 0) and one gives (1, 0.5), so reward 1 cannot tell them
apart; (0.7, 0.8) and (0, 1) trade reward 1 for reward 2; (0.2, 0.2) is bad for both. The Pareto
front is the chain (1, 0.5) - (0.7, 0.8) - (0, 1).

`mgda` (POPO) must end Pareto-stationary: no mixture of arms raises one expected reward without the
other falling. `fixed` with weights (1, 0) ignores reward 2: it spreads its mass over the four
reward-1 ties and gives up reward 2, though moving to (1, 0.5) would cost nothing.
"""

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from recstack.registry import build
from recstack.rl import GRPOConfig, MultiRewardGRPO
from tests.helpers import check_at_least, check_at_most, seeded

ARMS = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.5], [0.7, 0.8], [0.0, 1.0], [0.2, 0.2]])


def train_bandit(weighting: dict, seed: int, steps: int = 200, groups: int = 4, group_size: int = 8) -> torch.Tensor:
    """Policy probabilities [arms] after `steps` GRPO steps of `groups` groups of `group_size` pulls."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.nn.Parameter(torch.zeros(len(ARMS)))
    optimizer = torch.optim.SGD([logits], lr=0.5)
    grpo = MultiRewardGRPO(GRPOConfig(kl_coef=0.0), build("weighting", weighting), [logits])
    for _ in range(steps):
        arms = torch.multinomial(torch.softmax(logits.detach(), 0), groups * group_size, True, generator=gen)
        logp = torch.log_softmax(logits, 0)[arms].unsqueeze(1)  # [N, T = 1]: one "token" per rollout
        rewards = ARMS[arms].view(groups, group_size, 2)
        grpo.step(optimizer, logp, torch.ones_like(logp), rewards, max_grad_norm=None)
    return torch.softmax(logits.detach(), 0)


def free_improvement(pi: torch.Tensor) -> float:
    """Largest gain in one expected reward over any arm mixture q that keeps the other one from falling
    (a linear program per reward); 0 exactly at a Pareto-stationary point."""
    value = (pi @ ARMS).numpy().astype(float)
    arms = ARMS.numpy().astype(float)
    best = 0.0
    for k in range(2):
        other = 1 - k
        res = linprog(
            -arms[:, k],
            A_ub=-arms[:, other][None],
            b_ub=[-value[other]],
            A_eq=np.ones((1, len(arms))),
            b_eq=[1.0],
            bounds=[(0, 1)] * len(arms),
        )
        assert res.success
        best = max(best, -res.fun - value[k])
    return best


@pytest.mark.parametrize("base", [0, 1, 2])
def test_mgda_reaches_a_pareto_stationary_policy(base):
    pi = train_bandit({"name": "mgda"}, seeded(base))
    check_at_most(free_improvement(pi), 0.04, "mgda: free improvement of one reward")
    expected = pi @ ARMS
    check_at_least(float(expected[1]), 0.45, "mgda: expected reward 2")


@pytest.mark.parametrize("base", [0, 1, 2])
def test_fixed_weights_that_ignore_a_reward_sacrifice_it(base):
    pi = train_bandit({"name": "fixed", "weights": [1.0, 0.0]}, seeded(base))
    expected = pi @ ARMS
    check_at_least(float(expected[0]), 0.95, "fixed (1, 0): expected reward 1")
    check_at_most(float(expected[1]), 0.3, "fixed (1, 0): expected reward 2")
    check_at_least(free_improvement(pi), 0.2, "fixed (1, 0): free improvement left on the table")


def test_cv_weighting_improves_both_rewards():
    pi = train_bandit({"name": "cv"}, seeded(0), steps=100)
    start = torch.full((len(ARMS),), 1 / len(ARMS)) @ ARMS
    expected = pi @ ARMS
    assert (expected > start).all(), f"{expected.tolist()} vs start {start.tolist()}"
