"""CAPTS: replay episodes, VAM labels by hand, routing invariants, CATR learning a planted pattern,
baseline selectors, and the u2i2i channel (cold start, empty expansions, clipping, save/load)."""

from __future__ import annotations

import pytest
import scipy.sparse as sp
import torch

from recstack.data.batch import UserBatch
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError
from recstack.registry import build
from recstack.retrieval.base import Retriever
from recstack.retrieval.triggers.catr import CATR, CATRConfig, fit_catr
from recstack.retrieval.triggers.episodes import replay_episodes, serving_episodes
from recstack.retrieval.triggers.routing import route_exact, route_greedy
from recstack.retrieval.triggers.selectors import SelectorContext
from recstack.retrieval.triggers.vam import channel_overlap, truncate_neighbours, vam_labels
from tests.helpers import seeded
from tests.retrieval.test_itemcf import make_dataset, random_dataset


def table(rows: dict[int, dict[int, float]], size: int) -> sp.csr_matrix:
    """Neighbour table [size, size] from {item: {neighbour: similarity}}."""
    r, c, v = [], [], []
    for item, neighbours in rows.items():
        for other, value in neighbours.items():
            r.append(item)
            c.append(other)
            v.append(value)
    return sp.csr_matrix((v, (r, c)), shape=(size, size))


# ---- episodes -----------------------------------------------------------------------------------
def test_replay_episodes_cut_sequences_into_candidates_and_future() -> None:
    sequences = Jagged.from_lists([[], [1, 2, 3, 4, 5, 6], [7, 8]])
    feedback = Jagged.from_lists([[], [1, 2, 3, 4, 5, 6], [7, 8]], dtype=torch.float32)
    episodes = replay_episodes(sequences, feedback, num_candidates=3, future_window=2, cutoffs_per_user=2)
    # user 1: cutoffs at 4 (future 5, 6) and 2 (future 3, 4); user 2: none (needs 1 item before the cutoff)
    assert episodes.users.tolist() == [1, 1]
    assert episodes.candidates.tolist() == [[4, 3, 2], [2, 1, 0]]  # most recent first, 0 = padding
    assert episodes.future.tolist() == [[5, 6], [3, 4]]
    assert episodes.feedback.tolist() == [[4.0, 3.0, 2.0], [2.0, 1.0, 0.0]]


# ---- VAM ----------------------------------------------------------------------------------------
def test_vam_labels_equal_hand_computed_ones() -> None:
    # channel a: 1 -> {3, 4}, 2 -> {5}; channel b: 1 -> {3}, 2 -> {4, 6}; expansion keeps the top 2
    a = table({1: {3: 0.9, 4: 0.5, 6: 0.1}, 2: {5: 0.7}}, 7)
    b = table({1: {3: 0.4}, 2: {4: 0.8, 6: 0.6}}, 7)
    expansions = {"a": truncate_neighbours(a, 2), "b": truncate_neighbours(b, 2)}
    sequences = Jagged.from_lists([[], [1, 2, 3, 4]])  # user 1: triggers (2, 1), future (3, 4)
    episodes = replay_episodes(sequences, None, num_candidates=2, future_window=2)
    labels = vam_labels(episodes, expansions, threshold=2.0)
    # trigger 2 (column 0): a finds nothing of {3, 4}; b finds 4. trigger 1: a finds 3 and 4; b finds 3.
    assert labels.value[0].tolist() == [[0.0, 1.0], [2.0, 1.0]]
    assert labels.label[0].tolist() == [[0.0, 0.0], [1.0, 0.0]]  # threshold 2: only a's 2 items count
    # unique: trigger 2: b's 4 is found by b alone -> 1; trigger 1: a's 4 alone (3 is shared) -> 1, b 0
    assert labels.unique[0].tolist() == [[0.0, 1.0], [1.0, 0.0]]
    # 6 is dropped by the top-2 truncation of a's row 1: a's expansion of 1 is {3, 4}
    assert expansions["a"][1].indices.tolist() == [3, 4]


