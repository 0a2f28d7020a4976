"""Trie-constrained batched beam search: validity, exactness, history masking, unconstrained ablation."""

from __future__ import annotations

import itertools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recstack.data.jagged import Jagged
from recstack.retrieval.generative.base import GenerativeModel
from recstack.retrieval.generative.beam_search import beam_search
from recstack.semantic_ids.semantic_ids import SemanticIds


class TableModel(GenerativeModel):
    """log p(code | user, prefix) from a fixed random table indexed by (user, hash of the prefix)."""

    def __init__(self, sizes: list[int], users: int, seed: int = 0, favour: list[int] | None = None) -> None:
        super().__init__(sizes)
        gen = torch.Generator().manual_seed(seed)
        self.tables = [torch.randn(users, 97, size, generator=gen) * 3 for size in sizes]
        if favour is not None:  # push every level towards one code (to make free decoding go astray)
            for table, code in zip(self.tables, favour):
                table[..., code] += 20.0

    def begin(self, batch):
        return {"user": batch["users"].clone()}

    def step(self, state, prefix, use_cache=True):
        weights = torch.tensor([31, 17, 7, 3, 5][: prefix.shape[1]], dtype=torch.long)
        bucket = (prefix * weights).sum(1) % 97
        return torch.log_softmax(self.tables[prefix.shape[1]][state["user"], bucket], -1), state

    def log_prob(self, user: int, codes: torch.Tensor) -> float:
        """Exact summed log-prob of a full tuple (brute force reference)."""
        total = 0.0
        for level in range(len(self.codebook_sizes)):
            out, _ = self.step({"user": torch.tensor([user])}, codes[None, :level])
            total += float(out[0, codes[level]])
        return total


def random_sids(draw_sizes: list[int], num_items: int, seed: int) -> SemanticIds:
    gen = torch.Generator().manual_seed(seed)
    codes = torch.stack([torch.randint(0, s, (num_items,), generator=gen) for s in draw_sizes], 1)
    return SemanticIds.from_codes(codes, draw_sizes)


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(2, 5), min_size=1, max_size=3),
    num_items=st.integers(1, 30),
    users=st.integers(1, 4),
    k=st.integers(1, 12),
    beam=st.integers(1, 8),
    seed=st.integers(0, 10_000),
    history=st.integers(0, 6),
)
def test_constrained_decoding_only_emits_valid_distinct_items(sizes, num_items, users, k, beam, seed, history):
    sids = random_sids(sizes, num_items, seed)
    model = TableModel(sids.codebook_sizes, users, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    exclude = Jagged.from_lengths(
        torch.randint(1, num_items + 1, (users * history,), generator=gen), torch.full((users,), history)
    )
    batch = {"users": torch.arange(users)}
    result = beam_search(model, batch, sids.prefix_trie, k, beam, exclude=exclude)
    assert result.items.shape == (users, k) and result.codes.shape == (users, k, sids.levels)
    real = result.items > 0
    # every real item is the item its decoded tuple names; empty slots carry -inf and come last
    assert torch.equal(sids.item_of(result.codes[real]), result.items[real])
    assert torch.isinf(result.scores[~real]).all() and torch.isfinite(result.scores[real]).all()
    assert (real[:, :-1] >= real[:, 1:]).all()
    assert result.invalid_share == 0.0
    for u in range(users):
        items = result.items[u][real[u]].tolist()
        assert len(items) == len(set(items))
        seen = set(exclude.row(u).tolist())
        assert not seen & set(items)
        # beams >= k and subtree masking: k items whenever the catalogue has k non-history items
        assert len(items) == min(k, num_items - len(seen))
        assert (result.scores[u][real[u]].diff() <= 1e-6).all()


def test_full_beam_equals_brute_force_top_k():
    sids = random_sids([3, 4], 20, seed=1)
    model = TableModel(sids.codebook_sizes, 2, seed=2)
    tuples = len(list(itertools.product(*[range(s) for s in sids.codebook_sizes])))
    result = beam_search(model, {"users": torch.arange(2)}, sids.prefix_trie, 5, beam_size=tuples)
    for user in range(2):
        scores = torch.tensor([model.log_prob(user, sids.codes[i]) for i in range(1, 21)])
        best = torch.topk(scores, 5)
        assert result.items[user].tolist() == (best.indices + 1).tolist()
        assert torch.allclose(result.scores[user], best.values, atol=1e-5)


def test_unconstrained_reports_invalid_tuples_and_never_returns_them():
    sids = random_sids([5, 5], 6, seed=3)  # 6 items among 25 base tuples: most tuples name no item
    model = TableModel(sids.codebook_sizes, 3, seed=4, favour=[4, 4, 0])
    free = beam_search(model, {"users": torch.arange(3)}, sids.prefix_trie, 4, 4, constrained=False)
    assert free.invalid_share > 0
    real = free.items > 0
    assert torch.equal(sids.item_of(free.codes[real]), free.items[real])
    assert torch.isinf(free.scores[~real]).all()
    constrained = beam_search(model, {"users": torch.arange(3)}, sids.prefix_trie, 4, 4)
    assert constrained.invalid_share == 0.0 and (constrained.items > 0).all()
