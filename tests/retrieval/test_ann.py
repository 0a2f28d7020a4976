"""AnnIndex: exact flat search, approximate HNSW/IVF recall, history exclusion, persistence."""

from __future__ import annotations

import pytest
import torch

from recstack.data.jagged import Jagged
from recstack.errors import DataError
from recstack.retrieval.ann import AnnConfig, AnnIndex
from tests.helpers import check_at_least, seeded


def clustered(num: int, dim: int = 16, clusters: int = 20, seed: int = 0) -> torch.Tensor:
    """[num, dim] unit vectors scattered around `clusters` random centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g)
    x = centres[torch.randint(0, clusters, (num,), generator=g)] + 0.3 * torch.randn(num, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1)


@pytest.fixture(scope="module")
def data():
    items = clustered(3000, seed=seeded(0))
    queries = clustered(64, seed=seeded(1))
    ids = torch.arange(1, items.shape[0] + 1)  # item ids start at 1 (0 = padding)
    return items, ids, queries


def brute_force(items, ids, queries, k):
    scores, pos = torch.topk(queries @ items.T, k, dim=1)
    return ids[pos], scores


def test_flat_equals_brute_force(data):
    items, ids, queries = data
    got_ids, got_scores = AnnIndex(AnnConfig(kind="flat")).build(items, ids).search(queries, 10)
    want_ids, want_scores = brute_force(items, ids, queries, 10)
    assert torch.equal(got_ids, want_ids)
    assert torch.allclose(got_scores, want_scores, atol=1e-5)


@pytest.mark.parametrize(
    "config", [AnnConfig(kind="hnsw", hnsw_m=16, ef_search=64), AnnConfig(kind="ivf", nlist=32, nprobe=8)]
)
@pytest.mark.learns  # not trained, but an approximate-search quality floor that depends on the data's seed
def test_approximate_recall_vs_flat(data, config):
    items, ids, queries = data
    k = 20
    exact, _ = brute_force(items, ids, queries, k)
    approx, _ = AnnIndex(config).build(items, ids).search(queries, k)
    hits = (approx.unsqueeze(2) == exact.unsqueeze(1)).any(2).float().sum()
    check_at_least(float(hits) / exact.numel(), 0.9, f"recall@{k} of {config.kind} vs exact")


def test_exclusion_drops_history_and_keeps_k(data):
    items, ids, queries = data
    index = AnnIndex().build(items, ids)
    plain, _ = index.search(queries[:3], 10)
    # Row 0 excludes its own top 5, row 1 nothing, row 2 an id outside the catalogue.
    exclude = Jagged.from_lists([plain[0, :5].tolist(), [], [999_999]])
    got, scores = index.search(queries[:3], 10, exclude=exclude)
    assert got.shape == (3, 10) and not torch.isinf(scores).any()
    assert not torch.isin(got[0], plain[0, :5]).any()
    assert torch.equal(got[0, :5], plain[0, 5:10])
    assert torch.equal(got[1], plain[1]) and torch.equal(got[2], plain[2])
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_missing_results_are_zero_and_minus_inf():
    items = clustered(5, dim=4)
    index = AnnIndex().build(items, torch.arange(1, 6))
    got, scores = index.search(items[:2], 8, exclude=Jagged.from_lists([[1, 2], []]))
    assert got.shape == (2, 8)
    assert (got[0, 3:] == 0).all() and torch.isinf(scores[0, 3:]).all()
    assert sorted(got[0, :3].tolist()) == [3, 4, 5]
    assert (got[1, 5:] == 0).all() and sorted(got[1, :5].tolist()) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_save_load_round_trip(data, tmp_path, kind):
    items, ids, queries = data
    index = AnnIndex(AnnConfig(kind=kind, nprobe=4, ef_search=40)).build(items, ids)
    index.save(tmp_path)
    loaded = AnnIndex.load(tmp_path)
    assert loaded.config == index.config and loaded.size == items.shape[0]
    a, sa = index.search(queries, 10)
    b, sb = loaded.search(queries, 10)
    assert torch.equal(a, b) and torch.allclose(sa, sb)


def test_errors(tmp_path):
    with pytest.raises(DataError, match="empty"):
        AnnIndex().search(torch.zeros(1, 4), 3)
    with pytest.raises(DataError, match="missing"):
        AnnIndex.load(tmp_path)
    with pytest.raises(DataError, match="expected vectors"):
        AnnIndex().build(torch.zeros(3, 4), torch.arange(2))


def test_faiss_threads_do_not_leak_into_torch(data):
    items, ids, queries = data
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        AnnIndex(AnnConfig(kind="ivf", threads=2)).build(items, ids).search(queries, 5)
        assert torch.get_num_threads() == 1  # FAISS and torch share OpenMP: the count is restored
    finally:
        torch.set_num_threads(before)
