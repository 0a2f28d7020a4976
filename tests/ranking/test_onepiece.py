"""OnePiece ranker: structured context, block-wise reasoning, progressive supervision, set-wise groups."""

from __future__ import annotations

import pytest
import torch

from recstack.cascade import Cascade, RunConfig
from recstack.config import from_dict
from recstack.data.batch import Candidates
from recstack.data.prepare import PrepareConfig, prepare
from recstack.errors import ConfigError
from recstack.ranking.base import Ranker
from recstack.ranking.features import build_schema
from recstack.ranking.models.onepiece import last_members, step_tasks
from recstack.ranking.samples import SampleBuilder
from recstack.ranking.setwise import group_grid, setwise_contrastive_loss
from recstack.registry import build
from recstack.world import World, WorldConfig
from tests.helpers import seeded
from tests.ranking.ranker_checks import check_memorises

TRAIN = {"epochs": 1, "batch_size": 128, "lr": 1e-2, "patience": 0, "progress": False, "seed": seeded()}


def tiny(**overrides):
    spec = {
        "name": "onepiece",
        "dim": 16,
        "layers": 1,
        "heads": 2,
        "reasoning_steps": 2,
        "group_size": 6,
        "anchor_size": 3,
        "features": {"dim": 4},
        "samples": {"max_history": 6},
        "tower_hidden": [8],
        "train": dict(TRAIN),
        "score_rows": 256,
        **overrides,
    }
    return build("ranker", spec)


@pytest.fixture(scope="module")
def logs():
    """World impression logs: scenario, request, event labels click < long_view < like < purchase."""
    world = World(WorldConfig(num_users=40, num_items=60, num_topics=4, seed=seeded(1)))
    return prepare(
        world.generate_logs(1500),
        PrepareConfig(split="temporal", valid_fraction=0.15, test_fraction=0.15),
        name="oplogs",
    )


def model_and_inputs(ranker, dataset, rows=48):
    builder = SampleBuilder(dataset, ranker.config.samples)
    ranker.tasks, ranker.event_labels, ranker.history_label = builder.tasks, builder.event_labels, builder.history_label
    schema, tables = build_schema(dataset, ranker.config.features)
    ranker._dataset = dataset
    model = ranker.build_model(schema)
    ranker._dataset = None
    model.features.set_tables(tables)
    source = ranker._train_source(builder, builder.train_samples(), None)
    inputs = next(iter(source.batches(0, 0, 1)))
    return model, inputs


@pytest.mark.parametrize("steps", [0, 1, 2, 3])
def test_reasoning_steps_build_and_run(logs, steps):
    torch.manual_seed(0)
    model, inputs = model_and_inputs(tiny(reasoning_steps=steps), logs)
    assert (
        len(
            model.reasoner(
                torch.zeros(2, 5, 16), torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 2, dtype=torch.bool)
            )
        )
        == steps + 1
    )
    logits = model(inputs)
    assert set(logits) == {"click", "like", "long_view", "purchase"}
    assert all(v.shape == inputs["items"].shape and torch.isfinite(v).all() for v in logits.values())
    model.loss(inputs)["loss"].backward()
    assert model.num_anchors == 4 and "history_event" in inputs  # clicked / long-viewed / liked / purchased


def test_progressive_vs_last_step_supervision(logs):
    order = ["click", "long_view", "like", "purchase"]
    assert step_tasks(order, 3, "progressive") == [["click", "long_view"], ["like"], ["purchase"]]
    assert step_tasks(order, 4, "progressive") == [["click"], ["long_view"], ["like"], ["purchase"]]
    assert step_tasks(["view", "like"], 4, "progressive") == [["view"], ["view"], ["like"], ["like"]]
    assert step_tasks(order, 3, "last") == [[], [], order]
    assert step_tasks(order, 3, "progressive", supervise_base=False) == [
        [],
        ["click", "long_view"],
        ["like", "purchase"],
    ]
    assert step_tasks(order, 1, "progressive", supervise_base=False) == [order]  # K = 0: the base pass
    torch.manual_seed(0)
    progressive, inputs = model_and_inputs(tiny(reasoning_steps=2), logs)
    last, _ = model_and_inputs(tiny(reasoning_steps=2, supervision="last"), logs)
    bce = lambda out: {k for k in out if "@" in k and not k.startswith("setwise")}  # noqa: E731
    assert bce(progressive.loss(inputs)) == {"click@0", "long_view@0", "like@1", "purchase@2"}
    assert bce(last.loss(inputs)) == {"click@2", "long_view@2", "like@2", "purchase@2"}
    # flipping the like labels changes only the step that like supervises
    flipped = dict(inputs, labels={**inputs["labels"], "like": 1 - inputs["labels"]["like"]})
    a, b = progressive.loss(inputs), progressive.loss(flipped)
    assert not torch.isclose(a["like@1"], b["like@1"])
    assert all(torch.equal(a[k], b[k]) for k in ("click@0", "long_view@0", "purchase@2"))
    assert progressive.serve_step == {"click": 0, "long_view": 0, "like": 1, "purchase": 2}


