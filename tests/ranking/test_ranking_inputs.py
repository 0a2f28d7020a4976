"""The optional time / behaviour inputs of ranking samples and of Ranker.score, and user-level groups."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from recstack.data.prepare import PrepareConfig, prepare
from recstack.data.tables import RawTables
from recstack.errors import ConfigError
from recstack.ranking.base import Ranker, RankerConfig
from recstack.ranking.samples import SampleBuilder, SampleConfig

# user a: (time, item, click, like, long_view, split); user b likewise.
EVENTS = {
    "a": [
        (100, "i1", 1, 0, 0, "train"),
        (200, "i2", 0, 0, 0, "train"),
        (300, "i3", 1, 1, 0, "train"),
        (400, "i4", 1, 0, 1, "train"),
        (500, "i5", 1, 1, 0, "valid"),
        (600, "i6", 0, 0, 0, "test"),
    ],
    "b": [
        (150, "i2", 1, 0, 0, "train"),
        (250, "i1", 0, 0, 0, "train"),
        (350, "i3", 1, 0, 0, "valid"),
        (450, "i4", 0, 0, 0, "test"),
    ],
}
# positive rates: click 6/10, like 2/10, long_view 1/10 -> funnel click -> like -> long_view,
# codes: 1 none positive, 2 click, 3 like, 4 long_view.


def tiny_raw(
    timestamp_kind: str = "unix_seconds", labels: tuple[str, ...] = ("click", "like", "long_view")
) -> RawTables:
    rows = [(u, *e) for u, events in EVENTS.items() for e in events]
    frame = pl.DataFrame(
        {
            "user": [r[0] for r in rows],
            "timestamp": [r[1] for r in rows],
            "item": [r[2] for r in rows],
            "click": [r[3] for r in rows],
            "like": [r[4] for r in rows],
            "long_view": [r[5] for r in rows],
            "split": [r[6] for r in rows],
        },
        schema_overrides={"click": pl.Int8, "like": pl.Int8, "long_view": pl.Int8},
    )
    frame = frame.select(["user", "item", "timestamp", *labels, "split"])
    items = pl.DataFrame({"item": [f"i{i}" for i in range(1, 7)]})
    return RawTables(
        "tiny",
        frame,
        items=items,
        users=pl.DataFrame({"user": ["a", "b"]}),
        labels=list(labels),
        timestamp_kind=timestamp_kind,
    )


@pytest.fixture(scope="module")
def tiny():
    return prepare(tiny_raw(), PrepareConfig(split="given"))


def ids(dataset, *raw: str) -> list[int]:
    names = dataset.raw_item_ids()
    return [0 if r is None else names.index(r) + 1 for r in raw]  # ids start at 1


def test_train_inputs_values(tiny):
    builder = SampleBuilder(tiny, SampleConfig(max_history=3))
    assert builder.event_labels == ["click", "like", "long_view"] and builder.history_label == "click"
    samples = builder.train_samples()
    inputs = samples.inputs(3)
    times = samples.time.tolist()
    row = times.index(400)  # user a's request at t=400: clicked train events before it are i1 @100, i3 @300
    assert inputs["history"][row].tolist() == ids(tiny, None, "i1", "i3")
    assert inputs["history_time"][row].tolist() == [0.0, 300.0, 100.0]
    assert inputs["history_event"][row].tolist() == [0, 2, 3]
    assert inputs["request_time"].dtype == torch.float64 and inputs["request_time"][row] == 400.0
    first = times.index(100)  # nothing before the first event: all padding, all zeros
    assert inputs["history"][first].eq(0).all() and inputs["history_time"][first].eq(0).all()
    assert inputs["history_event"][first].eq(0).all()
    assert (inputs["history_time"] >= 0).all() and ((inputs["history"] == 0) == (inputs["history_event"] == 0)).all()


def test_eval_inputs_match_score_inputs(tiny):
    """What the model sees at scoring (UserBatch with the request time) equals the valid samples' inputs."""
    builder = SampleBuilder(tiny, SampleConfig(max_history=4))
    valid = builder.eval_samples("valid")
    expected = valid.inputs(4)
    ranker = Ranker(RankerConfig(samples=SampleConfig(max_history=4)))
    ranker.history_label, ranker.event_labels, ranker.time_scale = "click", builder.event_labels, builder.time_scale
    batch = tiny.user_batch(valid.users, before="valid", features=("timestamp", "click", "like", "long_view"))
    batch.time = valid.time
    got = ranker.history_inputs(batch)
    for key in ("history", "history_time", "history_event", "request_time"):
        assert torch.equal(got[key], expected[key]), key
    # user a at t=500: clicked train events i1 @100, i3 @300, i4 @400 (click + long_view)
    a = valid.time.tolist().index(500)
    assert got["history_time"][a].tolist() == [0.0, 400.0, 200.0, 100.0]
    assert got["history_event"][a].tolist() == [0, 2, 3, 4]
    # Without batch.time, "now" is one second after the latest event the batch holds.
    batch.time = None
    assert ranker.history_inputs(batch)["request_time"][a] == 401.0


