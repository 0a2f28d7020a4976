"""The Kunlun ranker: overfitting, persistence, CompSkip / SWA compute, optional inputs, cascade."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from recstack.cascade import Cascade, RunConfig
from recstack.config import from_dict
from recstack.data.batch import Candidates
from recstack.data.prepare import PrepareConfig, prepare
from recstack.errors import ConfigError
from recstack.ranking.base import Ranker
from recstack.registry import build
from recstack.world import World, WorldConfig
from tests.helpers import seeded
from tests.ranking.ranker_checks import check_memorises, unfitted_model
from tests.ranking.test_ranker import planted_world

TINY = {
    "name": "kunlun",
    "features": {"dim": 8},
    "samples": {"max_history": 12},
    "dim": 16,
    "layers": 3,
    "summary_tokens": 2,
    "events": {"all": {"dim": 8, "heads": 2, "tokens": 2, "seeds": 4, "window": 3}},
    "experts": 2,
    "fm_rank": 2,
    "expert_hidden": 16,
    "mmoe_experts": 2,
    "mmoe_hidden": [16],
    "tower_hidden": [8],
    "score_rows": 64,
    "train": {"epochs": 1, "batch_size": 256, "lr": 1e-2, "patience": 0, "progress": False, "seed": seeded()},
}
# Event-level personalisation: liked events (code 3) get a wider stream than click-only ones (code 2).
STREAMS = {
    "liked": {"codes": [3], "dim": 8, "heads": 2, "tokens": 2, "seeds": 4, "window": 4},
    "clicked": {"codes": [2], "dim": 4, "heads": 1, "tokens": 1, "seeds": 2, "window": 2, "layers": 1, "max_len": 6},
}


@pytest.fixture(scope="module")
def planted():
    return prepare(
        planted_world(num_users=30, per_user=24),
        PrepareConfig(split="temporal", valid_fraction=0.15, test_fraction=0.15),
    )


def model_and_inputs(dataset, rows: int = 32, **overrides):
    model, builder = unfitted_model(build("ranker", {**TINY, **overrides}), dataset)
    samples = builder.train_samples()
    return model, samples.inputs(12, torch.linspace(0, len(samples) - 1, rows).long())  # rows of many users


def forward_flops(model, inputs) -> int:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(inputs)
    return counter.get_total_flops()


@pytest.mark.learns
def test_overfits_a_tiny_batch(planted):
    model, inputs = model_and_inputs(planted, events=STREAMS)
    check_memorises(model, inputs, 0.99, steps=60, lr=1e-2)


def test_fit_save_load_gives_identical_scores(planted, tmp_path):
    ranker = build("ranker", {**TINY, "events": STREAMS}).fit(planted)
    batch = planted.user_batch(torch.tensor([1, 2, 0]), before="test", features=("timestamp", "click"))
    items = torch.tensor([[1, 2, 3, 0], [4, 0, 5, 6], [1, 2, 0, 0]])
    candidates = Candidates(items, torch.zeros(3, 4), torch.ones(3, 4, dtype=torch.long), ["x"])
    scores = ranker.score(batch, candidates)
    assert scores["like"].shape == (3, 4) and torch.equal(scores["like"][items == 0], torch.zeros(4))
    ranker.save(tmp_path / "kunlun")
    loaded = Ranker.load(tmp_path / "kunlun")
    assert loaded.config.events["clicked"].max_len == 6
    again = loaded.score(batch, candidates)
    assert all(torch.equal(again[t], scores[t]) for t in scores)


def test_compskip_and_swa_flags_cut_flops(planted):
    flops = {}
    for compskip in (False, True):
        for swa in (False, True):
            model, inputs = model_and_inputs(planted, compskip=compskip, swa=swa, trim_padding=False)
            flops[compskip, swa] = forward_flops(model, inputs)
    assert flops[True, True] < flops[False, True] and flops[True, False] < flops[False, False]
    assert flops[False, True] < flops[False, False] and flops[True, True] < flops[True, False]
    # SWA only changes the attention matmuls; CompSkip removes GDPA + HSP from local layers too, so it saves more
    assert flops[False, False] - flops[True, False] > flops[False, False] - flops[False, True]
    with pytest.raises(ConfigError, match="events.all.seeds"):
        build("ranker", {**TINY, "events": {"all": {"seeds": 2, "tokens": 2}}})


def test_uses_time_and_event_inputs_when_present_and_works_without(planted):
    model, inputs = model_and_inputs(planted, events=STREAMS, rote_phase="gap")
    assert {"history_time", "history_event"} <= set(inputs)
    model.eval()
    with torch.no_grad():
        full = model(inputs)["like"]
        valid = inputs["history"] > 0
        later = model({**inputs, "history_time": inputs["history_time"] + 500.0 * valid})["like"]
        no_time = model({k: v for k, v in inputs.items() if k != "history_time"})["like"]
        no_event = model({k: v for k, v in inputs.items() if k != "history_event"})["like"]
        bare = model({k: v for k, v in inputs.items() if k not in ("history_time", "history_event", "request_time")})
    assert torch.allclose(later, full, atol=1e-5)  # "gap" phases see only differences between event times
    assert not torch.equal(no_time, full)  # time gaps were used (the fallback is positions)
    assert not torch.equal(no_event, full)  # event types route events to streams
    assert all(torch.isfinite(t).all() for t in (full, no_time, no_event, bare["like"], bare["click"]))


def test_runs_as_the_cascade_ranker(tmp_path):
    world = World(WorldConfig(num_users=40, num_items=60, num_topics=4, seed=3))
    dataset = prepare(world.generate_sequences(mean_length=8), name="tinyworld")
    dataset.save()
    ranker = {k: v for k, v in TINY.items() if k != "score_rows"}
    config = from_dict(
        RunConfig,
        {
            "name": "k",
            "dataset": {"name": "tinyworld"},
            "channels": {"popular": {"name": "popular"}, "itemcf": {"name": "itemcf"}},
            "ranker": ranker,
            "merge": {"k_total": 20, "quotas": {"popular": 10, "itemcf": 10}},
            "eval": {"ks": [10]},
        },
    )
    cascade = Cascade(config).fit(dataset, tmp_path / "run", progress=lambda m: None)
    page = cascade.recommend(dataset.user_batch(torch.arange(1, 6)), k=5)
    assert page.items.shape == (5, 5) and (page.items > 0).all()
    assert type(cascade.ranker).__name__ == "KunlunRanker"


def test_trimming_padding_changes_no_score_and_rows_do_not_depend_on_their_batch(planted):
    model, inputs = model_and_inputs(planted, events=STREAMS, rows=16)
    model.eval()
    with torch.no_grad():
        trimmed = model(inputs)["like"]
        model.config.trim_padding = False
        untrimmed = model(inputs)["like"]
        model.config.trim_padding = True
        alone = model({k: v[3:4] if torch.is_tensor(v) else v for k, v in inputs.items() if k != "labels"})["like"]
    assert (inputs["history"] > 0).sum(1).max() < inputs["history"].shape[1]  # there was padding to trim
    assert torch.allclose(trimmed, untrimmed, atol=1e-5)
    assert torch.allclose(alone, trimmed[3:4], atol=1e-5)
