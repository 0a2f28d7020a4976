"""Minimum-norm point in the convex hull of per-objective gradients (MGDA; Désidéri 2012, Sener & Koltun,
"Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018).

Given K gradients g_k (rows of `grads` [K, P]), find w on the simplex minimising ||Σ_k w_k g_k||².
The result d = Σ w_k g_k is either 0 (the point is Pareto-stationary: no direction decreases every
loss) or a direction that decreases all K losses at once. POPO (Taiji, METHODS.md §2.1) uses it for the
per-reward policy gradients.

- K = 2: closed form λ* = clip(g2·(g2 − g1) / ||g2 − g1||², 0, 1), w = (λ*, 1 − λ*).
- K > 2: Frank–Wolfe on the Gram matrix M = G Gᵀ with exact line search (Sener & Koltun Alg. 2):
  only K×K inner products are needed, so P (millions of LoRA weights) is touched once.
"""

from __future__ import annotations

import torch

from recstack.errors import DataError


def min_norm_two(g1: torch.Tensor, g2: torch.Tensor) -> float:
    """λ* in [0, 1] minimising ||λ g1 + (1 − λ) g2||² for two flat gradients [P]; 0.5 when g1 == g2."""
    g1, g2 = g1.double().reshape(-1), g2.double().reshape(-1)
    diff = g2 - g1
    denom = float(diff @ diff)
    if denom <= 0.0:
        return 0.5
    return float(min(1.0, max(0.0, float(g2 @ diff) / denom)))


def _line_search(v1v1: float, v1v2: float, v2v2: float) -> float:
    """γ in [0, 1] minimising ||(1 − γ) v1 + γ v2||² from the three inner products."""
    denom = v1v1 - 2.0 * v1v2 + v2v2
    if denom <= 0.0:
        return 0.0
    return min(1.0, max(0.0, (v1v1 - v1v2) / denom))


def min_norm_weights(grads: torch.Tensor, max_iter: int = 500, tol: float = 1e-9) -> torch.Tensor:
    """grads [K, P] -> weights [K] (float32, >= 0, summing to 1) of the min-norm convex combination."""
    if grads.dim() != 2 or grads.shape[0] == 0:
        raise DataError(f"min_norm_weights expects gradients [K, P] with K >= 1, got {tuple(grads.shape)}")
    if not torch.isfinite(grads).all():
        raise DataError("min_norm_weights: a gradient contains NaN or inf")
    k = grads.shape[0]
    if k == 1:
        return torch.ones(1)
    if k == 2:
        lam = min_norm_two(grads[0], grads[1])
        return torch.tensor([lam, 1.0 - lam])
    g = grads.double()
    gram = g @ g.T  # [K, K]
    # Start from the best pair (closed form), as Sener & Koltun do, then Frank-Wolfe over all K.
    w = torch.full((k,), 1.0 / k, dtype=torch.float64)
    best = float("inf")
    for i in range(k):  # a loop over the K (few) objectives
        for j in range(i + 1, k):
            gamma = _line_search(float(gram[i, i]), float(gram[i, j]), float(gram[j, j]))
            value = (1 - gamma) ** 2 * gram[i, i] + 2 * gamma * (1 - gamma) * gram[i, j] + gamma**2 * gram[j, j]
            if float(value) < best:
                best = float(value)
                w = torch.zeros(k, dtype=torch.float64)
                w[i], w[j] = 1.0 - gamma, gamma
    for _ in range(max_iter):
        mw = gram @ w
        t = int(torch.argmin(mw))
        gamma = _line_search(float(w @ mw), float(mw[t]), float(gram[t, t]))
        step = -w.clone()
        step[t] += 1.0
        w = w + gamma * step
        if gamma * float(step.abs().sum()) < tol:
            break
    w = w.clamp(min=0.0)
    return (w / w.sum()).float()
