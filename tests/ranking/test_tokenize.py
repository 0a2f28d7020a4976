"""Feature tokenisation for the token-based rankers (ranking/tokenize.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from recstack.data.prepare import PrepareConfig, prepare
from recstack.errors import ConfigError
from recstack.ranking.features import FeatureConfig, FeatureEncoder, build_schema
from recstack.ranking.samples import SampleBuilder, SampleConfig
from recstack.ranking.tokenize import FeatureTokenizer, TokenizerConfig
from tests.ranking.test_ranker import planted_world


@pytest.fixture(scope="module")
def setup():
    dataset = prepare(planted_world(num_users=30, per_user=20), PrepareConfig(split="temporal"))
    schema, tables = build_schema(dataset, FeatureConfig(dim=4))
    builder = SampleBuilder(dataset, SampleConfig(max_history=6))
    inputs = builder.train_samples().inputs(6, torch.arange(20, 40))
    return schema, tables, inputs


def make(setup, **overrides) -> FeatureTokenizer:
    schema, tables, _ = setup
    torch.manual_seed(0)
    encoder = FeatureEncoder(schema, FeatureConfig(dim=4)).set_tables(tables)
    return FeatureTokenizer(encoder, 8, TokenizerConfig(**overrides)).eval()


def test_groups_give_one_token_each_plus_global(setup):
    inputs = setup[2]
    tok = make(setup)
    # planted data: user group field, item group field, no scenario (context = request_time features only)
    assert tok.names == ["global", "user", "item_id", "item_side", "context", "sequence_0"]
    tokens = tok(inputs)
    assert tokens.shape == (20, 6, 8) and tok.num_tokens == 6 and torch.isfinite(tokens).all()
    no_global = make(setup, global_token=False, groups=["item", "sequence"])
    assert no_global.names == ["item", "sequence_0"] and no_global(inputs).shape == (20, 2, 8)


def test_each_token_depends_only_on_its_group(setup):
    inputs = setup[2]
    tok = make(setup)
    base = tok(inputs)
    other_user = dict(inputs, users=inputs["users"].roll(1))
    changed = (tok(other_user) - base).abs().sum((0, 2)) > 0
    assert changed.tolist() == [True, True, False, False, False, False]  # global + user only
    timed = dict(inputs, request_time=torch.full((20,), 3600.0 * 7))
    changed = (tok(timed) - base).abs().sum((0, 2)) > 0
    assert changed.tolist() == [True, False, False, False, True, False]


def test_optional_history_time_and_event_change_only_sequence_tokens(setup):
    inputs = setup[2]
    tok = make(setup)
    base = tok(inputs)
    valid = inputs["history"] > 0
    extra = dict(inputs, history_time=valid.float() * 5000.0, history_event=valid.long() * 3)
    changed = (tok(extra) - base).abs().sum((0, 2)) > 0
    assert changed.tolist() == [True, False, False, False, False, True]
    # an empty history gives a finite token; time/event at padding positions are ignored
    empty = dict(inputs, history=torch.zeros_like(inputs["history"]))
    noisy_pad = dict(
        empty,
        history_time=torch.full(inputs["history"].shape, 99.0),
        history_event=torch.full(inputs["history"].shape, 5),
    )
    assert torch.equal(tok(empty), tok(noisy_pad))


def test_autosplit_and_query_former(setup):
    inputs = setup[2]
    split = make(setup, mode="autosplit", num_tokens=5)
    assert split.names == [f"segment_{i}" for i in range(5)] and split(inputs).shape == (20, 5, 8)
    qf = make(setup, sequence="query_former", sequence_tokens=3, sequence_heads=2)
    assert qf.names[-3:] == ["sequence_0", "sequence_1", "sequence_2"] and qf(inputs).shape == (20, 8, 8)
    mean = make(setup, sequence="mean")
    assert mean(inputs).shape == (20, 6, 8)


def test_candidate_tokens_match_the_item_tokens(setup):
    inputs = setup[2]
    tok = make(setup)
    tokens = tok(inputs)
    items = torch.stack([inputs["items"], inputs["items"].roll(3)], 1)  # [N, K=2]
    cand = tok.candidate_tokens(items)
    assert cand.shape == (20, 2, 2, 8)
    assert torch.allclose(cand[:, 0], tokens[:, 2:4], atol=1e-6)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="groups"):
        TokenizerConfig(groups=["user", "nope"])
    with pytest.raises(ConfigError, match="sequence"):
        TokenizerConfig(sequence="lstm")
    with pytest.raises(ConfigError, match="sequence_tokens"):
        TokenizerConfig(sequence_tokens=2)


def test_scenario_feeds_the_context_token_only(setup):
    schema, tables, inputs = setup
    with_scenarios = dataclasses.replace(schema, scenario_names=["home_feed", "search"])
    encoder = FeatureEncoder(with_scenarios, FeatureConfig(dim=4)).set_tables(tables)
    tok = FeatureTokenizer(encoder, 8, TokenizerConfig(request_time=False)).eval()
    assert tok.names == ["global", "user", "item_id", "item_side", "context", "sequence_0"]
    a = tok(dict(inputs, scenario=torch.ones(20, dtype=torch.long)))
    b = tok(dict(inputs, scenario=torch.full((20,), 2)))
    assert ((a - b).abs().sum((0, 2)) > 0).tolist() == [True, False, False, False, True, False]
    without = make(setup, request_time=False)
    assert "context" not in without.names  # no scenario and no request time: the empty group is dropped
