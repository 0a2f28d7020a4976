"""Every configs/ranking/*.yaml parses into a valid ranker config (all datasets, every scaling size)."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.ranking import DATASETS, RankingBenchConfig, check_expect, load_bench_config, merge

from recstack.config import from_dict
from recstack.errors import ConfigError
from recstack.ranking.base import Ranker

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "ranking").glob("*.yaml"))


def test_the_baseline_config_exists():
    assert "dcn_din_mmoe" in [p.stem for p in CONFIGS]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_a_ranker(path):
    config = load_bench_config(path)
    assert config.name == path.stem and config.ranker["name"]
    for dataset in DATASETS:
        ranker = config.build_ranker(dataset)
        assert isinstance(ranker, Ranker) and ranker.name == config.ranker["name"]
    for size in range(len(config.scale)):
        assert isinstance(config.build_ranker("world", size), Ranker)
    for key, spec in config.expect.items():
        dataset, split, *metric = key.split("/")
        assert dataset in DATASETS and split == "test" and len(metric) == 2, key
        assert spec.min is not None or spec.max is not None or spec.value is not None, key


def test_bad_configs_fail_with_the_key():
    with pytest.raises(ConfigError, match="name"):
        RankingBenchConfig(name="x", ranker={"dim": 3})
    with pytest.raises(ConfigError, match="datasets.criteo"):
        RankingBenchConfig(name="x", ranker={"name": "dcn_din_mmoe"}, datasets={"criteo": {}})
    with pytest.raises(ConfigError, match="at least 4"):
        RankingBenchConfig(name="x", ranker={"name": "dcn_din_mmoe"}, scale=[{}, {}])
    with pytest.raises(ConfigError, match="no_such_key"):
        RankingBenchConfig(name="x", ranker={"name": "dcn_din_mmoe", "no_such_key": 1}).build_ranker("world")


def test_merge_and_expect_checks():
    assert merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}, "d": 1}
    config = from_dict(
        RankingBenchConfig,
        {
            "name": "x",
            "ranker": {"name": "dcn_din_mmoe"},
            "expect": {
                "world/test/click/auc": {"value": 0.70, "tolerance": 0.01},
                "ml-100k/test/like/auc": {"min": 0.6},
            },
        },
    )
    checks = check_expect(config, "world", {"click/auc": 0.705, "click/gauc": 0.6})
    assert [(c["metric"], c["pass"]) for c in checks] == [("world/test/click/auc", True)]
    assert not check_expect(config, "world", {"click/auc": 0.72})[0]["pass"]
    with pytest.raises(ConfigError, match="no such metric"):
        check_expect(config, "ml-100k", {"click/auc": 0.7})


def test_markdown_table_has_one_row_per_config_and_ablation():
    from benchmarks.ranking import markdown_table

    def record(config, auc, sets=()):
        return {
            "kind": "benchmark",
            "dataset": "world",
            "model": "m",
            "config": config,
            "set": list(sets),
            "tasks": ["click"],
            "test": {"click/auc": auc, "click/gauc": 0.6},
            "params": {"dense": 2_000_000, "activated": 1_000_000, "embedding": 500_000},
            "flops_per_sample": {"forward": 1.5e6},
            "throughput": {"train_e2e_samples_per_s": 1234.0},
            "mfu": {"train_e2e": 0.0123},
            "train_samples_seen": 163840,
        }

    table = markdown_table(
        [
            record("a", 0.61),
            record("a", 0.62),
            record("a", 0.60, ["layers=1"]),
            {**record("b", 0.7), "dataset": "ml-100k"},
        ],
        "world",
    )
    lines = table.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| model | click AUC / GAUC")
    assert lines[2].startswith("| a | 0.6200 / 0.6000 | 2.00M (1.00M) | 0.50M | 1.50M | 1,234 | 1.23% | 164k")
    assert lines[3].startswith("| a [layers=1] | 0.6000")
    assert "no ranking results" in markdown_table([], "world")


def test_update_expect_rewrites_only_the_expect_block(tmp_path):
    from benchmarks.ranking import update_expect

    path = tmp_path / "x.yaml"
    head = "name: x\nranker: {name: dcn_din_mmoe}\n# # # expect: measured values, see benchmarks/ranking.py\n"
    path.write_text(head + "expect:\n  world/test/click/auc: {value: 0.5, tolerance: 0.01}\n")
    run = {
        "kind": "benchmark",
        "dataset": "world",
        "config": "x",
        "set": [],
        "date": "2026-11-30T13:00:00+00:00",
        "train_samples_seen": 800_000,
        "test": {"click/auc": 0.61234, "click/gauc": 0.6, "purchase/auc": 0.7},
    }
    ablation = {**run, "set": ["layers=1"], "test": {"click/auc": 0.9}}
    update_expect(path, [run, ablation, {**run, "config": "other", "test": {"click/auc": 0.1}}])
    text = path.read_text()
    assert text.startswith(head) and "0.5," not in text
    config = load_bench_config(path)
    assert config.expect["world/test/click/auc"].value == 0.6123
    assert config.expect["world/test/purchase/auc"].tolerance == 0.02
    assert set(config.expect) == {"world/test/click/auc", "world/test/click/gauc", "world/test/purchase/auc"}
    assert not list(tmp_path.glob("*.tmp"))
    bare = tmp_path / "bare.yaml"  # no header comment: the old block is still replaced, not duplicated
    bare.write_text("name: bare\nranker: {name: dcn_din_mmoe}\nexpect:\n  world/test/click/auc: {min: 0.1}\n")
    update_expect(bare, [{**run, "config": "bare"}])
    assert bare.read_text().count("expect:") == 1 and load_bench_config(bare).expect["world/test/click/auc"].value
