"""Shared checks for the sequence rankers (mtfm, hstu_ranker): tiny world data, model building, overfitting,
save -> load, grouped scoring and the no-leakage property of user-level aggregation."""

from __future__ import annotations

import torch

from recstack.data.batch import Candidates
from recstack.data.prepare import PrepareConfig, prepare
from recstack.eval.pointwise import auc
from recstack.ranking.base import Ranker
from recstack.ranking.features import build_schema
from recstack.ranking.samples import SampleBuilder
from recstack.registry import build
from recstack.world import World, WorldConfig
from tests.helpers import check_at_least, seeded

TINY_TRAIN = {"epochs": 2, "batch_size": 128, "lr": 5e-3, "patience": 0, "progress": False, "seed": seeded()}
WINDOW = 3 * 86400.0  # aggregation window: several requests of a user per group in the tiny world


def tiny_world():
    """Impression log with scenarios, timestamps and the click -> long_view -> like -> purchase funnel."""
    world = World(WorldConfig(num_users=40, num_items=60, num_topics=4, seed=seeded(1)))
    return prepare(world.generate_logs(1500), PrepareConfig(split="temporal", valid_fraction=0.15, test_fraction=0.15))


def tiny_model(dataset, spec: dict):
    """(ranker, builder, model with tables set) without fitting."""
    ranker = build("ranker", {"train": dict(TINY_TRAIN), **spec})
    builder = SampleBuilder(dataset, ranker.config.samples)
    ranker.tasks, ranker.event_labels, ranker.time_scale = builder.tasks, builder.event_labels, builder.time_scale
    schema, tables = build_schema(dataset, ranker.config.features)
    ranker.schema, ranker.history_label = schema, builder.history_label
    torch.manual_seed(seeded())
    ranker.model = ranker.build_model(schema)
    ranker.model.features.set_tables(tables)
    return ranker, builder, ranker.model


def spread_rows(samples, n: int) -> torch.Tensor:
    """n random sample rows (consecutive rows are one user's page: the same item recurs with other labels)."""
    return torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))[:n]


