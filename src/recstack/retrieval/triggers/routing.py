"""CATR routing: assign each user's candidate triggers to I2I channels (CAPTS, METHODS.md §2.5).

The paper assigns triggers to channels "to maximise total value under quota while discouraging
overlap"; the formula is not published, so this is our reading [I]:

    greedy (default): repeatedly take the (trigger, channel) pair of highest score
        score[t, c] = ṽ[t, c] · (1 + uniqueness_bonus · u[t, c])
    while channel c has quota left and (t, c) is unused; once t is routed to channel c', t's score on
    every other channel c is multiplied by max(0, 1 - overlap_penalty · overlap[c, c']) — at 0 the pair
    is forbidden (never routed twice to channels that overlap that much).
    exact (flag): the same objective without the soft discount as a 0/1 program per user
    (scipy.optimize.milp): Σ score · x, Σ_t x[t, c] <= quota[c], and x[t, c] + x[t, c'] <= 1 whenever
    the greedy discount would forbid the pair. Per-user solver calls: for small M·C and evaluation.

The greedy runs Σ quota steps, each vectorised over the batch; pairs scored -inf are never taken.
"""

from __future__ import annotations

import numpy as np
import torch

from recstack.errors import ConfigError


def _check(scores: torch.Tensor, quotas: torch.Tensor, overlap: torch.Tensor) -> None:
    if scores.dim() != 3:
        raise ConfigError(f"routing: scores must be [B, M, C], got {tuple(scores.shape)}")
    channels = scores.shape[2]
    if quotas.shape != (channels,) or overlap.shape != (channels, channels):
        raise ConfigError(f"routing: quotas must be [{channels}] and overlap [{channels}, {channels}]")
    if bool((quotas < 0).any()):
        raise ConfigError("routing: quotas must be >= 0")


def route_greedy(
    scores: torch.Tensor, quotas: torch.Tensor, overlap: torch.Tensor, overlap_penalty: float = 1.0
) -> torch.Tensor:
    """scores [B, M, C] (> 0; -inf = not routable), quotas [C] triggers per channel, overlap [C, C]
    -> assignment [B, M, C] bool with Σ_t assignment[:, t, c] <= quotas[c]."""
    _check(scores, quotas, overlap)
    size, width, channels = scores.shape
    discount = (1.0 - overlap_penalty * overlap.float()).clamp(min=0.0)  # [C, C]
    discount.fill_diagonal_(0.0)  # a pair taken is never taken again
    live = scores.clone().float()
    live[~torch.isfinite(live)] = float("-inf")
    left = quotas.long().unsqueeze(0).expand(size, channels).clone()  # [B, C]
    assignment = torch.zeros(size, width, channels, dtype=torch.bool)
    rows = torch.arange(size)
    for _ in range(int(quotas.sum())):
        live.masked_fill_((left == 0).unsqueeze(1), float("-inf"))
        best, flat = live.reshape(size, -1).max(1)
        active = torch.isfinite(best)
        if not bool(active.any()):
            break
        trigger, channel = flat // channels, flat % channels
        r, t, c = rows[active], trigger[active], channel[active]
        assignment[r, t, c] = True
        left[r, c] -= 1
        factor = discount[c]  # [A, C]: how much t is still worth on every other channel
        row_scores = live[r, t] * factor
        live[r, t] = torch.where(factor > 0, row_scores, torch.full_like(row_scores, float("-inf")))
    return assignment


def route_exact(
    scores: torch.Tensor, quotas: torch.Tensor, overlap: torch.Tensor, overlap_penalty: float = 1.0
) -> torch.Tensor:
    """The 0/1 program of the module docstring, one scipy.optimize.milp per user. Same shapes as greedy."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    _check(scores, quotas, overlap)
    size, width, channels = scores.shape
    forbidden = [
        (a, b)
        for a in range(channels)
        for b in range(a + 1, channels)
        if 1.0 - overlap_penalty * max(float(overlap[a, b]), float(overlap[b, a])) <= 0
    ]
    assignment = torch.zeros(size, width, channels, dtype=torch.bool)
    for row in range(size):  # per-user solver: the exact flag, not the serving path
        values = scores[row].double().numpy()  # [M, C]
        routable = np.isfinite(values)
        if not routable.any():
            continue
        variables = width * channels
        gain = np.where(routable, values, 0.0).reshape(-1)
        constraints = []
        per_channel = np.zeros((channels, variables))
        for c in range(channels):
            per_channel[c, c::channels] = 1.0
        constraints.append(LinearConstraint(per_channel, -np.inf, quotas.double().numpy()))
        if forbidden:
            pairs = np.zeros((width * len(forbidden), variables))
            for k, (a, b) in enumerate(forbidden):
                for t in range(width):
                    pairs[k * width + t, t * channels + a] = pairs[k * width + t, t * channels + b] = 1.0
            constraints.append(LinearConstraint(pairs, -np.inf, 1.0))
        upper = routable.reshape(-1).astype(float)
        result = milp(-gain, constraints=constraints, integrality=np.ones(variables), bounds=Bounds(0, upper))
        if result.x is not None:
            assignment[row] = torch.from_numpy(result.x.reshape(width, channels) > 0.5)
    return assignment