def test_inputs_absent_without_timestamps_or_labels(tiny):
    order = prepare(tiny_raw(timestamp_kind="order"), PrepareConfig(split="given"))
    inputs = SampleBuilder(order, SampleConfig()).train_samples().inputs(4)
    assert "history_time" not in inputs and "request_time" not in inputs and "history_event" in inputs
    # A single constant label (positive-only log) tells nothing: no history_event.
    only_click = tiny_raw(labels=("click",)).interactions.filter(pl.col("click") == 1)
    raw = tiny_raw(labels=("click",))
    raw.interactions = only_click
    positive = prepare(raw, PrepareConfig(split="given"))
    builder = SampleBuilder(positive, SampleConfig())
    assert builder.positive_only and builder.event_labels == []
    assert "history_event" not in builder.train_samples().inputs(4)
    explicit = SampleBuilder(tiny, SampleConfig(event_labels=["like"])).train_samples().inputs(3)
    assert set(explicit["history_event"].unique().tolist()) <= {0, 1, 2}
    assert "history_event" not in SampleBuilder(tiny, SampleConfig(event_labels=[])).train_samples().inputs(3)
    with pytest.raises(ConfigError, match="event_labels"):
        SampleBuilder(tiny, SampleConfig(event_labels=["purchase"]))


def test_group_inputs_share_one_history_per_user(tiny):
    builder = SampleBuilder(tiny, SampleConfig(max_history=6, history_label=None))
    samples = builder.train_samples()
    inputs = samples.inputs(6, group_window=1e6)  # one window: one group per user
    group = inputs["group"]
    assert inputs["group_history"].shape[0] == 2
    assert torch.equal(group, (samples.users != samples.users[0]).long())  # users sorted: a -> 0, b -> 1
    for row in range(len(samples)):  # visible group events = exactly the row's own history
        g = group[row]
        visible = inputs["group_history_time"][g] > inputs["group_offset"][row]
        shown = inputs["group_history"][g][visible].tolist()
        own = inputs["history"][row][inputs["history"][row] > 0].tolist()
        assert shown == own, row
    a_rows = (samples.time < 1000) & (samples.users == samples.users[0])
    assert inputs["group_offset"][a_rows].min() == 0.0
    rows = samples.group_rows(1e6)
    assert rows.num_rows == 2 and sorted(rows.values.tolist()) == list(range(len(samples)))
    small = samples.inputs(6, group_window=100.0)  # windows of 100 s: every request its own group
    assert small["group"].unique().numel() == len(samples) and small["group_offset"].eq(0).all()


def test_aggregated_loader_batches_whole_groups(tiny):
    """aggregate_users: a training batch holds every sample of each (user, window) group it touches; a model
    that ignores the group inputs (dcn_din_mmoe) trains on it unchanged."""
    from recstack.registry import build

    ranker = build(
        "ranker",
        {
            "name": "dcn_din_mmoe",
            "features": {"dim": 4},
            "samples": {"max_history": 3},
            "aggregate_users": True,
            "aggregate_window": 250.0,
            "deep_hidden": [8],
            "expert_hidden": [8],
            "tower_hidden": [4],
            "attention_hidden": [4],
            "num_experts": 2,
            "train": {"batch_size": 3, "progress": False},
        },
    )
    builder = SampleBuilder(tiny, ranker.config.samples)
    train = builder.train_samples()
    source = ranker._train_source(builder, train, None)
    bucket = train.time // 250
    for g in range(source.num_rows):
        batch = source.collate(torch.tensor([g]))
        users, buckets = batch["users"], batch["request_time"].long() // 250
        assert (users == users[0]).all() and (buckets == buckets[0]).all()  # one group ...
        assert len(users) == int(((train.users == users[0]) & (bucket == buckets[0])).sum())  # ... complete
        assert batch["group"].eq(0).all() and batch["group_history"].shape[0] == 1
    assert source.num_rows == len({(int(u), int(b)) for u, b in zip(train.users, bucket)})
    ranker.tasks, ranker.event_labels, ranker.time_scale = builder.tasks, builder.event_labels, builder.time_scale
    from recstack.ranking.features import build_schema

    schema, tables = build_schema(tiny, ranker.config.features)
    model = ranker.build_model(schema)
    model.features.set_tables(tables)
    batch = source.collate(torch.arange(source.num_rows))
    assert torch.isfinite(model.loss(batch)["loss"])