def test_setwise_loss_is_permutation_invariant_and_prefers_positives():
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 5), (torch.rand(3, 5) < 0.4).float()
    labels[:, 0] = 1.0
    valid = torch.ones(3, 5, dtype=torch.bool)
    valid[2, 4] = False
    for denominator in ("all", "negatives"):
        loss = setwise_contrastive_loss(logits, labels, valid, 0.5, denominator)
        perm = torch.randperm(5)
        assert torch.isclose(
            loss, setwise_contrastive_loss(logits[:, perm], labels[:, perm], valid[:, perm], 0.5, denominator)
        )
        better = logits + 3.0 * labels  # positives scored higher
        assert setwise_contrastive_loss(better, labels, valid, 0.5, denominator) < loss
    assert setwise_contrastive_loss(logits, torch.zeros(3, 5), valid) == 0.0


def test_model_is_permutation_equivariant_within_a_group(logs):
    torch.manual_seed(0)
    model, inputs = model_and_inputs(tiny(), logs)
    model.eval()
    grid = group_grid(inputs["setwise_group"], 6)
    rows = grid[0][grid[0] >= 0]
    perm = torch.arange(inputs["items"].numel())
    perm[rows] = rows.flip(0)  # reverse the order of the rows of the first group
    shuffled = {k: (v[perm] if torch.is_tensor(v) else v) for k, v in inputs.items()}
    with torch.no_grad():
        a, b = model(inputs)["click"], model(shuffled)["click"]
    assert torch.allclose(a[perm], b, atol=1e-5)


def test_candidates_see_each_other_only_when_visible(logs):
    for visible in (True, False):
        torch.manual_seed(0)
        model, inputs = model_and_inputs(tiny(candidates_visible=visible), logs)
        model.eval()
        grid = group_grid(inputs["setwise_group"], 6)
        first, other = int(grid[0, 0]), int(grid[0, 1])
        changed = dict(inputs, items=inputs["items"].clone())
        changed["items"][other] = inputs["items"][other] % 60 + 1
        with torch.no_grad():
            same = torch.isclose(model(inputs)["like"][first], model(changed)["like"][first], atol=1e-6)
        assert bool(same) != visible


def test_grouped_batches_hold_whole_requests(logs):
    ranker = tiny()
    builder = SampleBuilder(logs, ranker.config.samples)
    ranker.tasks = builder.tasks
    train = builder.train_samples()
    batch = next(iter(ranker._train_source(builder, train, None).batches(0, 0, 1)))
    requests = logs.interactions["request"].to_numpy()[(builder.split == 0).nonzero()[0]]
    for g in batch["setwise_group"].unique():
        rows = (batch["setwise_group"] == g).nonzero().squeeze(1)
        assert rows.numel() <= 6 and (batch["users"][rows] == batch["users"][rows[0]]).all()
        assert (batch["history"][rows] == batch["history"][rows[0]]).all()
    assert len(set(requests.tolist())) < len(requests)  # several impressions per request