def overfit_aucs(model, inputs: dict, steps: int = 150, lr: float = 5e-3) -> list[float]:
    """Memorise random labels of one batch; returns the AUC per task afterwards.

    The defaults suit the sequence rankers (hstu_ranker, mtfm). At lr 1e-2 to 2e-2 the first steps switch off
    every ReLU unit of an 8-wide task tower on some rows: their logit is stuck at the tower's output bias and no
    gradient reaches them again (hstu_ranker, seed 4: AUC 0.87 after 40 steps at 2e-2, 0.96 for good at 1e-2).
    At 5e-3 every task reaches AUC 1 within about 100 steps at seeds 0-19."""
    gen = torch.Generator().manual_seed(seeded())
    inputs = dict(
        inputs, labels={t: (torch.rand(len(inputs["items"]), generator=gen) < 0.5).float() for t in model.tasks}
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model.loss(inputs)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(inputs)
    return [auc(inputs["labels"][t], logits[t]) for t in model.tasks]


def check_memorises(model, inputs: dict, floor: float, steps: int = 150, lr: float = 5e-3) -> None:
    """Every task's AUC on random labels of one batch reaches `floor` after `steps` Adam steps."""
    check_at_least(
        min(overfit_aucs(model, inputs, steps, lr)), floor, f"min task AUC memorising random labels, {steps} steps"
    )


def candidates(dataset, users: torch.Tensor, k: int = 6) -> Candidates:
    gen = torch.Generator().manual_seed(3)
    items = torch.randint(1, dataset.num_items + 1, (users.numel(), k), generator=gen)
    items[:, -1] = 0  # an empty slot
    return Candidates(items, torch.zeros(items.shape), torch.ones(items.shape, dtype=torch.long), ["x"])


def score_batch(dataset, users: torch.Tensor):
    batch = dataset.user_batch(users, before="test", features=("timestamp", *dataset.labels))
    batch.scenario = torch.arange(users.numel()) % 3
    return batch


def check_save_load_and_grouped_scoring(ranker: Ranker, dataset, tmp_path) -> None:
    """Identical scores after save -> load; scoring a user's K candidates in one grouped sequence equals
    scoring every candidate alone (targets are isolated from each other)."""
    users = torch.tensor([1, 2, 3, 0])
    batch, cands = score_batch(dataset, users), candidates(dataset, users)
    scores = ranker.score(batch, cands)
    assert scores[ranker.tasks[0]].shape == (4, 6) and scores[ranker.tasks[0]][:, -1].eq(0).all()
    ranker.save(tmp_path / "saved")
    loaded = Ranker.load(tmp_path / "saved")
    assert loaded.event_labels == ranker.event_labels and loaded.time_scale == ranker.time_scale
    again = loaded.score(batch, cands)
    assert all(torch.equal(again[t], scores[t]) for t in scores)
    loaded.config.aggregate_users = not ranker.config.aggregate_users  # the other layout, same weights
    other = loaded.score(batch, cands)
    assert all(torch.allclose(other[t], scores[t], atol=1e-5) for t in scores)


def check_no_leakage(model, inputs: dict) -> None:
    """In a grouped batch, changing the events after a row's request leaves that row's logits unchanged but
    changes the logits of a later row that may see them."""
    assert "group" in inputs
    model.eval()
    with torch.no_grad():
        before = model(inputs)
    offset, group, ages = inputs["group_offset"], inputs["group"], inputs["group_history_time"]
    row = int(torch.argmax(offset))  # the earliest request of its group: the most events are hidden from it
    hidden = (ages[group[row]] <= offset[row]) & (inputs["group_history"][group[row]] > 0)
    assert hidden.any(), "the tiny batch must hold a group with events after one of its requests"
    changed = dict(inputs, group_history=inputs["group_history"].clone())
    changed["group_history"][group[row], hidden] = changed["group_history"][group[row], hidden] % 50 + 1
    with torch.no_grad():
        after = model(changed)
    later = (group == group[row]) & (offset < ages[group[row]][hidden].max())  # rows that see a changed event
    for task in model.tasks:
        assert torch.allclose(after[task][row], before[task][row], atol=1e-5)
        assert not torch.allclose(after[task][later], before[task][later], atol=1e-6)


def check_cascade(dataset, spec: dict, tmp_path) -> None:
    """The ranker inside a tiny cascade (one retrieval channel): fit, recommend, save -> load -> same pages."""
    from recstack.cascade import Cascade, RunConfig, history_features
    from recstack.config import from_dict

    config = from_dict(
        RunConfig,
        {
            "name": "t",
            "dataset": {"name": dataset.name},
            "channels": {"popular": {"name": "popular"}},
            "ranker": {**spec, "train": {"epochs": 1, "batch_size": 256, "progress": False, "patience": 0}},
            "merge": {"k_total": 20, "quotas": {"popular": 20}},
            "eval": {"ks": [10, 20]},
        },
    )
    cascade = Cascade(config).fit(dataset, tmp_path / "run", progress=lambda message: None)
    cascade.save(tmp_path / "run")
    batch = dataset.user_batch(torch.arange(1, 11), features=history_features(dataset))
    page = cascade.recommend(batch, k=5)
    assert page.items.shape == (10, 5) and (page.items > 0).all()
    assert torch.equal(Cascade.load(tmp_path / "run").recommend(batch, k=5).items, page.items)


def unfitted_model(ranker, dataset):
    """(an unfitted model of `ranker` for `dataset` with its feature tables set, the SampleBuilder)."""
    from recstack.ranking.features import build_schema
    from recstack.ranking.samples import SampleBuilder

    builder = SampleBuilder(dataset, ranker.config.samples)
    ranker.tasks = builder.tasks
    schema, tables = build_schema(dataset, ranker.config.features)
    torch.manual_seed(seeded())
    model = ranker.build_model(schema)
    model.features.set_tables(tables)
    return model, builder
