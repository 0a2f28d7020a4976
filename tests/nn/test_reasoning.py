"""Block-causal masks, reasoning position embeddings and the BlockReasoner (nn/reasoning.py)."""

from __future__ import annotations

import torch

from recstack.nn.reasoning import BlockReasoner, ReasoningPositionEmbedding, block_causal_mask, slot_mask


def test_block_causal_mask_element_by_element():
    # base of 3 tokens, 2 blocks of 2: positions 0 1 2 | 3 4 | 5 6
    mask = block_causal_mask(3, 2, 2)
    block = [0, 0, 0, 1, 1, 2, 2]
    for q in range(7):
        for k in range(7):
            assert bool(mask[q, k]) == (block[k] <= block[q]), (q, k)
    assert mask[:3, :3].all() and not mask[:3, 3:].any()  # base: bidirectional, never sees a block
    assert mask[3, 4] and mask[4, 3] and not mask[3, 5]  # own block both ways, not the next one
    assert mask[5:, :].all()  # the last block sees everything


def test_block_causal_mask_with_padding_keeps_self():
    valid = torch.tensor([[True, False, True, True, False]])  # base 3, one block of 2
    mask = block_causal_mask(3, 2, 1, valid)
    assert mask.shape == (1, 5, 5)
    assert not mask[0, 0, 1] and not mask[0, 3, 4] and not mask[0, 2, 4]  # padding keys hidden
    assert mask[0, 1, 1] and mask[0, 4, 4]  # a padding query sees itself
    assert mask[0, 3, 0] and mask[0, 3, 2] and not mask[0, 0, 3]


def test_slot_mask_isolates_candidates():
    slots = torch.tensor([-1, -1, 0, 1, 0, 1])  # 2 shared tokens, 2 candidates, then a block of 2
    mask = slot_mask(slots)
    assert mask[2, 0] and mask[2, 2] and mask[2, 4] and not mask[2, 3] and not mask[2, 5]
    assert mask[0, 1] and not mask[0, 2]  # shared tokens do not read candidates (no 2-hop leak)


def test_reasoning_position_embedding_adds_the_step_vector():
    rpe = ReasoningPositionEmbedding(3, 4)
    block = torch.zeros(2, 5, 4)
    assert torch.equal(rpe(block, 2), rpe.table[1].expand(2, 5, 4))
    try:
        rpe(block, 4)
    except ValueError as exc:
        assert "outside 1..3" in str(exc)
    else:
        raise AssertionError("step 4 of 3 must fail")


def test_reasoner_steps_leave_earlier_states_unchanged():
    torch.manual_seed(0)
    base, valid = torch.randn(2, 6, 8), torch.ones(2, 6, dtype=torch.bool)
    valid[1, 0] = False
    deep = BlockReasoner(8, 2, 2, 16, steps=3).eval()
    states = deep(base, valid, valid[:, -2:])
    assert len(states) == 4 and all(s.shape == (2, 2, 8) for s in states)
    shallow = BlockReasoner(8, 2, 2, 16, steps=1).eval()
    shallow.load_state_dict({k: v for k, v in deep.state_dict().items() if not k.startswith("rpe")}, strict=False)
    shallow.rpe.table.data.copy_(deep.rpe.table.data[:1])
    again = shallow(base, valid, valid[:, -2:])
    # block-causal: appending blocks 2..3 cannot change the base pass or step 1 (the KV-cache property)
    assert torch.allclose(again[0], states[0], atol=1e-6) and torch.allclose(again[1], states[1], atol=1e-6)
    assert not torch.allclose(states[1], states[0])
    # the padding token does not influence real tokens
    changed = base.clone()
    changed[1, 0] += 100.0
    assert torch.allclose(deep(changed, valid, valid[:, -2:])[3][1], states[3][1], atol=1e-5)


def test_kv_cached_steps_match_re_encoding():
    torch.manual_seed(1)
    base, valid = torch.randn(3, 7, 8), torch.rand(3, 7) > 0.2
    valid[:, -1] = True
    cached = BlockReasoner(8, 2, 2, 16, steps=3, kv_cache=True).eval()
    plain = BlockReasoner(8, 2, 2, 16, steps=3, kv_cache=False).eval()
    plain.load_state_dict(cached.state_dict())
    for slots in (None, torch.tensor([-1, -1, -1, -1, 0, 1, 2])):
        a, b = cached(base, valid, valid[:, -3:], slots), plain(base, valid, valid[:, -3:], slots)
        assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b))
    # the reference path is the stack of TransformerBlocks under the block-causal mask
    b = plain(base, valid, valid[:, -3:])
    mask = block_causal_mask(7, 3, 0, valid)
    x = base
    for layer in plain.layers:
        x = layer(x, mask)
    assert torch.allclose(plain.norm(x[:, -3:]), b[0], atol=1e-5)
