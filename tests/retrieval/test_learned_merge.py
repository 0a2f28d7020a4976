"""LearnedMerge on synthetic channels (ranks only matter) and inside a tiny cascade."""

from __future__ import annotations

import warnings

import pytest
import torch

from recstack.cascade import Cascade, RunConfig, history_features
from recstack.config import from_dict, to_dict
from recstack.data.batch import Candidates
from recstack.data.jagged import Jagged
from recstack.data.prepare import prepare
from recstack.errors import ConfigError, DataError
from recstack.retrieval.learned_merge import LearnedMerge, LearnedMergeConfig
from recstack.retrieval.merge import MergeConfig, channel_report, merge_candidates
from recstack.serve.model import load_model
from recstack.serve.pipeline import Row, run_rows
from recstack.world import World, WorldConfig
from tests.helpers import seeded

TARGET = 1  # every user's one held-out item; the others are random items 2..CATALOGUE


def channel(name: str, hit_ranks: torch.Tensor, k: int, generator: torch.Generator, catalogue: int = 500) -> Candidates:
    """Candidates [B, k] of random items, with TARGET at hit_ranks [B] (-1 = the channel misses it)."""
    users = hit_ranks.shape[0]
    items = torch.rand(users, catalogue - 1, generator=generator).argsort(1)[:, :k] + 2
    hit = hit_ranks >= 0
    items[hit.nonzero().squeeze(1), hit_ranks[hit]] = TARGET
    return Candidates.from_topk(items, torch.linspace(1, 0, k).expand(users, k).clone(), name)


def ranks(
    users: int, share: float, low: int, high: int, generator: torch.Generator, among: torch.Tensor | None = None
) -> torch.Tensor:
    """[B] a rank in [low, high) for a random `share` of the users (of those in `among`), else -1."""
    draw = torch.rand(users, generator=generator) < share
    if among is not None:
        draw &= among
    return torch.where(draw, torch.randint(low, high, (users,), generator=generator), -1)


def targets(users: int) -> Jagged:
    return Jagged.from_lists([[TARGET]] * users)


def recall(candidates: Candidates, users: int, k: int) -> float:
    return channel_report({}, candidates, targets(users), [k])[f"recall@{k}"]["merged"]


def test_learned_merge_beats_both_channels_and_the_rank_merge() -> None:
    # A finds the target at its very top for 40% of users; B finds it deep in its list (ranks 15-19),
    # and only for users A misses. The rank merge interleaves both tops and cuts B's deep hits off.
    generator, users, k = torch.Generator().manual_seed(seeded(0)), 600, 20
    a_ranks = ranks(users, 0.4, 0, 3, generator)
    lists = {
        "a": channel("a", a_ranks, k, generator),
        "b": channel("b", ranks(users, 0.5, 15, 20, generator, among=a_ranks < 0), k, generator),
    }
    merger = LearnedMerge(LearnedMergeConfig(k_total=k))
    report = merger.fit(lists, targets(users), ks=[10])
    merged = merger.merge(lists)
    best_channel = max(recall(lists["a"], users, k), recall(lists["b"], users, k))
    rank_merge = recall(merge_candidates(lists, None, k), users, k)
    learned = recall(merged, users, k)
    assert merger.lead is None and report["order"] == "learned"
    assert learned >= best_channel + 0.15 and learned >= rank_merge + 0.15
    assert report[f"valid_recall@{k}"] == pytest.approx(
        {"merged": learned, "learned": learned, "rank_merge": rank_merge, **report[f"valid_recall@{k}"]}
    )
    assert set(report) >= {"valid_recall@10", "effective_quota", "fit_seconds", "pool", "fallback"}
    # Both channels earn slots: A's top few and B's deep hits.
    assert 3 <= report["effective_quota"]["a"] < k and report["effective_quota"]["b"] >= 5
    # The output is a merge_candidates-like Candidates: tags, evidence, distinct items, scores best first.
    assert merged.items.shape == (users, k) and merged.channel_names == ["a", "b"]
    assert merged.channel_scores is not None and merged.channel_scores.shape == (users, k, 2)
    tagged = ((merged.channels[..., None] >> torch.arange(2)) & 1).bool()
    assert torch.equal(tagged, merged.channel_scores > 0)
    assert (merged.scores[:, 1:] <= merged.scores[:, :-1]).all()
    assert all(len(set(row)) == k for row in merged.items.tolist())


