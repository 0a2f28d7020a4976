"""Block-wise multi-step latent reasoning (OnePiece, Shopee, arXiv 2509.18091).

Sequence layout: [base tokens (L0) | block 1 (M) | ... | block K (M)]. The base tokens attend to
each other bidirectionally and never to a reasoning block; a token of block b attends to the base
and to blocks 1..b (its own block included, bidirectionally). At step k the last M outputs of the
previous pass (step 1: the last M base tokens, e.g. the candidates) become block k, a learned
reasoning position embedding E_RPE[k] is added to all M tokens, and [base; block 1..k] is encoded
again under the block-causal mask. Because nothing earlier sees a later block, the base and earlier
blocks encode to the same states in every pass: re-encoding equals the paper's KV-cached append
(`BlockReasoner(kv_cache=True)`, the default, runs only the new block; the re-encoding path is kept
as the reference and a test checks that both agree).

Masks are boolean with True = "may attend" (as in nn/attention.py); every token may attend itself,
so a padding query never has an empty softmax row.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from recstack.nn.attention import TransformerBlock


def block_ids(base_len: int, block_size: int, num_blocks: int, device: torch.device | None = None) -> torch.Tensor:
    """[L0 + K * M] block index of every position: 0 for base tokens, b for reasoning block b."""
    blocks = torch.arange(1, num_blocks + 1, device=device).repeat_interleave(block_size)
    return torch.cat([torch.zeros(base_len, dtype=torch.long, device=device), blocks])


def block_causal_mask(
    base_len: int,
    block_size: int,
    num_blocks: int,
    key_valid: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """[T, T] bool (T = base_len + num_blocks * block_size), or [B, T, T] when key_valid [B, T] is given:
    query q may attend key k iff block(k) <= block(q) and k is a real token; always q == k."""
    ids = block_ids(base_len, block_size, num_blocks, device if key_valid is None else key_valid.device)
    mask = ids.unsqueeze(0) <= ids.unsqueeze(1)
    eye = torch.eye(ids.numel(), dtype=torch.bool, device=ids.device)
    if key_valid is None:
        return mask
    return (mask.unsqueeze(0) & key_valid.unsqueeze(1)) | eye.unsqueeze(0)


def slot_mask(slots: torch.Tensor) -> torch.Tensor:
    """slots [T] (-1 = shared token, s >= 0 = a candidate slot) -> [T, T] bool: a slot key is visible only to
    queries of the same slot (candidates invisible to each other and to the shared context)."""
    return (slots.unsqueeze(0) < 0) | (slots.unsqueeze(0) == slots.unsqueeze(1))


class ReasoningPositionEmbedding(nn.Module):
    """E_RPE: one learned vector per reasoning step; forward(block [B, M, D], step k in 1..K) -> block + E[k]."""

    def __init__(self, steps: int, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.steps = steps
        self.table = nn.Parameter(torch.randn(steps, dim) * init_std)

    def forward(self, block: torch.Tensor, step: int) -> torch.Tensor:
        if not 1 <= step <= self.steps:
            raise ValueError(f"reasoning step {step} is outside 1..{self.steps}")
        return block + self.table[step - 1]


class BlockReasoner(nn.Module):
    """A bidirectional pre-LN Transformer over the base tokens, then `steps` block-wise reasoning passes.

    forward(base [B, L0, D], base_valid [B, L0] bool, block_valid [B, M] bool, slots [L0] | None)
      -> list of steps + 1 tensors [B, M, D] (final-LayerNorm states of the last M base tokens, then of
         each reasoning block). slots: candidate slot per base position (-1 shared); when given, blocks
         get slots 0..M-1 and `slot_mask` is applied (the "candidates invisible" ablation).
    feedback_norm: feed the final-LayerNorm output (True) or the raw last-layer output back as a block.
    kv_cache: step k runs only the M new tokens against the cached keys / values of every layer (the
    paper's KV caching); False re-encodes [base; blocks 1..k] each step (reference path, same outputs).
    """

    def __init__(
        self,
        dim: int,
        layers: int,
        heads: int,
        ffn_dim: int,
        steps: int,
        dropout: float = 0.0,
        feedback_norm: bool = True,
        kv_cache: bool = True,
    ) -> None:
        super().__init__()
        self.steps, self.feedback_norm, self.kv_cache = steps, feedback_norm, kv_cache
        self.layers = nn.ModuleList(
            TransformerBlock(dim, heads, ffn_dim, dropout, norm_first=True, eps=1e-6) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.rpe = ReasoningPositionEmbedding(steps, dim) if steps > 0 else None

    def _mask(self, base_len: int, m: int, k: int, valid: torch.Tensor, slots: torch.Tensor | None) -> torch.Tensor:
        mask = block_causal_mask(base_len, m, k, valid)
        if slots is not None:
            mask = mask & slot_mask(torch.cat([slots] + [torch.arange(m, device=slots.device)] * k))
        return mask

    def _layer(
        self, layer: TransformerBlock, x: torch.Tensor, mask: torch.Tensor, cache: list[torch.Tensor] | None
    ) -> torch.Tensor:
        """One pre-LN block for the queries x [B, t, D] against cache keys/values + their own; mask [B, t, T]."""
        attn, (b, t, d) = layer.attn, x.shape
        q, k, v = attn.qkv(layer.norm1(x)).view(b, t, 3, attn.heads, d // attn.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = [k, v]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask.unsqueeze(1), dropout_p=attn.dropout if self.training else 0.0
        )
        x = x + layer.drop(attn.out(y.transpose(1, 2).reshape(b, t, d)))
        return x + layer.ffn(layer.norm2(x))

    def forward(
        self, base: torch.Tensor, base_valid: torch.Tensor, block_valid: torch.Tensor, slots: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        base_len, m = base.shape[1], block_valid.shape[1]
        caches: list[list[torch.Tensor]] = [[] for _ in self.layers]
        blocks: list[torch.Tensor] = []
        states = []
        for k in range(self.steps + 1):  # k = 0: the base pass; k >= 1: reasoning step k (K <= 3)
            valid = torch.cat([base_valid] + [block_valid] * k, 1)
            mask = self._mask(base_len, m, k, valid, slots)
            if self.kv_cache and k > 0:  # only the new block: earlier tokens never see it
                x, mask = blocks[-1], mask[:, -m:]
            else:
                x = torch.cat([base, *blocks], 1)
            for layer, cache in zip(self.layers, caches):
                x = self._layer(cast(TransformerBlock, layer), x, mask, cache if self.kv_cache else None)
            out = x[:, -m:]
            normed = self.norm(out)
            states.append(normed)
            if k < self.steps:
                assert self.rpe is not None  # steps > 0
                blocks.append(self.rpe(normed if self.feedback_norm else out, k + 1))
        return states
