"""Ranking blocks: DCNv2 cross layers, DIN target attention, MMoE, embedding helpers, task heads."""

from __future__ import annotations

import torch

from recstack.nn.cross import CrossLayer, CrossNetwork, LowRankMixtureCrossLayer
from recstack.nn.embedding import apply_unique, id_embedding
from recstack.nn.mmoe import MMoE
from recstack.nn.target_attention import TargetAttention
from recstack.ranking.heads import TaskTowers, multitask_bce


def test_cross_layer_matches_formula_on_hand_example():
    layer = CrossLayer(2)
    with torch.no_grad():
        layer.linear.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        layer.linear.bias.copy_(torch.tensor([0.5, -1.0]))
    x0, x = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, -1.0]])
    # W x + b = [1, 5] + [0.5, -1] = [1.5, 4];  x0 * that = [1.5, 8];  + x = [4.5, 7]
    assert torch.allclose(layer(x0, x), torch.tensor([[4.5, 7.0]]))


def test_cross_network_stacks_layers_on_x0():
    torch.manual_seed(0)
    net = CrossNetwork(5, num_layers=2)
    x0 = torch.randn(3, 5)
    x1 = x0 * net.layers[0].linear(x0) + x0
    x2 = x0 * net.layers[1].linear(x1) + x1
    assert torch.allclose(net(x0), x2, atol=1e-6)
    assert torch.equal(CrossNetwork(5, num_layers=0)(x0), x0)


def test_low_rank_mixture_single_expert_formula():
    torch.manual_seed(0)
    layer = LowRankMixtureCrossLayer(6, rank=2, num_experts=1)
    x0, x = torch.randn(4, 6), torch.randn(4, 6)
    expert = x0 * (torch.tanh(torch.tanh(x @ layer.v[0]) @ layer.c[0]) @ layer.u[0] + layer.bias)
    assert torch.allclose(layer(x0, x), expert + x, atol=1e-6)  # one expert: the gate is exactly 1
    assert CrossNetwork(6, 3, low_rank=2, num_experts=4)(x0).shape == (4, 6)


def test_target_attention_ignores_padded_history():
    torch.manual_seed(0)
    for softmax in (False, True):
        attention = TargetAttention(4, hidden=(8,), softmax=softmax)
        query, keys = torch.randn(3, 4), torch.randn(3, 5, 4)
        mask = torch.tensor([[True] * 5, [False, False, True, True, True], [False] * 5])
        out = attention(query, keys, mask)
        changed = keys.clone()
        changed[~mask] = torch.randn(int((~mask).sum()), 4) * 100
        assert torch.allclose(attention(query, changed, mask), out, atol=1e-5)
        assert torch.equal(out[2], torch.zeros(4))  # no history -> zero interest vector
        weights = attention.weights(query, keys, mask)
        assert torch.equal(weights[~mask], torch.zeros(int((~mask).sum())))
        if softmax:
            assert torch.allclose(weights[:2].sum(1), torch.ones(2))


def test_target_attention_split_first_layer_equals_concatenation():
    torch.manual_seed(1)
    attention = TargetAttention(3, hidden=(6, 4))
    query, keys = torch.randn(2, 3), torch.randn(2, 7, 3)
    q = query.unsqueeze(1).expand_as(keys)
    naive = attention.score(torch.cat([q, keys, q - keys, q * keys], -1)).squeeze(-1)
    assert torch.allclose(attention.logits(query, keys), naive, atol=1e-5)


def test_mmoe_gates_sum_to_one_and_shapes():
    torch.manual_seed(0)
    mmoe = MMoE(10, num_tasks=3, num_experts=4, hidden=[16, 8])
    x = torch.randn(5, 10)
    gates = mmoe.gate_weights(x)
    assert gates.shape == (3, 5, 4)
    assert torch.allclose(gates.sum(-1), torch.ones(3, 5))
    assert mmoe(x).shape == (3, 5, 8)


def test_apply_unique_paths_agree_and_id_embedding_zero_row():
    torch.manual_seed(0)
    table = id_embedding(7, 3)
    assert torch.equal(table.weight[0], torch.zeros(3))
    ids = torch.tensor([[1, 2, 2, 5], [0, 6, 1, 1]])
    direct = table(ids)
    assert torch.allclose(apply_unique(table, ids), direct)  # distinct ids only
    assert torch.allclose(apply_unique(table, ids, num_ids=7), direct)  # whole table (7 ids <= 8 lookups)


def test_task_towers_and_weighted_bce():
    torch.manual_seed(0)
    towers = TaskTowers(["a", "b"], in_dim=4, hidden=[3])
    logits = towers(torch.randn(2, 5, 4))
    assert set(logits) == {"a", "b"} and logits["a"].shape == (5,)
    assert towers(torch.randn(5, 4))["b"].shape == (5,)  # shared input
    labels = {"a": torch.ones(5), "b": torch.zeros(5)}
    losses = multitask_bce(logits, labels, {"a": 2.0})
    expected = 2.0 * losses["a"] + losses["b"]
    assert torch.allclose(losses["loss"], expected)
