"""SemanticIds: de-duplication, the prefix trie (property-tested), lookups, diagnostics, persistence."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recstack.errors import DataError
from recstack.registry import build
from recstack.semantic_ids import SemanticIds, code_diagnostics, dedup_level


@st.composite
def codebooks(draw):
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    n = draw(st.integers(1, 30))
    codes = [[draw(st.integers(0, s - 1)) for s in sizes] for _ in range(n)]
    return torch.tensor(codes, dtype=torch.long).reshape(n, len(sizes)), sizes


def all_paths(sids: SemanticIds) -> torch.Tensor:
    """Every full tuple the trie admits, by expanding allowed_next depth by depth (batched)."""
    prefixes = torch.zeros(1, 0, dtype=torch.long)
    for _ in range(sids.levels):
        mask = sids.allowed_next(prefixes)
        rows, tokens = torch.nonzero(mask, as_tuple=True)
        prefixes = torch.cat([prefixes[rows], tokens[:, None]], 1)
    return prefixes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(codebooks())
def test_trie_admits_exactly_the_items(book):
    codes, sizes = book
    sids = SemanticIds.from_codes(codes, sizes)
    paths = all_paths(sids)
    items = sids.item_of(paths)
    assert bool((items > 0).all())  # every allowed path ends at an item
    assert sorted(items.tolist()) == list(range(1, codes.shape[0] + 1))  # every item reachable, once
    assert torch.equal(sids.codes_of(items), paths)
    # every other tuple in the (small) code space is rejected
    space = torch.tensor(list(itertools.product(*[range(s) for s in sids.codebook_sizes])), dtype=torch.long)
    known = {tuple(p) for p in paths.tolist()}
    unknown = torch.tensor([t for t in space.tolist() if tuple(t) not in known], dtype=torch.long)
    if unknown.numel():
        assert bool((sids.item_of(unknown) == 0).all())


@settings(max_examples=40, deadline=None)
@given(codebooks(), st.data())
def test_items_with_prefix_matches_brute_force(book, data):
    codes, sizes = book
    sids = SemanticIds.from_codes(codes, sizes)
    depth = data.draw(st.integers(0, sids.levels))
    prefix = torch.tensor([data.draw(st.integers(-1, s)) for s in sids.codebook_sizes[:depth]], dtype=torch.long)
    expected = sorted(i for i in range(1, sids.num_items + 1) if sids.codes[i, :depth].tolist() == prefix.tolist())
    assert sorted(sids.items_with_prefix(prefix).tolist()) == expected


def test_dedup_ranks_items_in_id_order():
    codes = torch.tensor([[1, 2], [0, 0], [1, 2], [1, 2], [0, 0], [3, 1]])
    assert dedup_level(codes).tolist() == [0, 0, 1, 2, 1, 0]
    sids = SemanticIds.from_codes(codes, [4, 3])
    assert sids.codebook_sizes == [4, 3, 3]
    assert sids.codes.shape == (7, 3) and sids.codes[0].tolist() == [0, 0, 0]  # row 0 = padding
    assert sids.codes[1:, 2].tolist() == [0, 0, 1, 2, 1, 0]
    assert torch.unique(sids.codes[1:], dim=0).shape[0] == 6
    assert sids.item_of(torch.tensor([[1, 2, 1], [1, 2, 3], [9, 0, 0], [1, -1, 0]])).tolist() == [3, 0, 0, 0]


def test_allowed_next_masks_and_batched_prefix_lookup():
    codes = torch.tensor([[1, 2], [0, 0], [1, 0], [3, 1]])
    sids = SemanticIds.from_codes(codes, [4, 3])
    root = sids.allowed_next(torch.zeros(2, 0, dtype=torch.long))
    assert root.shape == (2, 4) and root[0].tolist() == [True, True, False, True]
    second = sids.allowed_next(torch.tensor([[1], [2], [5]]))
    assert second.tolist() == [[True, False, True], [False, False, False], [False, False, False]]
    assert sids.allowed_next(torch.tensor([[1, 2]])).tolist() == [[True]]  # dedup level has one value here
    rows = sids.items_with_prefix(torch.tensor([[1], [0], [2]]))
    assert rows.lengths().tolist() == [2, 1, 0] and rows.values.tolist() == [3, 1, 2]
    with pytest.raises(DataError, match="prefix"):
        sids.allowed_next(torch.zeros(1, 3, dtype=torch.long))


def test_from_codes_validates():
    with pytest.raises(DataError, match="item 2 at level 1"):
        SemanticIds.from_codes(torch.tensor([[0, 0], [1, 5]]), [2, 3])
    with pytest.raises(DataError, match="num_items, 2"):
        SemanticIds.from_codes(torch.zeros(3, 3, dtype=torch.long), [2, 3])


def test_diagnostics_on_known_codes():
    codes = torch.tensor([[0, 0], [0, 0], [0, 1], [1, 1]])
    report = code_diagnostics(codes, [2, 4])
    assert report["utilisation"] == [1.0, 0.5]
    assert report["collision_rate"] == 0.5 and report["exclusivity"] == 0.5
    assert report["unique_tuples"] == 3 and report["max_items_per_tuple"] == 2
    assert report["unique_prefixes"] == [2, 3]
    p = torch.tensor([0.75, 0.25])
    assert report["entropy_bits"][0] == pytest.approx(float(-(p * p.log2()).sum()))
    assert report["entropy_normalised"][1] == pytest.approx(1.0 / math.log2(4))


def test_from_quantizer_save_load_and_reconstruction(tmp_path):
    g = torch.Generator().manual_seed(0)
    items = torch.randn(201, 8, generator=g)
    items[0] = 0.0  # padding row
    quantizer = build("quantizer", {"name": "rq_kmeans", "levels": 2, "codebook_size": 4, "threads": 1})
    quantizer.fit(items[1:])
    sids = SemanticIds.from_quantizer(quantizer, items)
    assert sids.num_items == 200 and sids.levels == 3
    assert torch.equal(sids.base_codes[1:], quantizer.encode(items[1:]))
    report = sids.diagnostics(items)
    assert 0 < report["reconstruction_rmse"] < float(items[1:].std())
    assert report["dedup_level_size"] == report["max_items_per_tuple"]
    sids.save(tmp_path / "sids")
    loaded = SemanticIds.load(tmp_path / "sids")
    assert torch.equal(loaded.codes, sids.codes) and loaded.codebook_sizes == sids.codebook_sizes
    assert loaded.diagnostics(items) == report
    assert torch.equal(loaded.item_of(sids.codes[1:]), torch.arange(1, 201))
    with pytest.raises(DataError, match="no readable saved SemanticIds"):
        SemanticIds.load(tmp_path / "missing")
