"""Benchmark worlds: deterministic, cached by config digest, full funnel and several scenarios."""

from __future__ import annotations

import pytest

from recstack.errors import ConfigError
from recstack.world.benchmark_data import BenchmarkWorldConfig, benchmark_world
from tests.helpers import check_at_least, seeded

TINY = {
    "name": "tiny-world",
    "world": {"num_users": 60, "num_items": 80, "num_topics": 4, "num_interactions": 3000, "chunk_size": 1000},
}


def test_generated_once_then_loaded_from_the_cache(tmp_path):
    first = benchmark_world(TINY, data_dir=tmp_path)
    assert first.interactions.height == 3000
    assert set(first.labels) == {"click", "like", "long_view", "purchase"}
    assert len(first.meta["scenario_names"]) == 4  # the ranking world's four scenarios
    assert first.meta["split"] == "temporal" and first.meta["counts"]["test"] > 0
    assert first.meta["generation"]["generate_seconds"] >= 0
    folders = [p.name for p in tmp_path.iterdir()]
    assert len(folders) == 1 and folders[0].startswith("tiny-world-") and len(folders[0]) == len("tiny-world-") + 12
    again = benchmark_world(TINY, data_dir=tmp_path)
    assert again.interactions.equals(first.interactions)
    assert [p.name for p in tmp_path.iterdir()] == folders  # no second folder, no temp left


def test_digest_follows_every_setting(tmp_path):
    base = BenchmarkWorldConfig()
    other = BenchmarkWorldConfig()
    assert base.digest() == other.digest()
    other.world.seed += 1
    assert base.digest() != other.digest()
    other = BenchmarkWorldConfig()
    other.prepare.test_fraction = 0.2
    assert base.digest() != other.digest()
    assert base.world.num_interactions >= 1_000_000 and len(base.world.scenarios) >= 3


def test_same_config_same_data_in_a_fresh_cache(tmp_path):
    a = benchmark_world(TINY, data_dir=tmp_path / "a")
    b = benchmark_world(TINY, data_dir=tmp_path / "b")
    assert a.interactions.equals(b.interactions)


def test_bad_name_is_an_error():
    with pytest.raises(ConfigError, match="name"):
        BenchmarkWorldConfig(name="a/b")


@pytest.mark.learns
def test_oracle_metrics_beat_chance(tmp_path):
    from recstack.world.benchmark_data import oracle_metrics

    spec = {**TINY, "world": {**TINY["world"], "seed": seeded(0)}}
    dataset = benchmark_world(spec, data_dir=tmp_path)
    blind = oracle_metrics(dataset, spec, positions=False)
    full = oracle_metrics(dataset, spec)
    assert set(blind) >= {"click/auc", "click/gauc", "purchase/logloss"}
    check_at_least(full["click/auc"], 0.6, "oracle click AUC")
    check_at_least(blind["click/auc"], 0.55, "position-blind oracle click AUC")