def test_positive_only_groups_are_a_positive_and_its_negatives(positive_only_data):
    ranker = tiny(samples={"max_history": 6, "negatives_per_positive": 3})
    builder = SampleBuilder(positive_only_data, ranker.config.samples)
    ranker.tasks = builder.tasks
    batch = next(iter(ranker._train_source(builder, builder.train_samples(), None).batches(0, 0, 1)))
    groups, counts = batch["setwise_group"].unique(return_counts=True)
    assert (counts == 4).all()
    for g in groups[:5]:
        rows = (batch["setwise_group"] == g).nonzero().squeeze(1)
        assert batch["labels"]["view"][rows].tolist() == [1.0, 0.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def positive_only_data():
    from tests.helpers import make_raw

    return prepare(make_raw(num_users=20, num_items=30, per_user=8), PrepareConfig())


def test_anchor_groups_take_the_latest_matching_events():
    history = torch.tensor([[0, 5, 6, 7, 8, 9]])
    member = torch.tensor([[[False, True, False, True, True, True], [False, True, True, False, False, False]]])
    assert last_members(history, member, 2).tolist() == [[[8, 9], [5, 6]]]
    assert last_members(history, member, 4).tolist() == [[[5, 7, 8, 9], [0, 0, 5, 6]]]


def test_event_anchors_on_positive_only_data(positive_only_data):
    # ML-like data: like (rating >= 4) is the only event label -> one "liked" anchor group
    model, inputs = model_and_inputs(tiny(anchors="auto"), positive_only_data)
    assert model.num_anchors == 1 and model.anchor_codes.tolist() == [2]
    liked = model._anchor_items({"history": inputs["history"], "history_event": inputs["history_event"]})
    expected = last_members(inputs["history"], (inputs["history_event"] == 2).unsqueeze(1), 3)
    assert torch.equal(liked, expected) and (liked > 0).any()
    model.loss(inputs)["loss"].backward()


def test_category_anchors_are_the_favourite_topics_top_items(logs):
    model, _ = model_and_inputs(tiny(anchors="categories", anchor_column="topic", anchor_categories=2), logs)
    topic = model.item_category
    assert model.num_anchors == 2 and int(topic.max()) == model.category_top.shape[0] - 1
    popularity = logs.item_popularity("train")
    for c in range(1, model.category_top.shape[0]):  # each topic's items, most popular first
        top = model.category_top[c]
        assert (topic[top[top > 0]] == c).all()
        assert (popularity[top[top > 0]].diff() <= 0).all()
    t1 = int(topic[1])
    t2 = int(topic[1:][topic[1:] != t1][0])
    in_t1, in_t2 = (topic == t1).nonzero().squeeze(1), (topic == t2).nonzero().squeeze(1)
    history = torch.cat([in_t2[:1], in_t1[:3]]).repeat(2, 1)  # t1 three times, t2 once
    history[1, :2] = 0  # second user: only t1
    anchors = model._anchor_items({"history": history})
    assert torch.equal(anchors[0, 0], model.category_top[t1]) and torch.equal(anchors[0, 1], model.category_top[t2])
    assert torch.equal(anchors[1, 0], model.category_top[t1]) and (anchors[1, 1] == 0).all()


@pytest.mark.learns
def test_overfit_tiny_batch(logs):
    torch.manual_seed(seeded())
    model, inputs = model_and_inputs(tiny(reasoning_steps=1), logs)
    keep = inputs["setwise_group"] < 8  # 8 whole groups
    inputs = {k: v[keep] for k, v in inputs.items() if torch.is_tensor(v)}
    check_memorises(model, inputs, 0.97, steps=60, lr=3e-2)


def test_fit_score_save_load_identical(logs, tmp_path):
    ranker = tiny(reasoning_steps=1).fit(logs)
    users = torch.tensor([1, 2, 5, 0])
    batch = logs.user_batch(users, before="test", features=("timestamp", "click", "like", "long_view", "purchase"))
    items = torch.tensor(
        [[1, 2, 3, 0, 9, 10, 11, 12], [4, 0, 5, 6, 7, 8, 9, 10], [7, 8, 9, 10, 1, 2, 3, 4], [1, 2, 0, 0, 0, 0, 0, 0]]
    )
    cands = Candidates(items, torch.zeros(4, 8), torch.ones(4, 8, dtype=torch.long), ["x"])
    scores = ranker.score(batch, cands)
    assert scores["like"].shape == (4, 8) and torch.equal(scores["like"][items == 0], torch.zeros(8))
    assert ((scores["click"][items > 0] > 0) & (scores["click"][items > 0] < 1)).all()
    ranker.save(tmp_path / "op")
    loaded = Ranker.load(tmp_path / "op")
    again = loaded.score(batch, cands)
    assert all(torch.equal(again[t], scores[t]) for t in scores)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="reasoning_steps"):
        tiny(reasoning_steps=4)
    with pytest.raises(ConfigError, match="supervision"):
        tiny(supervision="first")


def test_runs_as_cascade_ranker(tmp_path):
    world = World(WorldConfig(num_users=50, num_items=60, num_topics=4, seed=3))
    dataset = prepare(world.generate_sequences(mean_length=8), name="opworld")
    dataset.save()
    config = from_dict(
        RunConfig,
        {
            "name": "op",
            "dataset": {"name": "opworld"},
            "channels": {"popular": {"name": "popular"}},
            "merge": {"k_total": 20},
            "eval": {"ks": [10, 20]},
            "ranker": {
                "name": "onepiece",
                "dim": 8,
                "layers": 1,
                "heads": 1,
                "reasoning_steps": 1,
                "group_size": 5,
                "features": {"dim": 4},
                "samples": {"max_history": 5},
                "tower_hidden": [],
                "train": dict(TRAIN, batch_size=256),
            },
        },
    )
    cascade = Cascade(config).fit(dataset, tmp_path / "run", progress=lambda m: None)
    page = cascade.recommend(dataset.user_batch(torch.arange(1, 6)), k=5)
    assert page.items.shape == (5, 5) and (page.items > 0).all()
    assert cascade.ranker.tasks == ["view"] and cascade.ranker.model.step_tasks == [["view"], ["view"]]
