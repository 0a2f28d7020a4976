"""QueryFormer / CrossAttention: shapes, padding never changes outputs, empty sequences, learning."""

from __future__ import annotations

import pytest
import torch

from recstack.errors import ConfigError
from recstack.nn.query_former import CrossAttention, QueryFormer
from tests.helpers import check_at_most, seeded


@pytest.mark.parametrize("self_attention", [True, False])
def test_shape_and_padding_invariance(self_attention):
    torch.manual_seed(0)
    qf = QueryFormer(8, num_queries=3, heads=2, layers=2, kv_dim=6, self_attention=self_attention).eval()
    x = torch.randn(2, 5, 6)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    out = qf(x, mask)
    assert out.shape == (2, 3, 8)
    # Changing padded values, or appending more padding, leaves the output unchanged.
    x2 = x.clone()
    x2[0, 3:] = 100.0
    longer = torch.cat([x2, torch.randn(2, 4, 6)], 1)
    longer_mask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], 1)
    assert torch.allclose(qf(longer, longer_mask), out, atol=1e-5)
    # Row 0 alone with only its real items gives the same summary (batch composition does not matter).
    assert torch.allclose(qf(x[:1, :3], None), out[:1], atol=1e-5)
    # But real content does matter.
    x3 = x.clone()
    x3[0, 0, 0] += 1.0
    assert not torch.allclose(qf(x3, mask)[0], out[0], atol=1e-4)


def test_empty_sequence_gives_finite_output_equal_to_no_context():
    torch.manual_seed(1)
    attn = CrossAttention(8, 2)
    q = torch.randn(2, 3, 8)
    kv = torch.randn(2, 4, 8)
    mask = torch.tensor([[False] * 4, [True, False, True, False]])
    y = attn(q, kv, mask)
    assert torch.isfinite(y).all()
    assert torch.allclose(y[0], attn.out.bias.expand(3, 8))  # nothing read: only the output bias
    # A per-query mask [B, M, T] works too.
    y3 = attn(q, kv, mask.unsqueeze(1).expand(2, 3, 4))
    assert torch.allclose(y3, y, atol=1e-6)


def test_cached_kv_projection_matches_forward():
    torch.manual_seed(2)
    attn = CrossAttention(8, 4, kv_dim=5)
    q, kv = torch.randn(3, 2, 8), torch.randn(3, 6, 5)
    k, v = attn.project_kv(kv)
    assert k.shape == (3, 4, 6, 2)
    assert torch.allclose(attn.attend(q, k, v, None), attn(q, kv), atol=1e-6)


@pytest.mark.learns
def test_learns_to_summarise_a_masked_sum():
    """Two queries can learn to read the mean of the real items (a task padding would corrupt)."""
    torch.manual_seed(seeded(3))
    qf = QueryFormer(16, num_queries=2, heads=2, layers=1, kv_dim=4)
    head = torch.nn.Linear(32, 4)
    opt = torch.optim.Adam([*qf.parameters(), *head.parameters()], lr=3e-3)
    x = torch.randn(64, 6, 4)
    lengths = torch.randint(1, 7, (64,))
    mask = torch.arange(6) < lengths.unsqueeze(1)
    target = (x * mask.unsqueeze(-1)).sum(1) / lengths.unsqueeze(1)
    x = x.masked_fill(~mask.unsqueeze(-1), 50.0)  # loud padding the model must ignore
    first = None
    for _ in range(150):
        loss = torch.nn.functional.mse_loss(head(qf(x, mask).flatten(1)), target)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    check_at_most(loss.item() / first, 0.2, "final / first MSE")


def test_bad_sizes_raise():
    with pytest.raises(ConfigError, match="num_queries"):
        QueryFormer(8, num_queries=0, heads=2)
    with pytest.raises(ConfigError, match="divisible"):
        CrossAttention(6, 4)
