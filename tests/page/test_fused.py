"""Fused page score: task weights, channel evidence, and weight tuning on held-out targets."""

from __future__ import annotations

import pytest
import torch

from recstack.data.batch import Candidates
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError
from recstack.page.fused import PageConfig, arrange_page, fuse_scores, tune_page_weights
from recstack.retrieval.merge import merge_candidates


def merged() -> Candidates:
    seq = Candidates.from_topk(torch.tensor([[5, 6, 7], [8, 9, 10]]), torch.tensor([[3.0, 2.0, 1.0]] * 2), "seq")
    pop = Candidates.from_topk(torch.tensor([[7, 6, 5], [10, 9, 8]]), torch.tensor([[3.0, 2.0, 1.0]] * 2), "pop")
    return merge_candidates({"seq": seq, "pop": pop}, None, k_total=3)


def test_channel_weights_reorder_the_page() -> None:
    cands = merged()
    flat = {"like": torch.full(cands.items.shape, 0.5)}
    page = arrange_page(cands, fuse_scores(flat, {}, cands, {"seq": 1.0}), 2)
    assert page.items.tolist() == [[5, 6], [8, 9]]
    page = arrange_page(cands, fuse_scores(flat, {}, cands, {"pop": 1.0}), 2)
    assert page.items.tolist() == [[7, 6], [10, 9]]
    with pytest.raises(ConfigError, match="nope"):
        fuse_scores(flat, {}, cands, {"nope": 1.0})


def test_tuning_finds_the_channel_that_predicts_the_targets() -> None:
    cands = merged()
    # the ranker prefers the last items; the held-out targets are the seq channel's first items
    ranker = {"like": (cands.items == 7).float() * 0.3 + (cands.items == 10).float() * 0.3}
    targets = Jagged.from_lists([[5], [8]])
    result = tune_page_weights(cands, ranker, {}, targets, PageConfig(k=1))
    assert result["ndcg_before"] == 0.0 and result["ndcg_after"] == 1.0
    assert result["channel_weights"].get("seq", 0) > 0 and "pop" not in result["channel_weights"]
