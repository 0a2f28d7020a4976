"""Attention blocks: causal masking, the HSTU op against a naive loop, relative-bias buckets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recstack.nn.attention import TransformerBlock, causal_mask
from recstack.nn.hstu import HSTUBlock, attention_scale, hstu_attention
from recstack.nn.positional import (
    LearnedPositionalEmbedding,
    RelativeAttentionBias,
    log_time_buckets,
    relative_position_buckets,
)
from recstack.nn.sequence_encoder import CausalSequenceEncoder


def test_causal_mask_lower_triangular_over_real_items():
    valid = torch.tensor([[False, True, True], [True, True, True]])
    mask = causal_mask(valid)
    assert mask.shape == (2, 3, 3)
    assert mask[1].equal(torch.ones(3, 3, dtype=torch.bool).tril())
    # Padding key 0 is hidden from real queries; the padding query only sees itself (no NaN).
    assert mask[0].tolist() == [[True, False, False], [False, True, False], [False, True, True]]


def naive_hstu(q, k, v, mask, rab, scale, alpha):
    b, h, t, _ = q.shape
    out = torch.zeros(b, h, t, v.shape[-1], dtype=q.dtype)
    for bi in range(b):
        for hi in range(h):
            for i in range(t):
                for j in range(t):
                    if mask[bi, i, j]:
                        logit = alpha * float(q[bi, hi, i] @ k[bi, hi, j]) + float(rab[bi, i, j])
                        weight = logit / (1 + math.exp(-logit)) * float(scale[bi, i, 0])
                        out[bi, hi, i] += weight * v[bi, hi, j]
    return out


@pytest.mark.parametrize("normalization", ["max_len", "length", "causal"])
def test_hstu_attention_matches_naive_loop(normalization):
    torch.manual_seed(0)
    b, h, t, dqk, dv = 2, 2, 5, 3, 4
    q, k, v = torch.randn(b, h, t, dqk), torch.randn(b, h, t, dqk), torch.randn(b, h, t, dv)
    valid = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    mask = causal_mask(valid)
    rab = torch.randn(b, t, t)
    scale = attention_scale(mask, normalization)
    out = hstu_attention(q, k, v, mask, rab, scale, alpha=0.7)
    dense_scale = torch.as_tensor(scale, dtype=torch.float32).expand(b, t, 1)  # per (user, query)
    expected = naive_hstu(q, k, v, mask, rab, dense_scale, 0.7)
    assert torch.allclose(out, expected, atol=1e-5)
    if normalization == "length":
        assert torch.allclose(dense_scale[:, 0, 0], torch.tensor([1 / 3, 1 / 5]))


def test_hstu_attention_is_pointwise_not_softmax():
    q = torch.zeros(1, 1, 2, 2)
    v = torch.ones(1, 1, 2, 1)
    mask = causal_mask(torch.ones(1, 2, dtype=torch.bool))
    out = hstu_attention(q, q, v, mask, None, 1.0)
    assert torch.allclose(out, torch.zeros_like(out))  # SiLU(0) = 0, a softmax would give 1


def test_relative_position_buckets():
    buckets = relative_position_buckets(5, 3)
    assert buckets[4].tolist() == [2, 2, 2, 1, 0]  # distances 4, 3 clipped to the last bucket
    assert buckets[0].tolist() == [0, 0, 0, 0, 0]  # future keys: bucket 0 (masked anyway)


def test_log_time_buckets():
    stamps = torch.tensor([[0, 1, 10, 1000, 10**9]])
    buckets = log_time_buckets(stamps, num_buckets=40, scale=0.301)
    expected = [min(int(math.log(max(g, 1)) / 0.301), 39) for g in (10**9, 10**9 - 1, 10**9 - 10, 10**9 - 1000, 0)]
    assert buckets[0, 4].tolist() == expected
    assert buckets[0].diagonal().tolist() == [0] * 5
    assert buckets.equal(buckets.transpose(1, 2))  # |t_i - t_j| is symmetric


def test_relative_attention_bias_parts():
    bias = RelativeAttentionBias(max_len=4, num_time_buckets=8, use_position=True, use_time=True)
    with torch.no_grad():
        bias.position.copy_(torch.arange(4.0))
        bias.time.copy_(torch.arange(8.0) * 100)
    stamps = torch.tensor([[1, 1, 3, 30]])
    out = bias(4, stamps).detach()
    assert out.shape == (1, 4, 4)
    assert float(out[0, 3, 1]) == 2 + 100 * 7  # distance 2; gap 29 -> ln(29) / 0.301 = 11, clipped to bucket 7
    assert float(out[0, 1, 0]) == 1 + 0  # distance 1; gap 0 -> bucket 0
    assert float(out[0, 2, 0]) == 2 + 100 * 2  # gap 2 -> ln(2) / 0.301 = 2.3 -> bucket 2
    no_time = RelativeAttentionBias(4, use_time=False)
    assert no_time(4, stamps).shape == (1, 4, 4) and no_time.time is None
    assert RelativeAttentionBias(4, use_position=False, use_time=False)(4, stamps) is None


def test_learned_positions_count_from_end_and_start():
    pos = LearnedPositionalEmbedding(4, 2, "end")
    valid = torch.tensor([[False, True, True, True]])
    assert torch.equal(pos(valid)[0, -1], pos.table.weight[4])
    start = LearnedPositionalEmbedding(4, 2, "start")
    assert torch.equal(start(valid)[0], start.table.weight[torch.tensor([0, 1, 2, 3])])


@pytest.mark.parametrize("kind", ["transformer_pre", "transformer_post", "hstu"])
def test_encoder_is_causal(kind):
    """Changing the item at position t + 1 leaves every output at positions <= t unchanged."""
    torch.manual_seed(0)
    dim, t = 8, 6
    if kind == "hstu":
        blocks = [HSTUBlock(dim, heads=2, attention_dim=4, linear_dim=4, dropout=0.1) for _ in range(2)]
        bias = RelativeAttentionBias(t, num_time_buckets=16)
    else:
        blocks = [TransformerBlock(dim, 2, 16, 0.1, 0.1, norm_first=kind == "transformer_pre") for _ in range(2)]
        bias = None
    encoder = CausalSequenceEncoder(20, dim, t, blocks, dropout=0.1, relative_bias=bias).eval()
    items = torch.tensor([[0, 3, 5, 7, 9, 11]])
    stamps = torch.tensor([[0, 10, 20, 400, 5000, 60000]])
    base = encoder(items, stamps)
    for cut in range(1, t - 1):
        changed = items.clone()
        changed[0, cut + 1 :] = torch.tensor([13, 17, 19, 2, 4])[: t - cut - 1]
        later = stamps.clone()
        later[0, cut + 1 :] += 777
        out = encoder(changed, later)
        assert torch.allclose(out[0, : cut + 1], base[0, : cut + 1], atol=1e-6)
        assert not torch.allclose(out[0, -1], base[0, -1])
    assert torch.isfinite(base).all()


@pytest.mark.parametrize("kind", ["transformer", "hstu"])
def test_encoder_output_does_not_depend_on_left_padding(kind):
    torch.manual_seed(0)
    dim, max_len = 8, 7
    if kind == "hstu":
        blocks = [HSTUBlock(dim, 1, 4, 4, max_len=max_len)]
        bias = RelativeAttentionBias(max_len, num_time_buckets=16)
    else:
        blocks, bias = [TransformerBlock(dim, 2, 16)], None
    encoder = CausalSequenceEncoder(20, dim, max_len, blocks, relative_bias=bias).eval()
    short = encoder(torch.tensor([[0, 4, 5, 6]]), torch.tensor([[0, 1, 50, 900]]))
    long = encoder(torch.tensor([[0, 0, 0, 0, 4, 5, 6]]), torch.tensor([[0, 0, 0, 0, 1, 50, 900]]))
    assert torch.allclose(short[0, 1:], long[0, 4:], atol=1e-6)


def test_transformer_block_matches_manual_softmax_attention():
    torch.manual_seed(0)
    block = TransformerBlock(4, heads=1, ffn_dim=8, norm_first=True).eval()
    x = torch.randn(1, 3, 4)
    mask = causal_mask(torch.ones(1, 3, dtype=torch.bool))
    attn = block.attn
    q, k, v = attn.qkv(block.norm1(x)).split(4, dim=-1)
    scores = (q @ k.transpose(1, 2) / 2).masked_fill(~mask, float("-inf"))
    expected = attn.out(F.softmax(scores, -1) @ v)
    assert torch.allclose(attn(block.norm1(x), mask), expected, atol=1e-6)