def test_never_below_the_best_channel_on_its_own_tuning_data() -> None:
    # One channel dominates (or the channels are near-useless noise): whatever the learned order
    # does, the merged recall@k_total on the fitting data is at least the best channel's.
    users, k, orders = 300, 15, set()
    for seed in range(8):
        generator = torch.Generator().manual_seed(seeded(100 + seed))
        # every third seed: a perfect channel, which the learned order can at best tie
        share = 1.0 if seed % 3 == 0 else float(torch.rand(1, generator=generator)) * 0.9 + 0.05
        pool = k + 5 * (seed % 2)  # the target may sit beyond k_total in a deeper pool
        lists = {
            "strong": channel("strong", ranks(users, share, 0, pool, generator), pool, generator, catalogue=60),
            "weak": channel("weak", ranks(users, share / 4, 0, pool, generator), pool, generator, catalogue=60),
            "noise": channel("noise", ranks(users, 0.02, 0, pool, generator), pool, generator, catalogue=60),
        }
        merger = LearnedMerge(LearnedMergeConfig(k_total=k, pool=pool))
        report = merger.fit(lists, targets(users))
        merged = recall(merger.merge(lists), users, k)
        best = max(recall(c, users, k) for c in lists.values())
        assert merged >= best, (seed, merged, best, report["order"])
        assert report[f"valid_recall@{k}"]["merged"] == merged
        orders.add(report["order"])
    assert orders == {"learned", "strong first, then learned"}  # both branches of the guarantee ran


def test_fallback_reproduces_the_lead_channel() -> None:
    # Target at A's rank 0..4 for everyone, at a random deep B rank for half: nothing beats A's list.
    generator, users, k = torch.Generator().manual_seed(seeded(7)), 200, 10
    lists = {
        "b": channel("b", ranks(users, 0.5, 5, k, generator), k, generator),
        "a": channel("a", ranks(users, 1.0, 0, 5, generator), k, generator),
    }
    merger = LearnedMerge(LearnedMergeConfig(k_total=k))
    report = merger.fit(lists, targets(users))
    # The learned order can at best tie A's recall of 1.0, and a tie goes to the channel.
    assert merger.lead == "a" and report["fallback"] == "a" and report["order"] == "a first, then learned"
    merged = merger.merge(lists)
    assert torch.equal(merged.items, lists["a"].items) and merged.channel_names == ["b", "a"]
    assert report[f"valid_recall@{k}"]["merged"] == 1.0