def test_channel_overlap_is_the_share_of_shared_expansions() -> None:
    a = truncate_neighbours(table({1: {2: 1.0, 3: 1.0}}, 4), 5)
    b = truncate_neighbours(table({1: {3: 1.0}}, 4), 5)
    overlap = channel_overlap({"a": a, "b": b})
    assert overlap.tolist() == [[1.0, 0.5], [1.0, 1.0]]


# ---- routing ------------------------------------------------------------------------------------
def _random_routing_case(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(6, 8, 3, generator=generator) + 0.01
    scores[torch.rand(6, 8, 3, generator=generator) < 0.2] = float("-inf")  # some pairs not routable
    quotas = torch.tensor([3, 2, 4])
    overlap = torch.tensor([[1.0, 0.9, 0.1], [0.9, 1.0, 0.2], [0.1, 0.2, 1.0]])
    return scores, quotas, overlap


@pytest.mark.parametrize("route", [route_greedy, route_exact])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_routing_respects_quotas_and_forbidden_overlap(route, seed: int) -> None:
    scores, quotas, overlap = _random_routing_case(seed)
    assignment = route(scores, quotas, overlap, overlap_penalty=1.5)  # 1 - 1.5 * 0.9 < 0: a & b forbidden
    assert bool((assignment.sum(1) <= quotas).all())
    assert not bool((assignment[..., 0] & assignment[..., 1]).any())  # never twice to overlapping a, b
    assert not bool(assignment[~torch.isfinite(scores)].any())  # unroutable pairs never taken
    # without the penalty every quota is filled where enough routable triggers exist
    free = route(scores, quotas, overlap, overlap_penalty=0.0)
    routable = torch.isfinite(scores).sum(1)
    assert torch.equal(free.sum(1), torch.minimum(routable, quotas.expand_as(routable)))


def test_exact_routing_is_at_least_as_good_as_greedy() -> None:
    for seed in range(3):
        scores, quotas, overlap = _random_routing_case(seed)
        finite = torch.where(torch.isfinite(scores), scores, 0.0)
        greedy = (finite * route_greedy(scores, quotas, overlap, 1.5)).sum()
        exact = (finite * route_exact(scores, quotas, overlap, 1.5)).sum()
        assert float(exact) >= float(greedy) - 1e-6


def test_routing_rejects_bad_shapes() -> None:
    with pytest.raises(ConfigError, match="quotas"):
        route_greedy(torch.rand(2, 3, 2), torch.tensor([1, 1, 1]), torch.eye(2))


# ---- CATR ---------------------------------------------------------------------------------------
@pytest.mark.learns
def test_catr_learns_a_trigger_valuable_on_one_channel_only() -> None:
    """Items 1-10 are valuable triggers on channel A only, 11-20 on channel B only, the rest on neither."""
    generator = torch.Generator().manual_seed(seeded(3))
    num_items, episodes, width = 40, 600, 8
    candidates = torch.randint(1, num_items + 1, (episodes, width), generator=generator)
    on_a = (candidates <= 10).float()
    on_b = ((candidates > 10) & (candidates <= 20)).float()
    label = torch.stack([on_a, on_b], -1)
    features = torch.zeros(num_items + 1, 1)
    config = CATRConfig(dim=16, hidden=[32], epochs=15, batch_size=64, lr=1e-2, seed=seeded(3))
    torch.manual_seed(seeded(3))
    model = CATR(config, features, num_heads=2, max_candidates=width)
    fit_catr(model, candidates, torch.zeros(episodes, width), label, label, label)
    test = torch.arange(1, num_items + 1).view(5, 8)
    with torch.no_grad():
        value, _ = model(test, torch.zeros(5, 8))
    probability = torch.sigmoid(value).reshape(-1, 2)
    a_items, b_items, neither = probability[:10], probability[10:20], probability[20:]
    assert float(a_items[:, 0].min()) > 0.7 and float(a_items[:, 1].max()) < 0.3
    assert float(b_items[:, 1].min()) > 0.7 and float(b_items[:, 0].max()) < 0.3
    assert float(neither.max()) < 0.3
    # routed with quotas, A's triggers go to A and B's to B
    scores = model.calibrated(value)
    assignment = route_greedy(scores, torch.tensor([2, 2]), torch.eye(2), overlap_penalty=1.0)
    # row 1 holds items 9-16: A takes its two A-items 9, 10; B takes two of its B-items 11-16
    assert test[1][assignment[1, :, 0]].tolist() == [9, 10]
    assert all(11 <= item <= 16 for item in test[1][assignment[1, :, 1]].tolist())
    # row 2 (items 17-24) has B-items 17-20 only: B takes two of them
    assert all(17 <= item <= 20 for item in test[2][assignment[2, :, 1]].tolist())


# ---- baseline selectors -------------------------------------------------------------------------
def test_baseline_selectors_pick_by_their_rule() -> None:
    candidates = torch.tensor([[5, 4, 3, 2, 1]])
    feedback = torch.tensor([[1.0, 5.0, 1.0, 4.0, 1.0]])
    batch = UserBatch(torch.tensor([1]), Jagged.from_lists([[1, 2, 3, 4, 5]]), {"rating": feedback[0].flip(0)})
    episodes = serving_episodes(batch, num_candidates=5, feedback_key="rating")
    assert torch.equal(episodes.candidates, candidates) and torch.equal(episodes.feedback, feedback)
    bare = serving_episodes(UserBatch(batch.users, batch.history), 5, "rating", missing_feedback=3.5)
    assert bare.feedback.tolist() == [[3.5] * 5]  # a request without the feature gets the training mean
    routable = torch.ones(1, 5, 2, dtype=torch.bool)
    quotas = torch.tensor([2, 1])
    recent = build("trigger_selector", "recent").select(episodes, quotas, routable)
    assert candidates[recent[..., 0]].tolist() == [5, 4] and candidates[recent[..., 1]].tolist() == [5]
    by_feedback = build("trigger_selector", "feedback").select(episodes, quotas, routable)
    assert sorted(candidates[by_feedback[..., 0]].tolist()) == [2, 4]
    tagtop = build("trigger_selector", "tagtop")
    categories = torch.tensor([0, 1, 2, 1, 2, 2])  # items 2, 4, 5 share category 2 (the user's top)
    tagtop.fit(SelectorContext(episodes, {}, torch.zeros(6, 1), categories))
    chosen = tagtop.select(episodes, quotas, routable)
    assert candidates[chosen[..., 0]].tolist() == [5, 4]  # category 2, most recent first
    unroutable = routable.clone()
    unroutable[0, 0, 0] = False  # item 5 has no neighbours on channel 0: skipped there
    assert candidates[build("trigger_selector", "recent").select(episodes, quotas, unroutable)[..., 0]].tolist() == [
        4,
        3,
    ]


# ---- the u2i2i channel --------------------------------------------------------------------------
def _u2i2i(selector: dict) -> Retriever:
    spec = {"num_candidates": 6, "triggers_per_channel": 2, "expansion": 5, "future_window": 2}
    return build("retriever", {"name": "u2i2i", "selector": selector, **spec})


def _capts_selector() -> dict:
    return {"name": "capts", "catr": {"dim": 8, "hidden": [16], "epochs": 1}}


@pytest.mark.parametrize("selector", [{"name": "recent"}, {"name": "lic", "epochs": 1, "dim": 8}, _capts_selector()])
def test_u2i2i_retrieves_saves_and_loads(tmp_path, selector: dict) -> None:
    data = random_dataset(seed=1)
    model = _u2i2i(selector).fit(data)
    users = torch.arange(1, data.num_users + 1)
    batch = data.user_batch(users)
    candidates = model.retrieve(batch, 10)
    assert candidates.items.shape == (data.num_users, 10)
    assert set(candidates.channel_names) == {"itemcf", "swing"}
    history = batch.history.tolist()
    for row, items in enumerate(candidates.items.tolist()):  # test-side check, a loop is fine
        assert not set(items) & set(history[row])
    model.save(tmp_path / "u2i2i")
    loaded = Retriever.load(tmp_path / "u2i2i")
    again = loaded.retrieve(batch, 10)
    assert torch.equal(again.items, candidates.items)


def test_u2i2i_cold_start_user_gets_popular_items() -> None:
    data = random_dataset(seed=2)
    model = _u2i2i(_capts_selector()).fit(data)
    cold = data.user_batch(torch.tensor([data.num_users]))  # the last user has no history
    assert cold.history.values.numel() == 0
    candidates = model.retrieve(cold, 5)
    popularity = data.item_popularity("train")
    expected = torch.argsort(-popularity[1:], stable=True)[:5] + 1
    assert sorted(candidates.items[0].tolist()) == sorted(expected.tolist())


def test_u2i2i_counts_empty_expansions_and_clips_k() -> None:
    # item 5 co-occurs with nothing (its only user has no other item): it has no neighbours anywhere
    pairs = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 2), (3, 3), (4, 5), (4, 1), (4, 4), (5, 5)]
    data = make_dataset(pairs[:8] + [(5, 5)], 5, 5)
    model = _u2i2i({"name": "recent"}).fit(data)
    batch = data.user_batch(torch.tensor([5]))
    before = model.stats["empty_expansions_skipped"]
    with pytest.warns(UserWarning, match="exceeds the catalogue"):
        candidates = model.retrieve(batch, 50)
    assert model.stats["empty_expansions_skipped"] - before == 2  # item 5 on both channels
    assert candidates.items.shape[1] == 5 and int((candidates.items == 5).sum()) == 0


