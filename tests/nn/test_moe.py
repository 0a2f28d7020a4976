"""SparseMoE: top-k routing, shared expert, load-balancing loss, dispatch paths against a naive loop."""

from __future__ import annotations

import pytest
import torch

from recstack.errors import ConfigError
from recstack.nn.moe import SparseMoE, load_balancing_loss, moe_aux_loss, route


def test_route_keeps_top_k_and_renormalises():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, -1.0, 4.0, 0.0]])
    weights, indices = route(logits, 2)
    assert indices.tolist() == [[1, 3], [0, 2]]
    assert torch.allclose(weights.sum(-1), torch.ones(2))
    # Renormalised top-k = softmax over the kept logits.
    assert torch.allclose(weights[0], torch.softmax(torch.tensor([3.0, 2.0]), 0))
    raw, _ = route(logits, 2, renormalize=False)
    assert torch.allclose(raw[0], torch.softmax(logits[0], 0)[[1, 3]])
    with pytest.raises(ConfigError, match="top_k"):
        route(logits, 5)


def test_aux_loss_is_one_when_balanced_and_num_experts_when_collapsed():
    e = 4
    balanced = load_balancing_loss(torch.full((8, e), 1 / e), torch.arange(8).remainder(e).view(8, 1), e)
    assert balanced.item() == pytest.approx(1.0)
    collapsed = load_balancing_loss(
        torch.nn.functional.one_hot(torch.zeros(8, dtype=torch.long), e).float(), torch.zeros(8, 1, dtype=torch.long), e
    )
    assert collapsed.item() == pytest.approx(float(e))
    skewed_probs = torch.softmax(torch.tensor([[2.0, 0.0, 0.0, 0.0]]).repeat(8, 1), -1)
    skewed = load_balancing_loss(skewed_probs, torch.zeros(8, 1, dtype=torch.long), e)
    assert 1.0 < skewed.item() < e


def naive_moe(moe: SparseMoE, x: torch.Tensor) -> torch.Tensor:
    """Token-by-token reference."""
    out = torch.zeros_like(x)
    for n in range(x.shape[0]):
        probs = torch.softmax(moe.router(x[n]), -1)
        top = torch.topk(probs, moe.top_k)
        w = top.values / top.values.sum()
        for weight, e in zip(w, top.indices.tolist()):
            out[n] += weight * moe.experts.one(e, x[n : n + 1])[0]
        if moe.shared is not None:
            out[n] += moe.shared.one(0, x[n : n + 1])[0]
    return out


@pytest.mark.parametrize("activation", ["swiglu", "gelu"])
@pytest.mark.parametrize("dispatch", ["sort", "dense"])
def test_dispatch_matches_naive_loop(activation, dispatch):
    torch.manual_seed(0)
    moe = SparseMoE(8, 16, num_experts=5, top_k=2, activation=activation, dispatch=dispatch)
    x = torch.randn(2, 7, 8)
    out = moe(x)
    assert out.shape == x.shape
    assert torch.allclose(out.view(-1, 8), naive_moe(moe, x.view(-1, 8)), atol=1e-5)


def test_sort_and_dense_agree_including_gradients():
    torch.manual_seed(1)
    moe = SparseMoE(8, 16, num_experts=4, top_k=3, shared_expert=False)
    x = torch.randn(11, 8)
    y_sort = moe(x)
    g_sort = torch.autograd.grad(y_sort.square().sum() + moe.aux_loss, moe.experts.w_in)[0]
    moe.dispatch = "dense"
    y_dense = moe(x)
    g_dense = torch.autograd.grad(y_dense.square().sum() + moe.aux_loss, moe.experts.w_in)[0]
    assert torch.allclose(y_sort, y_dense, atol=1e-5)
    assert torch.allclose(g_sort, g_dense, atol=1e-4)


def test_shared_expert_always_active_and_only_top_k_experts_used():
    torch.manual_seed(2)
    moe = SparseMoE(6, 12, num_experts=4, top_k=1, shared_expert=True)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[2] = 1.0  # expert 2 wins for tokens with a positive coordinate sum
    x = torch.rand(5, 6) + 0.1
    expected = moe.experts.one(2, x) + moe.shared.one(0, x)
    assert torch.allclose(moe(x), expected, atol=1e-5)
    assert moe.load.tolist() == [0.0, 0.0, 1.0, 0.0]
    # Zeroing every routed expert leaves exactly the shared expert's output.
    with torch.no_grad():
        moe.experts.w_out.zero_()
    assert torch.allclose(moe(x), moe.shared.one(0, x), atol=1e-6)


def test_mask_keeps_padding_out_of_aux_loss_and_collect_sums_modules():
    torch.manual_seed(3)
    model = torch.nn.Sequential(SparseMoE(4, 8, 3, 1), SparseMoE(4, 8, 3, 2))
    x = torch.randn(2, 5, 4)
    mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
    model[0](x, mask)
    real_only = SparseMoE(4, 8, 3, 1)
    real_only.load_state_dict(model[0].state_dict())
    real_only(x[mask])
    assert model[0].aux_loss.item() == pytest.approx(real_only.aux_loss.item())
    model[1](x)
    total = moe_aux_loss(model)
    assert total.item() == pytest.approx(model[0].aux_loss.item() + model[1].aux_loss.item())
    assert total.requires_grad


def test_gate_scale_scales_routed_part_only():
    torch.manual_seed(4)
    moe = SparseMoE(4, 8, 3, 2, shared_expert=False)
    x = torch.randn(6, 4)
    base = moe(x)
    moe.gate_scale = 2.5
    assert torch.allclose(moe(x), 2.5 * base, atol=1e-5)


def test_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="top_k"):
        SparseMoE(4, 8, num_experts=2, top_k=3)
    with pytest.raises(ConfigError, match="activation"):
        SparseMoE(4, 8, 2, 1, activation="relu6")


def test_activated_parameters_count_top_k_experts_router_and_shared():
    moe = SparseMoE(4, 8, num_experts=5, top_k=2, activation="swiglu", shared_expert=True, shared_hidden=6)
    expert = 4 * 16 + 8 * 4  # SwiGLU: in [4, 2 * 8], out [8, 4]
    shared = 4 * 12 + 6 * 4
    assert moe.activated_parameters() == 4 * 5 + 2 * expert + shared
    assert sum(p.numel() for p in moe.parameters()) == 4 * 5 + 5 * expert + shared