def test_save_load_round_trip(tmp_path) -> None:
    generator, users, k = torch.Generator().manual_seed(seeded(3)), 200, 12
    lists = {
        "a": channel("a", ranks(users, 0.5, 0, 4, generator), 16, generator),
        "b": channel("b", ranks(users, 0.4, 8, 16, generator), 16, generator),
    }
    merger = LearnedMerge(LearnedMergeConfig(k_total=k, pool=16))
    merger.fit(lists, targets(users))
    merger.save(tmp_path / "merge")
    assert not list((tmp_path / "merge").glob(".*tmp*"))  # atomic writes leave no temp files
    again = LearnedMerge.load(tmp_path / "merge")
    first, second = merger.merge(lists), again.merge(lists)
    for name in ("items", "scores", "channels", "channel_scores"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert again.report == merger.report and again.lead == merger.lead
    with pytest.raises(DataError, match="fitted on channels"):
        again.merge({"b": lists["b"], "a": lists["a"]})
    with pytest.raises(DataError, match="before merging"):
        LearnedMerge(LearnedMergeConfig(k_total=k)).merge(lists)


def test_quotas_above_the_catalogue_warn_and_clip() -> None:
    generator, users = torch.Generator().manual_seed(seeded(5)), 50
    small = channel("small", ranks(users, 0.5, 0, 4, generator), 4, generator, catalogue=5)  # 4 items exist
    large = channel("large", ranks(users, 0.5, 0, 8, generator), 8, generator)
    lists = {"small": small, "large": large}
    with pytest.warns(UserWarning, match="'small'"):
        clipped = merge_candidates(lists, {"small": 10, "large": 8}, k_total=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact = merge_candidates(lists, {"small": 4, "large": 8}, k_total=12)
    assert torch.equal(clipped.items, exact.items)
    merger = LearnedMerge(LearnedMergeConfig(k_total=8))
    with pytest.warns(UserWarning, match="'small'"):
        merger.fit(lists, targets(users))
    with pytest.warns(UserWarning, match="'small'"):
        merged = merger.merge(lists)
    assert merged.items.shape == (users, 8)


def test_merge_config_rejects_contradictions() -> None:
    with pytest.raises(ConfigError, match="merge.quotas"):
        MergeConfig(learned=True, quotas={"a": 3})
    with pytest.raises(ConfigError, match="merge.pool"):
        MergeConfig(k_total=10, pool=5, learned=True)
    with pytest.raises(ConfigError, match="merge.pool"):
        MergeConfig(pool=600)
    with pytest.raises(ConfigError, match="merge.pool"):
        LearnedMergeConfig(k_total=10, pool=5)


def test_cascade_with_a_learned_merge_fits_evaluates_saves_and_loads(tmp_path) -> None:
    world = World(WorldConfig(num_users=120, num_items=150, num_topics=6, seed=3))
    dataset = prepare(world.generate_sequences(mean_length=12), name="tinyworld")
    config = from_dict(
        RunConfig,
        {
            "name": "t",
            "dataset": {"name": "tinyworld"},
            "channels": {"popular": {"name": "popular"}, "itemcf": {"name": "itemcf"}, "swing": {"name": "swing"}},
            "ranker": None,
            "merge": {"k_total": 40, "learned": True, "pool": 50},
            "eval": {"ks": [10, 40]},
        },
    )
    run = tmp_path / "run"
    cascade = Cascade(config).fit(dataset, run, progress=lambda m: None)
    assert cascade.quota("itemcf") == 50 and (run / "merge" / "config.json").is_file()
    valid = cascade.evaluate(dataset, "valid")
    recall = valid["retrieval"]["recall@40"]
    assert recall["merged"] >= max(recall[c] for c in config.channels)  # the guarantee, on its own data
    assert valid["merge"]["method"] == "learned" and valid["merge"]["valid_recall@40"]["merged"] == pytest.approx(
        recall["merged"]
    )
    metrics = cascade.evaluate(dataset, "test")
    assert metrics["merge"]["k_total"] == 40 and set(metrics["merge"]["effective_quota"]) == set(config.channels)
    cascade.save(run)
    batch = dataset.user_batch(torch.arange(1, 21))
    loaded = Cascade.load(run)
    assert torch.equal(cascade.recommend(batch, k=10).items, loaded.recommend(batch, k=10).items)
    assert loaded.evaluate(dataset, "test")["retrieval"] == metrics["retrieval"]
    # the server merges the same way: its pages are the cascade's, and an excluded item stays out
    dataset.save()
    model = load_model(run)
    view = cascade.retrieval_view(dataset)
    users = torch.arange(1, 9)
    page = cascade.recommend(view.user_batch(users, features=history_features(view)), k=10)
    served = run_rows(model, [Row(user=int(u), history=None, k=10) for u in users])
    assert [r.items for r in served] == page.items.tolist()
    excluded = run_rows(model, [Row(user=1, history=None, k=10, exclude=page.items[0, :3].tolist())])[0]
    assert len(excluded.items) == 10 and not set(excluded.items) & set(page.items[0, :3].tolist())
    # a second fit into the same folder resumes the merge instead of refitting it
    messages: list[str] = []
    Cascade(config).fit(dataset, run, progress=messages.append)
    assert any(m.startswith("merge: loaded from") for m in messages)
    # the rank merge says so too
    rank = Cascade(from_dict(RunConfig, {**to_dict(config), "merge": {"k_total": 40}}))
    assert rank.merge_report()["method"] == "rank"
