"""The generative retriever as a cascade channel: semantic IDs fitted in fit(), clean candidate lists,
and a tiny `recstack run` with a TIGER channel."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from recstack.cli.main import app
from recstack.data.prepare import prepare
from recstack.registry import build
from recstack.semantic_ids.semantic_ids import SemanticIds
from recstack.world import World, WorldConfig

TINY = {
    "name": "tiger",
    "dim": 16,
    "heads": 2,
    "head_dim": 8,
    "ffn_dim": 32,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "max_len": 5,
    "beam_size": 8,
    "eval_users": 20,
    "user_buckets": 8,
    "sid_encoder": {"name": "collab", "options": {"dim": 16, "train": {"epochs": 1}}},
    "sid_quantizer": {"name": "rq_kmeans", "levels": 2, "codebook_size": 6},
    "train": {"epochs": 1, "batch_size": 128, "progress": False},
}


@pytest.fixture
def world_dataset():
    world = World(WorldConfig(num_users=60, num_items=50, num_topics=4, seed=3))
    dataset = prepare(world.generate_sequences(mean_length=8), name="tinyworld")
    dataset.save()
    return dataset


def test_channel_fits_semantic_ids_and_returns_clean_lists(world_dataset):
    retriever = build("retriever", TINY).fit(world_dataset)
    assert retriever.sids.num_items == world_dataset.num_items and retriever.sids.levels == 3
    batch = world_dataset.user_batch(torch.arange(1, 41))
    k = 45  # more than some users have non-history items: empty slots must show as 0 / -inf, last
    cands = retriever.retrieve(batch, k)
    assert cands.items.shape == (40, k)
    for row in range(40):
        items = cands.items[row]
        real = items > 0
        history = set(batch.history.row(row).tolist())
        assert len(set(items[real].tolist())) == int(real.sum())
        assert not history & set(items[real].tolist())
        assert int(real.sum()) == min(k, world_dataset.num_items - len(history))
        assert torch.isinf(cands.scores[row][~real]).all() and bool((real[:-1] >= real[1:]).all())
    kept = retriever.retrieve(batch, 10, exclude_history=False).items
    assert (kept > 0).all()
    retriever.config.constrained = False
    retriever.retrieve(batch, 10)
    assert 0.0 <= retriever.last_decode["invalid_share"] <= 1.0
    # evaluate() reports the user-weighted share over all its batches, not the last batch's
    retriever.config.eval_batch_size = 7
    retriever.evaluate(world_dataset, "test", (10,))
    users, _ = world_dataset.eval_users("test")
    history = world_dataset.user_batch(users, before="test")
    shares = []
    for start in range(0, users.numel(), 7):
        rows = torch.arange(start, min(start + 7, users.numel()))
        retriever.retrieve(history.select(rows), 10)
        shares.append(rows.numel() * retriever.last_decode["invalid_share"])
    retriever.evaluate(world_dataset, "test", (10,))
    assert retriever.last_decode["invalid_share"] == pytest.approx(sum(shares) / users.numel())


def test_tiger_channel_in_recstack_run(world_dataset, tmp_path):
    gen = torch.Generator().manual_seed(0)
    SemanticIds.from_codes(torch.randint(0, 5, (world_dataset.num_items, 2), generator=gen), [5, 5]).save(
        tmp_path / "sid"
    )
    channel = {**TINY, "semantic_ids": str(tmp_path / "sid")}  # codes given: no encoder / quantizer fit
    config = {
        "name": "gen",
        "dataset": {"name": "tinyworld"},
        "ranker": None,
        "channels": {"popular": {"name": "popular"}, "tiger": channel},
        "merge": {"k_total": 30, "quotas": {"popular": 10, "tiger": 20}},
        "eval": {"ks": [10, 30]},
        "expect": {"test/page/ndcg@10": {"min": 0.0}},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", str(path), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((runs / "gen" / "metrics.json").read_text())
    assert "tiger" in json.dumps(metrics)
    assert (runs / "gen" / "channels" / "tiger" / "sid" / "codes.safetensors").is_file()
    result = CliRunner().invoke(app, ["run", str(path), "--runs-dir", str(runs)])  # reloads the saved channel
    assert result.exit_code == 0 and "loaded from" in result.output


def test_batches_follow_the_documented_contract():
    import numpy as np
    import polars as pl

    from recstack.data.prepare import PrepareConfig
    from recstack.data.tables import RawTables
    from recstack.retrieval.generative.data import GenerativeData, history_tensors

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(6), 7)
    frame = pl.DataFrame(
        {
            "user": [f"u{u}" for u in users],
            "item": [f"i{i}" for i in rng.integers(0, 9, users.size)],
            "timestamp": np.tile(np.arange(7), 6).astype(np.int64),
            "click": rng.integers(0, 2, users.size).astype(np.int8),
            "buy": rng.integers(0, 2, users.size).astype(np.int8),
        }
    )
    dataset = prepare(RawTables("ev", frame, labels=["click", "buy"]), PrepareConfig())
    sids = SemanticIds.from_codes(torch.arange(dataset.num_items)[:, None] % 3, [3])
    data = GenerativeData(dataset, sids, max_len=3, train_targets="all")
    assert data.event_names == ["click", "buy"]
    train = dataset.sequences(before="valid")
    assert data.num_samples == int((train.lengths() - 1).clamp(min=0).sum())
    rows = torch.arange(data.num_samples)
    batch = data.collate(rows)
    for row in range(0, data.num_samples, 5):  # each row: the 3 items before its target, right-aligned
        user = int(batch["users"][row])
        seq = train.row(user).tolist()
        end = int(data.windows.ends[row]) - int(train.offsets[user])
        assert int(batch["target_items"][row]) == seq[end - 1]
        hist = batch["history_items"][row][batch["history_mask"][row]].tolist()
        assert hist == seq[max(0, end - 4) : end - 1]
    assert torch.equal(batch["history_codes"], sids.codes[batch["history_items"]])
    assert torch.equal(batch["target_codes"], sids.codes[batch["target_items"]])
    # events: 0 on padding; 1 + index of the last positive label (click = 1, buy = 2)
    assert (batch["history_events"][~batch["history_mask"]] == 0).all()
    frame = dataset.interactions.filter(pl.col("split") == 0)
    expect = np.where(frame["buy"].to_numpy() > 0, 2, np.where(frame["click"].to_numpy() > 0, 1, 0))
    assert data.events.tolist() == expect.tolist()
    last = GenerativeData(dataset, sids, max_len=3, train_targets="last")
    assert last.num_samples == int((train.lengths() >= 2).sum())
    ub = dataset.user_batch(torch.tensor([1, 2]), features=("click", "buy"))
    out = history_tensors(ub, sids, 3, data.event_columns)
    assert out["history_items"].shape == (2, 3) and out["history_events"].max() <= 2
    assert out["history_items"][0].tolist() == ub.history.row(0).tolist()[-3:]
