"""Sparse mixture-of-experts FFN over token tensors (Shazeer et al. 2017; GShard; Switch Transformer;
the MoE FFN of OneRec / OneMall, METHODS.md §1.7, §2.16).

    SparseMoE(dim, hidden, num_experts, top_k): x [..., D] -> [..., D]

A linear router scores every token against E experts; `route` keeps each token's top-k experts with
softmax weights; the token's output is the weighted sum of those experts' MLPs (+ an optional shared
expert that every token always passes through, DeepSeek-MoE style). The Switch/GShard load-balancing
loss of the last forward is kept in `module.aux_loss` (see `load_balancing_loss`); the caller adds
`weight * moe_aux_loss(model)` to its own loss.

Dispatch, both vectorised (never a Python loop over tokens), same weights, agree to float precision:
- "sort": flatten the N*k (token, expert) assignments, sort them by expert, run each expert once on its
  contiguous slice, scatter the weighted outputs back with `index_add_`. Compute ~ N*k expert MLPs;
  a Python loop over the E experts only (as in Mixtral / Megablocks' reference path).
- "dense": run every expert on every token with one batched einsum, then mix with the [N, E] gate
  matrix (zero for unselected experts). Compute ~ N*E expert MLPs but no sort or sync: faster for
  tiny E on CPU / small batches, and the reference the tests compare "sort" against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recstack.errors import ConfigError

EXPERT_ACTIVATIONS = ("swiglu", "gelu")
DISPATCH = ("sort", "dense")


def route(logits: torch.Tensor, k: int, renormalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k softmax routing. logits [N, E] -> (weights [N, k], indices [N, k] long).

    Probabilities are a softmax over all E experts; the k largest are kept. With `renormalize` the kept
    weights are divided by their sum (= a softmax over the top-k logits, Mixtral / GShard top-2);
    without it they stay as the full-softmax probabilities (Switch top-1, DeepSeek-MoE).
    Ties go to the lower expert index (torch.topk), so routing is deterministic.
    """
    if not 1 <= k <= logits.shape[-1]:
        raise ConfigError(f"top_k must be in [1, {logits.shape[-1]}] (number of experts), got {k}")
    probs = torch.softmax(logits.float(), dim=-1)
    weights, indices = torch.topk(probs, k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(logits.dtype), indices


def load_balancing_loss(probs: torch.Tensor, indices: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Switch-Transformer / GShard auxiliary loss: E * sum_e f_e * P_e.

    probs [N, E]: router softmax per token; indices [N, k]: the experts each token was sent to.
    f_e = share of the N*k assignments that went to expert e (not differentiable), P_e = mean router
    probability of e (differentiable: the gradient pushes probability away from over-loaded experts).
    Equals 1 when the assignments are uniform (f_e = 1/E) or the router is uniform (P_e = 1/E), and E
    when every token goes to one expert with probability 1. Returns a float32 scalar (0 for N = 0).
    """
    if probs.shape[0] == 0:
        return probs.new_zeros((), dtype=torch.float32)
    counts = torch.zeros(num_experts, device=probs.device, dtype=torch.float32)
    counts.index_add_(0, indices.reshape(-1), torch.ones(indices.numel(), device=probs.device))
    fraction = counts / indices.numel()
    return num_experts * (fraction * probs.float().mean(dim=0)).sum()


class _Experts(nn.Module):
    """E expert MLPs as stacked weights: w_in [E, D, H] (x2 for SwiGLU's gate), w_out [E, H, D]; no bias
    (so an expert maps a zero token to zero and both dispatch paths share the exact same parameters)."""

    def __init__(self, num: int, dim: int, hidden: int, activation: str) -> None:
        super().__init__()
        self.activation = activation
        width = 2 * hidden if activation == "swiglu" else hidden
        self.w_in = nn.Parameter(torch.empty(num, dim, width))
        self.w_out = nn.Parameter(torch.empty(num, hidden, dim))
        # Same init as nn.Linear per expert (uniform +-1/sqrt(fan_in)).
        nn.init.uniform_(self.w_in, -1 / math.sqrt(dim), 1 / math.sqrt(dim))
        nn.init.uniform_(self.w_out, -1 / math.sqrt(hidden), 1 / math.sqrt(hidden))

    def _act(self, h: torch.Tensor) -> torch.Tensor:
        if self.activation == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            return F.silu(gate) * up
        return F.gelu(h)

    def one(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert e on its tokens: [n, D] -> [n, D]."""
        return self._act(x @ self.w_in[e]) @ self.w_out[e]

    def all(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert on every token: [N, D] -> [N, E, D]."""
        return torch.einsum("neh,ehd->ned", self._act(torch.einsum("nd,edh->neh", x, self.w_in)), self.w_out)


class SparseMoE(nn.Module):
    """Top-k routed mixture of MLP experts (+ optional always-on shared expert): [..., D] -> [..., D].

    dim, hidden:    model width and each expert's hidden width.
    num_experts:    E routed experts; top_k: experts per token (1 <= k <= E).
    activation:     "swiglu" (SiLU(x W_g) * (x W_u) W_d) or "gelu" (GELU(x W_u) W_d).
    shared_expert:  add one dense expert every token passes through (hidden `shared_hidden`, default hidden).
    renormalize:    see `route`.  gate_scale: multiply the routed weights by a constant (DeepSeek-V3's
                    routed scaling factor; 1.0 = off).  dispatch: "sort" or "dense" (module docstring).
    forward(x, mask=None): mask [...] bool (True = real token) keeps padding out of the aux loss
    statistics; padded tokens are still computed (their output is whatever the caller ignores).
    After each forward: `aux_loss` (scalar, see load_balancing_loss; updated only with grad enabled) and
    `load` ([E], share of the token-expert assignments per expert).
    """

    def __init__(
        self,
        dim: int,
        hidden: int,
        num_experts: int,
        top_k: int = 2,
        activation: str = "swiglu",
        shared_expert: bool = True,
        shared_hidden: int | None = None,
        renormalize: bool = True,
        gate_scale: float = 1.0,
        dispatch: str = "sort",
    ) -> None:
        super().__init__()
        if activation not in EXPERT_ACTIVATIONS:
            raise ConfigError(f"moe activation {activation!r} is not one of {', '.join(EXPERT_ACTIVATIONS)}")
        if dispatch not in DISPATCH:
            raise ConfigError(f"moe dispatch {dispatch!r} is not one of {', '.join(DISPATCH)}")
        if num_experts < 1 or not 1 <= top_k <= num_experts:
            raise ConfigError(f"moe needs 1 <= top_k <= num_experts, got top_k={top_k}, num_experts={num_experts}")
        self.num_experts, self.top_k, self.renormalize = num_experts, top_k, renormalize
        self.gate_scale, self.dispatch = gate_scale, dispatch
        self.router = nn.Linear(dim, num_experts, bias=False)
        self.experts = _Experts(num_experts, dim, hidden, activation)
        self.shared = _Experts(1, dim, shared_hidden or hidden, activation) if shared_expert else None
        self.aux_loss: torch.Tensor = torch.zeros(())
        self.load: torch.Tensor = torch.zeros(num_experts)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # [N, D]
        logits = self.router(flat)
        weights, indices = route(logits, self.top_k, self.renormalize)  # [N, k]
        weights = weights * self.gate_scale
        if torch.is_grad_enabled():  # only a training step needs the auxiliary loss (decoding skips it)
            probs = torch.softmax(logits.float(), dim=-1)
            keep = mask.reshape(-1) if mask is not None else None
            self.aux_loss = load_balancing_loss(
                probs[keep] if keep is not None else probs,
                indices[keep] if keep is not None else indices,
                self.num_experts,
            )
        self.load = torch.bincount(indices.reshape(-1), minlength=self.num_experts).float() / max(indices.numel(), 1)
        out = self._dense(flat, weights, indices) if self.dispatch == "dense" else self._sorted(flat, weights, indices)
        if self.shared is not None:
            out = out + self.shared.one(0, flat)
        return out.reshape(shape)

    def activated_parameters(self) -> int:
        """Parameters one token passes through: router + top_k routed experts + the shared expert (the
        convention of ranking/compute.py's parameter report)."""
        per_expert = (self.experts.w_in.numel() + self.experts.w_out.numel()) // self.num_experts
        shared = sum(p.numel() for p in self.shared.parameters()) if self.shared is not None else 0
        return self.router.weight.numel() + self.top_k * per_expert + shared

    def _dense(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        gates = torch.zeros(x.shape[0], self.num_experts, dtype=x.dtype, device=x.device)
        gates.scatter_(1, indices, weights)  # [N, E], zero where a token did not pick the expert
        return torch.einsum("ne,ned->nd", gates, self.experts.all(x))

    def _sorted(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        flat_expert = indices.reshape(-1)  # [N*k]
        order = torch.argsort(flat_expert, stable=True)
        token = order // self.top_k  # token of each sorted assignment
        counts = torch.bincount(flat_expert, minlength=self.num_experts).tolist()
        out = torch.zeros_like(x)
        start = 0
        for e, n in enumerate(counts):  # loop over experts (E), each one batched over its tokens
            if n:
                rows = token[start : start + n]
                y = self.experts.one(e, x[rows]) * weights.reshape(-1)[order[start : start + n]].unsqueeze(-1)
                out.index_add_(0, rows, y)
            start += n
        return out


def moe_aux_loss(module: nn.Module) -> torch.Tensor:
    """Sum of `aux_loss` over every SparseMoE inside `module` (from its last forward); 0 if there is none."""
    losses = [m.aux_loss for m in module.modules() if isinstance(m, SparseMoE)]
    return torch.stack(losses).sum() if losses else torch.zeros(())
