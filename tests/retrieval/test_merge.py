"""merge_candidates and channel_report on hand examples."""

from __future__ import annotations

import pytest
import torch

from recstack.data.batch import Candidates
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError, DataError
from recstack.retrieval.merge import channel_report, merge_candidates

INF = float("inf")


def channels() -> dict[str, Candidates]:
    itemcf = Candidates.from_topk(
        torch.tensor([[1, 2, 3], [4, 5, 0], [1, 0, 0]]),
        torch.tensor([[0.9, 0.5, 0.1], [0.8, 0.2, -INF], [1.0, -INF, -INF]]),
        "itemcf",
    )
    swing = Candidates.from_topk(
        torch.tensor([[2, 6, 1], [7, 4, 8], [0, 0, 0]]),
        torch.tensor([[3.0, 2.0, 1.0], [5.0, 4.0, 3.0], [-INF, -INF, -INF]]),
        "swing",
    )
    return {"itemcf": itemcf, "swing": swing}


def test_rank_merge_keeps_best_score_and_all_tags() -> None:
    merged = merge_candidates(channels(), None, k_total=5)
    assert merged.channel_names == ["itemcf", "swing"]
    assert merged.items.tolist() == [[1, 2, 6, 3, 0], [4, 7, 5, 8, 0], [1, 0, 0, 0, 0]]
    assert merged.channels.tolist() == [[3, 3, 2, 1, 0], [3, 2, 1, 2, 0], [1, 0, 0, 0, 0]]
    torch.testing.assert_close(merged.scores[0], torch.tensor([1.0, 1.0, 0.5, 1 / 3, -INF]))
    assert merged.channel_tags(0, 0) == ["itemcf", "swing"]


def test_raw_scores_and_truncation() -> None:
    merged = merge_candidates(channels(), None, k_total=3, normalise="raw")
    assert merged.items.tolist() == [[2, 6, 1], [7, 4, 8], [1, 0, 0]]
    assert merged.scores[0].tolist() == [3.0, 2.0, 1.0] and merged.channels[0].tolist() == [3, 2, 3]


def test_quotas_respected() -> None:
    merged = merge_candidates(channels(), {"itemcf": 1, "swing": 2}, k_total=10)
    assert merged.items[0, :3].tolist() == [1, 2, 6]
    assert merged.channels[0, :3].tolist() == [1, 2, 2]  # item 1 is beyond swing's quota
    assert (merged.items > 0).sum(1).tolist() == [3, 2, 1]  # row 1: items 4 and 7
    only_swing = merge_candidates(channels(), {"itemcf": 0}, k_total=10)
    assert set(only_swing.items[0].tolist()) - {0} == {1, 2, 6}


def test_merging_a_merged_list_keeps_its_names() -> None:
    first = merge_candidates(channels(), None, k_total=4)
    popular = Candidates.from_topk(torch.tensor([[9, 1], [9, 4], [9, 1]]), torch.ones(3, 2), "popular")
    again = merge_candidates({"cascade": first, "popular": popular}, None, k_total=6)
    assert again.channel_names == ["itemcf", "swing", "popular"]
    assert again.items[0].tolist() == [1, 9, 2, 6, 3, 0]
    assert again.channel_tags(0, 0) == ["itemcf", "swing", "popular"]


def test_no_duplicates_or_padding_on_random_lists() -> None:
    generator = torch.Generator().manual_seed(0)
    lists = {
        f"c{c}": Candidates.from_topk(
            torch.randperm(30, generator=generator)[:10].repeat(4, 1) + 1,
            torch.linspace(1, 0, 10).repeat(4, 1),
            f"c{c}",
        )
        for c in range(3)
    }
    merged = merge_candidates(lists, {"c0": 5}, k_total=20)
    for row in merged.items.tolist():
        real = [i for i in row if i > 0]
        assert len(real) == len(set(real)) and row[len(real) :] == [0] * (20 - len(real))


def test_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="quotas.popular"):
        merge_candidates(channels(), {"popular": 3}, k_total=5)
    with pytest.raises(ConfigError, match="normalise"):
        merge_candidates(channels(), None, k_total=5, normalise="zscore")
    short = Candidates.from_topk(torch.tensor([[1]]), torch.ones(1, 1), "x")
    with pytest.raises(DataError, match="batch sizes"):
        merge_candidates({**channels(), "x": short}, None, k_total=5)


def test_channel_report_recall_and_exclusive_contribution() -> None:
    lists = channels()
    merged = merge_candidates(lists, None, k_total=6)
    targets = Jagged.from_lists([[3, 6, 9], [4], []])  # the third user has no targets: not averaged
    report = channel_report(lists, merged, targets, ks=[2, 4])
    assert report["users"] == 2
    assert report["recall@2"] == pytest.approx({"itemcf": 0.5, "swing": 2 / 3, "merged": 0.5})
    assert report["recall@4"] == pytest.approx({"itemcf": 2 / 3, "swing": 2 / 3, "merged": 5 / 6})
    # merged top-4: row 0 hits 3 (itemcf only) and 6 (swing only); row 1 hits 4 (both channels)
    assert report["exclusive@4"] == pytest.approx({"itemcf": 1 / 6, "swing": 1 / 6})
    assert report["shared@4"] == pytest.approx(1 / 2)
    assert sum(report["exclusive@4"].values()) + report["shared@4"] == pytest.approx(report["recall@4"]["merged"])


def test_channel_scores_hold_each_channels_rank_evidence() -> None:
    merged = merge_candidates(channels(), None, k_total=5)
    evidence = merged.channel_scores  # [B, K, C]: 1 / (rank in channel + 1), 0 when not retrieved
    assert evidence.shape == (3, 5, 2)
    # row 0: items [1, 2, 6, 3, 0]; itemcf ranks 1,2,3 at 0,1,2; swing ranks 2,6,1 at 0,1,2
    torch.testing.assert_close(
        evidence[0], torch.tensor([[1.0, 1 / 3], [0.5, 1.0], [0.0, 0.5], [1 / 3, 0.0], [0.0, 0.0]])
    )
    # merging an already merged list keeps the evidence of its channels
    again = merge_candidates({"both": merged}, None, k_total=5)
    torch.testing.assert_close(again.channel_scores, evidence)
