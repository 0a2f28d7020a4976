"""Per-token weights: every token position owns its parameters, all positions run as one batched einsum
(RankMixer's per-token FFN, METHODS.md §1.1; TokenMixer-Large's per-token SwiGLU and Sparse-Pertoken
MoE, §2.4). Shapes: x [..., T, D] -> [..., T, D_out]; token t only ever meets weights[t].

- `RMSNorm(dim)`: x / rms(x) * g (torch.nn.RMSNorm needs torch >= 2.4; the project pins >= 2.2).
- `PerTokenLinear(T, in, out)`: weight [T, in, out] (`shared=True`: one [in, out] for every token, the
  "shared FFN" ablation); `init_scale` multiplies the default uniform(+-1/sqrt(in)) init (0.01 = the
  small "Rezero-like" init of down-projections).
- `PerTokenFFN`: RankMixer's Linear -> GELU -> Linear per token.
- `PerTokenSwiGLU`: pre-RMSNorm, then W_down(SiLU(W_gate x) * W_up x) per token, no biases.
- `PerTokenSparseMoE`: per token E fine-grained SwiGLU experts + one shared expert, top-k softmax routing
  (`route` of nn/moe.py) and gate scaling alpha: alpha * sum_{j in topk} g_j E_tj(x) + S_t(x).
  Dense-compute masking (every expert runs, unselected ones get gate 0): the CPU reference path.
- `PerTokenReLUMoE`: RankMixer's ReLU-routed MoE (G = ReLU(h(x)), v = sum_j G_j e_j(x)) with the L1
  sparsity penalty, an adaptive coefficient that tracks an active-expert budget, and DTSI (two routers).
MoE modules keep `aux_loss` (scalar) of their last forward; `per_token_aux_loss(model)` sums them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recstack.errors import ConfigError
from recstack.nn.moe import route


class RMSNorm(nn.Module):
    """[..., D] -> [..., D]: x * rsqrt(mean(x^2) + eps) * weight (no centring, no bias)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class PerTokenLinear(nn.Module):
    """x [..., T, in] -> [..., T, out] with weight [T, in, out] (one matrix per token, one einsum)."""

    def __init__(
        self, tokens: int, in_dim: int, out_dim: int, bias: bool = True, shared: bool = False, init_scale: float = 1.0
    ) -> None:
        super().__init__()
        n, bound = 1 if shared else tokens, init_scale / math.sqrt(in_dim)
        self.tokens, self.shared = tokens, shared
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(n, out_dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] != self.tokens:
            raise ConfigError(f"PerTokenLinear built for {self.tokens} tokens got {x.shape[-2]}")
        y = x @ self.weight[0] if self.shared else torch.einsum("...ti,tio->...to", x, self.weight)
        return y + self.bias if self.bias is not None else y


