"""LayerNorm and softmax attention whose CPU training gives the same bits with any thread count.

Two of torch's CPU kernels sum in an order that follows the thread count, so a model using them
trains slightly different weights with 1 and 2 threads (docs/BENCHMARKS.md, "Determinism"):
- LayerNorm backward adds up the weight / bias gradients over rows in per-thread partial sums;
- softmax backward (inside scaled_dot_product_attention's CPU path) varies in the last bits.
Here the same maths runs on ops whose reductions stay within one output element (parallel over the
outputs only): the affine part of LayerNorm is an ordinary multiply-add, whose gradients autograd sums
over the rows per feature, and the attention softmax has an explicit backward, y * (g - Σ g·y).
With MKL in strict CNR mode (MKL_CBWR=AVX2,STRICT, set by `recstack run`) SASRec's training is then
bit-identical at 1 and 2 threads. On CUDA both fall back to torch's fused kernels.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm (same parameters and state dict) with a thread-count-invariant backward on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        y = F.layer_norm(x, self.normalized_shape, None, None, self.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


class _Softmax(torch.autograd.Function):
    """softmax over the last dim; backward y * (g - (g * y).sum(-1)), reduced within each row."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor) -> torch.Tensor:
        y = torch.softmax(scores, dim=-1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        gy = grad * y
        return gy - y * gy.sum(dim=-1, keepdim=True)


def softmax_last(scores: torch.Tensor) -> torch.Tensor:
    """softmax over the last dim with a thread-count-invariant backward."""
    return _Softmax.apply(scores)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor, dropout_p: float = 0.0
) -> torch.Tensor:
    """F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p) for [B, H, T, Dh] inputs and a
    boolean (True = may attend) or additive float mask; on CPU the math path with `softmax_last`."""
    if q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if attn_mask.dtype == torch.bool:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    else:
        scores = scores + attn_mask
    weights = softmax_last(scores)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v
