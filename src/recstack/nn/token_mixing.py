"""Parameter-free token mixing (RankMixer, METHODS.md §1.1) and TokenMixer-Large's mixing-and-reverting
block (§2.4). Tokens x [N, T, D]; H heads of width D/H.

- `mix_heads(x, H)`: split each token into H heads, new token h = concat over t of head h of token t:
  [N, T, D] -> [N, H, T*D/H]. `revert_heads(h, T)` is its exact inverse, so revert(mix(x)) == x.
- `RankMixerBlock`: S = LN(mix(X) + X); X' = LN(PFFN(S) + S) (post-LN, as the paper). The paper sets
  H = T so the residual is shape-valid; it is not token-aligned (new token h holds slice h of every token).
- `MixRevertBlock` (TokenMixer-Large, pre-norm inside the sub-layers):
      Hm = mix(X);  Hm = Hm + F_mix(Hm)          (per head-token weights, H tokens of width T*D/H)
      Xr = revert(Hm);  X' = X + F_rev(Xr)        (residual to the ORIGINAL X: token-aligned)
  `mode` selects the ablations: "mix_revert" (above), "mix" (RankMixer-style: no revert, needs H = T,
  X' = Hm + F_rev(Hm)), "none" (no mixing: X' = X1 + F_rev(X1), X1 = X + F_mix(X)).
  F_mix / F_rev are built by the caller's factory `make_ffn(tokens, width)` (per-token SwiGLU, MoE, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from recstack.errors import ConfigError

MIX_MODES = ("mix_revert", "mix", "none")


def mix_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[N, T, D] -> [N, H, T*D/H]: mixed token h = (x_1^(h), ..., x_T^(h))."""
    n, t, d = x.shape
    if d % heads:
        raise ConfigError(f"token dim {d} is not divisible by heads {heads}")
    return x.reshape(n, t, heads, d // heads).transpose(1, 2).reshape(n, heads, t * (d // heads))


def revert_heads(h: torch.Tensor, tokens: int) -> torch.Tensor:
    """[N, H, T*D/H] -> [N, T, D]: the inverse of mix_heads (token t gets back its H head slices)."""
    n, heads, width = h.shape
    if width % tokens:
        raise ConfigError(f"mixed token width {width} is not divisible by tokens {tokens}")
    return h.reshape(n, heads, tokens, width // tokens).transpose(1, 2).reshape(n, tokens, heads * (width // tokens))


class RankMixerBlock(nn.Module):
    """RankMixer block: [N, T, D] -> [N, T, D]; ffn is a per-token module [N, T, D] -> [N, T, D].

    mixing=False is the "no token mixing" ablation (S = LN(X + X) is skipped: S = X)."""

    def __init__(self, tokens: int, dim: int, ffn: nn.Module, mixing: bool = True) -> None:
        super().__init__()
        self.tokens, self.mixing, self.ffn = tokens, mixing, ffn
        self.norm_mix, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.norm_mix(mix_heads(x, self.tokens) + x) if self.mixing else x  # H = T heads
        return self.norm_ffn(self.ffn(s) + s)


class MixRevertBlock(nn.Module):
    """TokenMixer-Large block: [N, T, D] -> [N, T, D] (see the module docstring for `mode`)."""

    def __init__(
        self, tokens: int, dim: int, heads: int, make_ffn: Callable[[int, int], nn.Module], mode: str = "mix_revert"
    ) -> None:
        super().__init__()
        if mode not in MIX_MODES:
            raise ConfigError(f"token_mixing must be one of {', '.join(MIX_MODES)}, got {mode!r}")
        if mode != "none" and dim % heads:
            raise ConfigError(f"dim {dim} is not divisible by heads {heads}")
        if mode == "mix" and heads != tokens:
            raise ConfigError(f"token_mixing 'mix' (no revert) needs heads == tokens ({tokens}), got {heads}")
        self.tokens, self.heads, self.mode = tokens, heads, mode
        mixed_tokens, mixed_width = (tokens, dim) if mode == "none" else (heads, tokens * dim // heads)
        self.ffn_mix = make_ffn(mixed_tokens, mixed_width)
        self.ffn_rev = make_ffn(tokens, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            x1 = x + self.ffn_mix(x)
            return x1 + self.ffn_rev(x1)
        h = mix_heads(x, self.heads)
        h = h + self.ffn_mix(h)
        if self.mode == "mix":
            return h + self.ffn_rev(h)
        return x + self.ffn_rev(revert_heads(h, self.tokens))
