"""Kunlun blocks: ROTE, SumKronLinear / HSP, sliding-window attention, GDPA, the Wukong mixture."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from recstack.nn.gdpa import GDPA
from recstack.nn.hsp import HSP, SumKronLinear
from recstack.nn.rote import rotate, rote_phases
from recstack.nn.sliding_window import (
    SlidingWindowSelfAttention,
    dense_attention,
    sliding_window_attention,
    window_mask,
)
from recstack.nn.wukong import WukongMoE


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_rote_preserves_norms_and_depends_only_on_phase_differences():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 2, 6, 8)  # [B, H, T, Dh] each
    phases = torch.rand(3, 6) * 5
    rq, rk = rotate(q, phases), rotate(k, phases)
    assert torch.allclose(rq.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    scores = rq @ rk.transpose(-1, -2)
    shifted = rotate(q, phases + 7.3) @ rotate(k, phases + 7.3).transpose(-1, -2)
    assert torch.allclose(scores, shifted, atol=1e-4)
    assert not torch.allclose(scores, q @ k.transpose(-1, -2), atol=1e-2)  # the rotation does act


def test_rote_phases_from_time_gaps_and_position_fallback():
    valid = torch.tensor([[False, True, True, True], [True, True, True, True]])
    age = torch.tensor([[0.0, 7200.0, 3600.0, 60.0], [9e4, 5e4, 1e3, 10.0]]) * valid
    gap = rote_phases(valid, age, 3600.0, "gap")
    # shifting every event (a later request) changes each age but no gap: phases are unchanged
    assert torch.allclose(rote_phases(valid, (age + 500.0) * valid, 3600.0, "gap"), gap)
    assert gap[0, 1] == 0 and torch.isclose(gap[0, 2], torch.log1p(torch.tensor(1.0)))
    assert torch.equal(rote_phases(valid, age, 3600.0, "age"), torch.log1p(age / 3600.0) * valid)
    assert torch.equal(rote_phases(valid, None), torch.arange(4.0).expand(2, 4) * valid)


def test_sum_kron_linear_equals_explicit_kronecker_matrix():
    torch.manual_seed(0)
    layer = SumKronLinear(seeds=6, tokens=3, dim=4, out_dim=5, rank=3)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(7, 6, 4)
    explicit = x.flatten(1) @ layer.full_matrix().T + layer.bias.flatten()
    assert layer.full_matrix().shape == (3 * 5, 6 * 4)
    assert torch.allclose(layer(x).flatten(1), explicit, atol=1e-5)
    assert sum(p.numel() for p in (layer.z, layer.w)) < layer.full_matrix().numel()


def test_hsp_pools_only_valid_events_and_needs_overcomplete_seeds():
    torch.manual_seed(0)
    hsp = HSP(dim=8, heads=2, seeds=6, tokens=3, out_dim=10)
    x = torch.randn(2, 5, 8)
    valid = torch.tensor([[False, False, True, True, True], [True] * 5])
    out = hsp(x, valid)
    assert out.shape == (2, 3, 10)
    noisy = x.clone()
    noisy[0, :2] = 100.0  # padding content must not matter
    assert torch.allclose(hsp(noisy, valid), out, atol=1e-5)
    with pytest.raises(ValueError, match="over-complete"):
        HSP(dim=8, heads=2, seeds=3, tokens=3)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [1, 3, 12])
def test_sliding_window_equals_dense_attention_with_band_mask(causal, window):
    torch.manual_seed(window)
    q, k, v = torch.randn(3, 2, 2, 9, 4)
    valid = torch.ones(2, 9, dtype=torch.bool)
    valid[0, :4] = False  # right-aligned history: padding on the left
    mask = window_mask(valid, window, causal)
    i = torch.arange(9)
    band = (i[:, None] - i[None, :]).abs() < window
    if causal:
        band &= i[:, None] >= i[None, :]
    assert torch.equal(mask[1], band)  # the explicit band, no padding in row 1
    got = sliding_window_attention(q, k, v, valid, window, causal)
    assert torch.allclose(got, dense_attention(q, k, v, mask), atol=1e-5)


def test_sliding_window_flops_grow_linearly_not_quadratically():
    q = k = v = torch.randn(1, 2, 64, 8)
    valid = torch.ones(1, 64, dtype=torch.bool)
    local = _flops(lambda: sliding_window_attention(q, k, v, valid, 4))
    full = _flops(lambda: dense_attention(q, k, v, window_mask(valid, None)))
    assert local == 2 * 2 * (2 * 64 * 4 * 8)  # two matmuls of B·H·T·W·Dh multiply-adds
    assert full == 16 * local  # T / W = 16
    module = SlidingWindowSelfAttention(16, 2, window=None)
    wide = SlidingWindowSelfAttention(16, 2, window=64)
    wide.load_state_dict(module.state_dict())
    x, phases = torch.randn(2, 6, 16), torch.rand(2, 6)
    valid6 = torch.ones(2, 6, dtype=torch.bool)
    assert torch.allclose(module(x, valid6, phases), wide(x, valid6, phases), atol=1e-5)


@pytest.mark.parametrize("activation", ["softmax", "silu"])
def test_gdpa_shapes_padding_and_context_mask(activation):
    torch.manual_seed(0)
    gdpa = GDPA(dim=8, context_dim=6, heads=2, activation=activation, temperature="sqrt_dim")
    x, context = torch.randn(2, 5, 8), torch.randn(2, 4, 6)
    valid = torch.tensor([[False, True, True, True, True], [True] * 5])
    context_mask = torch.tensor([[True, True, True, False], [True] * 4])
    out = gdpa(x, context, context_mask, valid)
    assert out.shape == (2, 5, 8) and torch.equal(out[0, 0], torch.zeros(8))  # padding queries stay 0
    changed = context.clone()
    changed[0, 3] = 50.0  # a masked context key changes nothing
    assert torch.allclose(gdpa(x, changed, context_mask, valid), out, atol=1e-5)
    other_user = context.clone()
    other_user[1, 0] = 50.0  # a visible one changes that row (the context conditions the tokens)
    assert not torch.allclose(gdpa(x, other_user, context_mask, valid)[1], out[1], atol=1e-3)
    maxlen = GDPA(8, 6, 2, activation, "maxlen")
    assert maxlen(x, context).shape == (2, 5, 8)


def test_wukong_mixture_shapes_and_flops_are_countable():
    moe = WukongMoE(n_in=5, n_out=4, dim=8, experts=3, rank=2, hidden=16)
    x = torch.randn(2, 5, 8)
    assert moe(x).shape == (2, 4, 8)
    assert _flops(lambda: moe(x)) > 0


def test_gdpa_fused_path_equals_explicit_matmuls():
    torch.manual_seed(0)
    explicit = GDPA(8, 6, 2, "softmax", "maxlen")
    fused = GDPA(8, 6, 2, "softmax", "maxlen", fused=True)
    fused.load_state_dict(explicit.state_dict())
    x, context = torch.randn(2, 5, 8), torch.randn(2, 4, 6)
    context_mask = torch.tensor([[True, False, True, True], [True] * 4])
    assert torch.allclose(fused(x, context, context_mask), explicit(x, context, context_mask), atol=1e-5)
