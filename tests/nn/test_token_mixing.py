"""Token mixing (RankMixer / TokenMixer-Large) and per-token weights (nn/token_mixing.py, nn/per_token.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recstack.errors import ConfigError
from recstack.nn.per_token import (
    PerTokenLinear,
    PerTokenReLUMoE,
    PerTokenSparseMoE,
    PerTokenSwiGLU,
    RMSNorm,
    per_token_aux_loss,
)
from recstack.nn.token_mixing import MixRevertBlock, RankMixerBlock, mix_heads, revert_heads


@pytest.mark.parametrize("t,d,h", [(6, 16, 4), (4, 8, 4), (3, 12, 6)])
def test_mix_regroups_heads_and_revert_inverts_it(t, d, h):
    x = torch.randn(5, t, d)
    mixed = mix_heads(x, h)
    w = d // h
    assert mixed.shape == (5, h, t * w)
    for head in range(h):  # mixed token `head` = slice `head` of every original token, in token order
        expected = torch.cat([x[:, tok, head * w : (head + 1) * w] for tok in range(t)], -1)
        assert torch.equal(mixed[:, head], expected)
    assert torch.equal(revert_heads(mixed, t), x)


def _swiglu_ffn(tokens: int, width: int) -> PerTokenSwiGLU:
    return PerTokenSwiGLU(tokens, width, 2 * width, down_init=1.0)


def test_mix_revert_block_keeps_residuals_token_aligned():
    torch.manual_seed(0)
    t, d = 6, 16
    x = torch.randn(3, t, d)
    block = MixRevertBlock(t, d, 4, _swiglu_ffn, "mix_revert")
    assert block(x).shape == (3, t, d)
    with torch.no_grad():  # silence the mixing sub-layer: the block must act per token on the ORIGINAL tokens
        block.ffn_mix.down.weight.zero_()
    expected = x + block.ffn_rev(x)
    assert torch.allclose(block(x), expected, atol=1e-6)
    # RankMixer-style mixing without revert puts head slices of other tokens on each residual path
    plain = MixRevertBlock(4, d, 4, _swiglu_ffn, "mix")  # H = T = 4
    with torch.no_grad():
        plain.ffn_mix.down.weight.zero_()
        plain.ffn_rev.down.weight.zero_()
    y = torch.randn(3, plain.tokens, d)
    assert not torch.allclose(plain(y), y) and torch.equal(plain(y), mix_heads(y, plain.tokens))
    with pytest.raises(ConfigError, match="heads == tokens"):
        MixRevertBlock(t, d, 4, _swiglu_ffn, "mix")


def test_small_down_init_starts_blocks_near_identity():
    torch.manual_seed(0)
    x = torch.randn(8, 4, 16)
    small = MixRevertBlock(4, 16, 4, lambda n, w: PerTokenSwiGLU(n, w, 2 * w, down_init=0.01))
    big = MixRevertBlock(4, 16, 4, lambda n, w: PerTokenSwiGLU(n, w, 2 * w, down_init=1.0))
    gap_small, gap_big = (small(x) - x).norm() / x.norm(), (big(x) - x).norm() / x.norm()
    assert gap_small < 0.01 < gap_big


def test_rankmixer_block_shapes_and_post_norm():
    block = RankMixerBlock(4, 16, PerTokenSwiGLU(4, 16, 32, down_init=1.0))
    out = block(torch.randn(2, 4, 16))
    assert out.shape == (2, 4, 16)
    assert torch.allclose(out.mean(-1), torch.zeros(2, 4), atol=1e-5)  # post-LN output


def test_per_token_linear_equals_a_loop_over_tokens():
    torch.manual_seed(0)
    layer = PerTokenLinear(5, 6, 3)
    x = torch.randn(7, 5, 6)
    loop = torch.stack([x[:, t] @ layer.weight[t] + layer.bias[t] for t in range(5)], 1)
    assert torch.allclose(layer(x), loop, atol=1e-6)
    shared = PerTokenLinear(5, 6, 3, shared=True)
    assert shared.weight.shape == (1, 6, 3)
    assert torch.allclose(shared(x), x @ shared.weight[0] + shared.bias[0], atol=1e-6)


def test_per_token_swiglu_equals_a_loop_over_tokens():
    torch.manual_seed(0)
    ffn = PerTokenSwiGLU(4, 8, 12, down_init=1.0)
    with torch.no_grad():
        ffn.norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 4, 8)
    n = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * ffn.norm.weight
    rows = []
    for t in range(4):
        gate, up = (n[:, t] @ ffn.gate_up.weight[t]).chunk(2, -1)
        rows.append((F.silu(gate) * up) @ ffn.down.weight[t])
    assert torch.allclose(ffn(x), torch.stack(rows, 1), atol=1e-5)


def test_rmsnorm_matches_torch():
    if not hasattr(torch.nn, "RMSNorm"):
        pytest.skip("torch < 2.4 has no nn.RMSNorm to compare with")
    x = torch.randn(3, 5, 8)
    assert torch.allclose(RMSNorm(8)(x), torch.nn.RMSNorm(8, eps=1e-6)(x), atol=1e-6)


def test_sparse_per_token_moe_respects_top_k_and_equals_reference():
    torch.manual_seed(0)
    moe = PerTokenSparseMoE(3, 8, 6, num_experts=4, top_k=2, gate_scale=2.0, down_init=1.0, balance_weight=0.01)
    x = torch.randn(10, 3, 8)
    out = moe(x)
    gates = moe.gates
    assert ((gates > 0).sum(-1) == 2).all() and torch.allclose(gates.sum(-1), torch.ones(10, 3))
    assert moe.aux_loss > 0 and torch.allclose(moe.load.sum(-1), torch.ones(3))
    n = moe.norm(x)
    ref = torch.zeros_like(x)
    for t in range(3):  # loop reference: each token position has its own router and experts
        logits = n[:, t] @ moe.router.weight[t]
        top, idx = logits.topk(2, -1)
        weights = torch.softmax(top, -1)
        for slot in range(2):
            w_in, w_out = moe.experts.w_in[t, idx[:, slot]], moe.experts.w_out[t, idx[:, slot]]  # [N, D, 2h], [N, h, D]
            gate, up = torch.einsum("nd,ndh->nh", n[:, t], w_in).chunk(2, -1)
            ref[:, t] += 2.0 * weights[:, slot, None] * torch.einsum("nh,nhd->nd", F.silu(gate) * up, w_out)
        gate, up = (n[:, t] @ moe.shared.gate_up.weight[t]).chunk(2, -1)
        ref[:, t] += (F.silu(gate) * up) @ moe.shared.down.weight[t]
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(per_token_aux_loss(moe), moe.aux_loss)


def test_relu_moe_sparsity_penalty_and_dtsi():
    torch.manual_seed(0)
    moe = PerTokenReLUMoE(3, 8, 6, num_experts=4, budget=0.1, l1_coef=1e-2, dtsi=True)
    x = torch.randn(16, 3, 8)
    coef = float(moe.coef)
    moe.train()
    train_out = moe(x)
    assert moe.aux_loss > 0 and float(moe.coef) > coef  # about half the experts fire: above the 0.1 budget
    moe.eval()
    eval_out = moe(x)
    gates = F.relu(moe.router_infer(x))  # inference: the h_infer router alone
    assert torch.allclose(eval_out, torch.einsum("nte,nted->ntd", gates, moe.experts(x)), atol=1e-5)
    assert not torch.allclose(train_out, eval_out) and float(moe.aux_loss) == 0.0


def test_sparse_per_token_moe_sort_dispatch_equals_dense():
    torch.manual_seed(0)
    dense = PerTokenSparseMoE(3, 8, 6, num_experts=4, top_k=2, gate_scale=2.0, down_init=1.0)
    sort = PerTokenSparseMoE(3, 8, 6, num_experts=4, top_k=2, gate_scale=2.0, down_init=1.0, dispatch="sort")
    sort.load_state_dict(dense.state_dict())
    x = torch.randn(10, 3, 8)
    a, b = dense(x), sort(x)
    assert torch.allclose(a, b, atol=1e-5)
    a.square().sum().backward()
    b.square().sum().backward()
    assert torch.allclose(dense.experts.w_in.grad, sort.experts.w_in.grad, atol=1e-4)
    assert torch.allclose(dense.router.weight.grad, sort.router.weight.grad, atol=1e-4)


def test_moe_activated_parameters():
    moe = PerTokenSparseMoE(3, 8, 6, num_experts=4, top_k=1)
    experts = moe.experts.w_in.numel() + moe.experts.w_out.numel()
    total = sum(p.numel() for p in moe.parameters())
    assert moe.activated_parameters() == total - experts * 3 // 4
    relu = PerTokenReLUMoE(3, 8, 6, num_experts=4, budget=0.25)
    assert relu.activated_parameters() < sum(p.numel() for p in relu.parameters())