def test_u2i2i_bad_config_is_named() -> None:
    with pytest.raises(ConfigError, match="u2i2i.channels.pop"):
        build("retriever", {"name": "u2i2i", "channels": {"pop": {"name": "popular"}}})
    with pytest.raises(ConfigError, match="trigger_selector"):
        build("retriever", {"name": "u2i2i", "selector": {"name": "nope"}})
    model = _u2i2i({"name": "recent"}).fit(random_dataset())
    model.config.triggers_per_channel = {"nope": 3}
    with pytest.raises(ConfigError, match="triggers_per_channel.nope"):
        model.quotas()


def test_cascade_channels_accept_capts_triggers_and_the_learned_merge(tmp_path) -> None:
    from recstack.cascade import Cascade, RunConfig
    from recstack.config import from_dict
    from recstack.data.prepare import prepare
    from recstack.world import World, WorldConfig

    world = World(WorldConfig(num_users=80, num_items=100, num_topics=5, seed=4))
    dataset = prepare(world.generate_sequences(mean_length=12), name="tinyworld")
    triggered = {
        "name": "u2i2i",
        "channels": {"itemcf": {"name": "itemcf"}, "swing": {"name": "swing"}},
        "selector": _capts_selector(),
        "num_candidates": 8,
        "triggers_per_channel": 3,
        "future_window": 2,
    }
    config = from_dict(
        RunConfig,
        {
            "name": "t",
            "channels": {"popular": {"name": "popular"}, "triggered": triggered},
            "ranker": None,
            "merge": {"k_total": 30, "learned": True},
            "eval": {"ks": [10, 30]},
        },
    )
    run = tmp_path / "run"
    cascade = Cascade(config).fit(dataset, run, progress=lambda m: None)
    metrics = cascade.evaluate(dataset, "test")
    report = metrics["retrieval"]
    assert set(report["recall@30"]) == {"popular", "triggered", "merged"}
    shares = sum(report["exclusive@30"].values()) + report["shared@30"]
    assert shares == pytest.approx(report["recall@30"]["merged"])  # the composite owns its sub-channels
    cascade.save(run)
    loaded = Cascade.load(run)
    batch = dataset.user_batch(torch.arange(1, 11))
    assert torch.equal(cascade.recommend(batch, k=10).items, loaded.recommend(batch, k=10).items)
