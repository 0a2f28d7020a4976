"""Grouped-query attention and the per-type LayerNorm."""

from __future__ import annotations

import pytest
import torch

from recstack.nn.attention import MultiHeadSelfAttention, causal_mask
from recstack.nn.gqa import GroupedQueryAttention
from recstack.nn.group_norm import GroupLayerNorm


def test_gqa_with_all_kv_heads_equals_multi_head_attention():
    torch.manual_seed(0)
    mha, gqa = MultiHeadSelfAttention(8, 2), GroupedQueryAttention(8, 2, 2)
    with torch.no_grad():  # MHA's qkv rows are [q; k; v]
        gqa.q.weight.copy_(mha.qkv.weight[:8]), gqa.q.bias.copy_(mha.qkv.bias[:8])
        gqa.kv.weight.copy_(mha.qkv.weight[8:]), gqa.kv.bias.copy_(mha.qkv.bias[8:])
        gqa.out.load_state_dict(mha.out.state_dict())
    x = torch.randn(3, 5, 8)
    mask = causal_mask(torch.rand(3, 5) > 0.3)
    assert torch.allclose(gqa(x, mask), mha(x, mask), atol=1e-6)


def test_gqa_shares_kv_heads_and_attends_a_context():
    torch.manual_seed(0)
    gqa, mha = GroupedQueryAttention(12, 4, 2), GroupedQueryAttention(12, 4, 4)
    with torch.no_grad():  # MHA whose K/V heads repeat the GQA heads: 0, 0, 1, 1 -> equal outputs
        mha.q.load_state_dict(gqa.q.state_dict()), mha.out.load_state_dict(gqa.out.state_dict())
        w, b = gqa.kv.weight.view(2, 2, 3, 12), gqa.kv.bias.view(2, 2, 3)
        mha.kv.weight.copy_(w.repeat_interleave(2, dim=1).reshape(24, 12))
        mha.kv.bias.copy_(b.repeat_interleave(2, dim=1).reshape(24))
    assert sum(p.numel() for p in gqa.kv.parameters()) * 2 == sum(p.numel() for p in mha.kv.parameters())
    queries, context = torch.randn(2, 3, 12), torch.randn(2, 6, 12)
    mask = torch.rand(2, 3, 6) > 0.5
    mask[..., 0] = True
    out = gqa(queries, mask, context)
    assert out.shape == (2, 3, 12) and torch.allclose(out, mha(queries, mask, context), atol=1e-6)
    # a masked key has no influence
    changed = context.clone()
    changed[~mask.any(1)] += 10.0
    assert torch.allclose(gqa(queries, mask, changed), out, atol=1e-6)
    with pytest.raises(ValueError, match="multiple"):
        GroupedQueryAttention(12, 4, 3)


def test_group_layer_norm_is_one_layer_norm_per_type():
    torch.manual_seed(0)
    norm = GroupLayerNorm(4, 3)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x, types = torch.randn(2, 5, 4), torch.tensor([[0, 1, 2, 1, 0], [2, 2, 1, 0, 0]])
    out = norm(x, types)
    for g in range(3):
        ln = torch.nn.LayerNorm(4)
        with torch.no_grad():
            ln.weight.copy_(norm.weight[g]), ln.bias.copy_(norm.bias[g])
        assert torch.allclose(out[types == g], ln(x[types == g]), atol=1e-6)
    assert torch.allclose(norm(x, types[0]), torch.stack([norm(x[i : i + 1], types[0])[0] for i in range(2)]))
