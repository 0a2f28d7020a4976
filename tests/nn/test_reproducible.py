import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recstack.nn.reproducible import LayerNorm, attention


def grads_at(threads: int, fn, *inputs: torch.Tensor) -> list[torch.Tensor]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
        out = fn(*leaves)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        return [out.detach()] + [x.grad for x in leaves]
    finally:
        torch.set_num_threads(before)


def test_layer_norm_matches_torch_and_keeps_its_state_dict():
    torch.manual_seed(0)
    ours, theirs = LayerNorm(16, eps=1e-8), nn.LayerNorm(16, eps=1e-8)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5), ours.bias.uniform_(-0.5, 0.5)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(4, 7, 16)
    results = []
    for module in (ours, theirs):
        xi = x.clone().requires_grad_(True)
        out = module(xi)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        results.append([out.detach(), xi.grad, module.weight.grad, module.bias.grad])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("float_mask", [False, True])
def test_attention_matches_scaled_dot_product_attention(float_mask):
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 3, 2, 6, 8).unbind(0)
    mask = torch.ones(6, 6, dtype=torch.bool).tril().expand(3, 1, 6, 6)
    if float_mask:
        mask = torch.randn(3, 1, 6, 6).masked_fill(~mask, float("-inf"))
    want = grads_at(1, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), q, k, v)
    got = grads_at(1, lambda q, k, v: attention(q, k, v, mask), q, k, v)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_gradients_are_bit_identical_at_any_thread_count():
    # SASRec-sized: torch's own LayerNorm / softmax backward differ in the last bits between 1 and 2 threads
    torch.manual_seed(0)
    norm = LayerNorm(64)
    x = torch.randn(128, 50, 64)
    q, k, v = torch.randn(3, 128, 2, 50, 32).unbind(0)
    mask = torch.ones(50, 50, dtype=torch.bool).tril().expand(128, 1, 50, 50)
    for fn, inputs in [
        (lambda x, w, b: F.layer_norm(x, (64,), None, None) * w + b, (x, norm.weight, norm.bias)),
        (lambda q, k, v: attention(q, k, v, mask), (q, k, v)),
    ]:
        one, two, three = (grads_at(t, fn, *inputs) for t in (1, 2, 3))
        for a, b, c in zip(one, two, three):
            assert torch.equal(a, b) and torch.equal(a, c)