class PerTokenFFN(nn.Module):
    """RankMixer per-token FFN: [..., T, D] -> [..., T, D] = W2_t GELU(W1_t x + b1_t) + b2_t."""

    def __init__(self, tokens: int, dim: int, hidden: int, shared: bool = False, down_init: float = 1.0) -> None:
        super().__init__()
        self.up = PerTokenLinear(tokens, dim, hidden, shared=shared)
        self.down = PerTokenLinear(tokens, hidden, dim, shared=shared, init_scale=down_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class PerTokenSwiGLU(nn.Module):
    """[..., T, D] -> [..., T, D] = W_down(SiLU(W_gate n) * W_up n), n = RMSNorm(x) when pre_norm.

    gate and up are one [T, D, 2h] einsum; no biases (Llama style); down-projection init x down_init."""

    def __init__(
        self, tokens: int, dim: int, hidden: int, shared: bool = False, pre_norm: bool = True, down_init: float = 0.01
    ) -> None:
        super().__init__()
        self.norm = RMSNorm(dim) if pre_norm else nn.Identity()
        self.gate_up = PerTokenLinear(tokens, dim, 2 * hidden, bias=False, shared=shared)
        self.down = PerTokenLinear(tokens, hidden, dim, bias=False, shared=shared, init_scale=down_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(self.norm(x)).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class PerTokenExperts(nn.Module):
    """E experts per token, all run densely: x [N, T, D] -> [N, T, E, D].

    activation "swiglu": w_in [T, E, D, 2h] (gate | up), "gelu": w_in [T, E, D, h] + biases;
    w_out [T, E, h, D] with init x down_init."""

    def __init__(
        self, tokens: int, num: int, dim: int, hidden: int, activation: str = "swiglu", down_init: float = 1.0
    ) -> None:
        super().__init__()
        if activation not in ("swiglu", "gelu"):
            raise ConfigError(f"per-token expert activation must be 'swiglu' or 'gelu', got {activation!r}")
        self.activation, width = activation, (2 * hidden if activation == "swiglu" else hidden)
        self.w_in = nn.Parameter(torch.empty(tokens, num, dim, width).uniform_(-(dim**-0.5), dim**-0.5))
        bound = down_init / math.sqrt(hidden)
        self.w_out = nn.Parameter(torch.empty(tokens, num, hidden, dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.einsum("ntd,tedh->nteh", x, self.w_in)
        if self.activation == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h)
        return torch.einsum("nteh,tehd->nted", h, self.w_out)


class PerTokenSparseMoE(nn.Module):
    """TokenMixer-Large Sparse-Pertoken MoE: x [N, T, D] -> [N, T, D].

    out_t = gate_scale * sum_{j in TopK(x_t)} g_j E_{t,j}(n_t) + Shared_t(n_t), n = RMSNorm(x) (pre_norm).
    top_k counts routed experts only (the paper's k includes the shared one: its TopK(k-1)); g is a
    softmax over the selected logits. After forward: `gates` [N, T, E] (exactly top_k non-zero per
    token), `load` [T, E] and `aux_loss` = balance_weight * per-position Switch load-balancing loss.
    dispatch "dense": every expert on every token, masked by the gates (CPU reference); "sort": the
    N*T*k assignments sorted by (token position, expert), each of the T*E experts run once on its rows
    (compute ~ k/E of dense; a loop over the T*E experts, never over rows). Both give the same output.
    """

    def __init__(
        self,
        tokens: int,
        dim: int,
        hidden: int,
        num_experts: int,
        top_k: int,
        shared_expert: bool = True,
        gate_scale: float = 1.0,
        pre_norm: bool = True,
        down_init: float = 0.01,
        balance_weight: float = 0.0,
        dispatch: str = "dense",
    ) -> None:
        super().__init__()
        if dispatch not in ("dense", "sort"):
            raise ConfigError(f"moe dispatch must be 'dense' or 'sort', got {dispatch!r}")
        if num_experts < 1 or not 1 <= top_k <= num_experts:
            raise ConfigError(f"moe needs 1 <= top_k <= num_experts, got top_k={top_k}, num_experts={num_experts}")
        self.num_experts, self.top_k = num_experts, top_k
        self.gate_scale, self.balance_weight, self.dispatch = gate_scale, balance_weight, dispatch
        self.norm = RMSNorm(dim) if pre_norm else nn.Identity()
        self.router = PerTokenLinear(tokens, dim, num_experts, bias=False)
        self.experts = PerTokenExperts(tokens, num_experts, dim, hidden, "swiglu", down_init)
        self.shared = (
            PerTokenSwiGLU(tokens, dim, hidden, pre_norm=False, down_init=down_init) if shared_expert else None
        )
        self.aux_loss = torch.zeros(())
        self.gates = torch.zeros(0)
        self.load = torch.zeros(tokens, num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm(x)
        logits = self.router(n)  # [N, T, E]
        weights, indices = route(logits.reshape(-1, self.num_experts), self.top_k)  # softmax over the top-k
        gates = logits.new_zeros(logits.numel() // self.num_experts, self.num_experts).scatter(1, indices, weights)
        gates = gates.view(logits.shape)
        self.gates = gates.detach()
        assigned = F.one_hot(indices, self.num_experts).sum(1).view_as(logits).float()  # [N, T, E] in {0, 1}
        self.load = assigned.mean(0).detach() / self.top_k
        if self.balance_weight > 0 and self.training:  # Switch loss per token position (own experts each)
            probs = torch.softmax(logits.float(), -1).mean(0)  # [T, E]
            self.aux_loss = self.balance_weight * self.num_experts * (self.load * probs).sum(-1).mean()
        else:
            self.aux_loss = x.new_zeros(())
        if self.dispatch == "dense":
            out = torch.einsum("nte,nted->ntd", gates, self.experts(n))
        else:
            out = self._sorted(n, weights, indices)
        out = self.gate_scale * out
        return out + self.shared(n) if self.shared is not None else out

    def _sorted(self, n: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """n [N, T, D]; weights, indices [N*T, k] -> routed output [N, T, D] (no gate_scale, no shared)."""
        tokens, e, k = n.shape[1], self.num_experts, self.top_k
        flat = n.reshape(-1, n.shape[-1])  # row r = (sample r // T, position r % T)
        position = torch.arange(flat.shape[0], device=n.device) % tokens
        expert = (position.unsqueeze(1) * e + indices).reshape(-1)  # [N*T*k] in 0..T*E-1
        order = torch.argsort(expert, stable=True)
        rows, w = order // k, weights.reshape(-1)[order].unsqueeze(-1)
        w_in = self.experts.w_in.reshape(tokens * e, *self.experts.w_in.shape[2:])  # [T*E, D, 2h]
        w_out = self.experts.w_out.reshape(tokens * e, *self.experts.w_out.shape[2:])  # [T*E, h, D]
        out, start = torch.zeros_like(flat), 0
        for g, count in enumerate(torch.bincount(expert, minlength=tokens * e).tolist()):  # loop over T*E experts
            if count:
                r = rows[start : start + count]
                gate, up = (flat[r] @ w_in[g]).chunk(2, dim=-1)
                out.index_add_(0, r, (F.silu(gate) * up) @ w_out[g] * w[start : start + count])
            start += count
        return out.view_as(n)

    def activated_parameters(self) -> int:
        """Parameters one sample passes through: all but the (E - k) / E unselected routed experts."""
        experts = sum(p.numel() for p in self.experts.parameters())
        total = sum(p.numel() for p in self.parameters())
        return total - experts + experts * self.top_k // self.num_experts


class PerTokenReLUMoE(nn.Module):
    """RankMixer sparse MoE: x [N, T, D] -> [N, T, D] = sum_j G_tj e_tj(x_t), G = ReLU(h_t(x_t)).

    Sparsity comes from aux_loss = coef * sum_j G_tj (mean over rows and tokens); `coef` (a buffer) is
    multiplied by (1 + adapt_rate) while the active-expert share exceeds `budget`, divided otherwise.
    dtsi (dense-train / sparse-infer): a second router h_infer carries the L1 penalty; training mixes
    with (G_train + G_infer) / 2 [I], inference uses G_infer alone. Experts are GELU FFNs (hidden each).
    """

    coef: torch.Tensor

    def __init__(
        self,
        tokens: int,
        dim: int,
        hidden: int,
        num_experts: int,
        budget: float = 0.25,
        l1_coef: float = 1e-3,
        adapt_rate: float = 0.01,
        dtsi: bool = True,
    ) -> None:
        super().__init__()
        self.budget, self.adapt_rate = budget, adapt_rate
        self.router = PerTokenLinear(tokens, dim, num_experts)
        self.router_infer = PerTokenLinear(tokens, dim, num_experts) if dtsi else None
        self.experts = PerTokenExperts(tokens, num_experts, dim, hidden, "gelu")
        self.register_buffer("coef", torch.tensor(float(l1_coef)))
        self.aux_loss, self.active = torch.zeros(()), torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sparse = F.relu(self.router(x) if self.router_infer is None else self.router_infer(x))  # [N, T, E]
        gates = sparse if (self.router_infer is None or not self.training) else (F.relu(self.router(x)) + sparse) / 2
        self.active = (sparse > 0).float().mean().detach()
        if self.training:
            self.aux_loss = self.coef.clone() * sparse.sum(-1).mean()  # clone: coef is updated in place below
            with torch.no_grad():  # track the budget: raise the L1 pressure while too many experts fire
                self.coef.mul_(1 + self.adapt_rate if self.active > self.budget else 1 / (1 + self.adapt_rate))
        else:
            self.aux_loss = x.new_zeros(())
        return torch.einsum("nte,nted->ntd", gates, self.experts(x))

    def activated_parameters(self) -> int:
        """Inference-time estimate: the serving router + the `budget` share of the experts."""
        experts = sum(p.numel() for p in self.experts.parameters())
        routers = sum(p.numel() for p in self.router.parameters())
        return routers + int(experts * self.budget)


def per_token_aux_loss(module: nn.Module) -> torch.Tensor:
    """Sum of the `aux_loss` of every per-token MoE inside `module` (from its last forward); 0 if none."""
    losses = [m.aux_loss for m in module.modules() if isinstance(m, (PerTokenSparseMoE, PerTokenReLUMoE))]
    if losses:
        return torch.stack(losses).sum()
    first = next(module.parameters(), None)
    return torch.zeros((), device=first.device if first is not None else None)
