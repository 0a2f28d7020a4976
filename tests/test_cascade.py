import json
import os

import polars as pl
import pytest
import torch
import yaml
from typer.testing import CliRunner

from recstack.cascade import Cascade, RunConfig
from recstack.cli.main import app
from recstack.config import from_dict
from recstack.data.dataset import Dataset
from recstack.data.prepare import prepare
from recstack.errors import ConfigError, DataError
from recstack.world import World, WorldConfig

runner = CliRunner()

FAST_CHANNELS = {"popular": {"name": "popular"}, "itemcf": {"name": "itemcf"}, "swing": {"name": "swing"}}


@pytest.fixture
def world_dataset():
    world = World(WorldConfig(num_users=120, num_items=150, num_topics=6, seed=3))
    dataset = prepare(world.generate_sequences(mean_length=12), name="tinyworld")
    dataset.save()
    return dataset


def config(**overrides) -> RunConfig:
    base = {
        "name": "t",
        "dataset": {"name": "tinyworld"},
        "channels": FAST_CHANNELS,
        "ranker": None,
        "merge": {"k_total": 50, "quotas": {"popular": 20, "itemcf": 40, "swing": 40}},
        "eval": {"ks": [10, 20, 50]},
    }
    base.update(overrides)
    return from_dict(RunConfig, base)


def test_cascade_save_load_identical_pages(world_dataset, tmp_path):
    cascade = Cascade(config()).fit(world_dataset, tmp_path / "run", progress=lambda m: None)
    cascade.save(tmp_path / "run")
    users = torch.arange(1, 21)
    batch = world_dataset.user_batch(users)
    page = cascade.recommend(batch, k=10)
    again = Cascade.load(tmp_path / "run").recommend(batch, k=10)
    assert torch.equal(page.items, again.items)
    # pages hold real, distinct items outside the user's history
    assert (page.items > 0).all()
    for row in range(len(users)):
        items = page.items[row].tolist()
        assert len(set(items)) == len(items)
        assert not set(items) & set(batch.history.row(row).tolist())


def test_cascade_evaluate_reports_every_stage(world_dataset, tmp_path):
    # quotas sum to k_total, so the merged list is the union of each channel's top-quota items
    cfg = config(
        merge={"k_total": 100, "quotas": {"popular": 20, "itemcf": 40, "swing": 40}}, eval={"ks": [20, 40, 100]}
    )
    cascade = Cascade(cfg).fit(world_dataset, progress=lambda m: None)
    metrics = cascade.evaluate(world_dataset, "test")
    report = metrics["retrieval"]
    assert set(report["recall@100"]) == {"popular", "itemcf", "swing", "merged"}
    union = report["recall@100"]["merged"]
    assert union >= report["recall@20"]["popular"] - 1e-6
    assert union >= max(report["recall@40"]["itemcf"], report["recall@40"]["swing"]) - 1e-6
    assert 0.0 <= metrics["page"]["ndcg@10"] <= 1.0
    assert metrics["channel_overlap"]["popular"]["popular"] == pytest.approx(1.0)


def test_unknown_component_and_bad_key_fail_at_once():
    with pytest.raises(ConfigError, match="unknown retriever 'nope'"):
        Cascade(config(channels={"x": {"name": "nope"}}))
    with pytest.raises(ConfigError, match=r"unknown key channels\.itemcf\.neigbours"):
        Cascade(config(channels={"itemcf": {"name": "itemcf", "neigbours": 5}}, merge={"k_total": 10}))
    with pytest.raises(ConfigError, match="unknown key chanels"):
        from_dict(RunConfig, {"chanels": {}})


def write_config(tmp_path, **overrides):
    data = {
        "name": "cli",
        "dataset": {"name": "tinyworld"},
        "channels": FAST_CHANNELS,
        "ranker": None,
        "merge": {"k_total": 50},
        "eval": {"ks": [10, 50]},
        "expect": {"test/page/ndcg@10": {"min": 0.0}},
    }
    data.update(overrides)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cli_run_writes_report_and_resumes(world_dataset, tmp_path):
    path = write_config(tmp_path)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["run", str(path), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    run_dir = runs / "cli"
    for name in ("config.yaml", "metrics.json", "report.md", "report.html", "recall_vs_k.png"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["expect"][0]["pass"] is True
    assert "data:image/png;base64" in (run_dir / "report.html").read_text()
    # a second run with the same name loads the saved channels instead of refitting them
    result = runner.invoke(app, ["run", str(path), "--runs-dir", str(runs)])
    assert result.exit_code == 0 and "loaded from" in result.output


def test_cli_run_errors_name_the_problem(world_dataset, tmp_path):
    result = runner.invoke(app, ["run", str(write_config(tmp_path, channels={"a": {"name": "nope"}}))])
    assert result.exit_code == 2 and "unknown retriever 'nope'" in result.output
    result = runner.invoke(app, ["run", str(write_config(tmp_path, dataset={"name": "no-such-data"}))])
    assert result.exit_code == 2 and "no-such-data" in result.output


def test_cli_recommend(world_dataset, tmp_path):
    runs = tmp_path / "runs"
    assert runner.invoke(app, ["run", str(write_config(tmp_path)), "--runs-dir", str(runs)]).exit_code == 0
    user = world_dataset.users["raw_id"][0]
    result = runner.invoke(app, ["recommend", "--run", str(runs / "cli"), "--user", user, "-k", "5"])
    assert result.exit_code == 0, result.output
    assert "itemcf" in result.output or "swing" in result.output or "popular" in result.output
    result = runner.invoke(app, ["recommend", "--run", str(runs / "cli"), "--user", "stranger", "-k", "3"])
    assert result.exit_code == 0 and "cold-start" in result.output
    result = runner.invoke(app, ["recommend", "--run", str(runs / "cli"), "--user", user, "-k", "0"])
    assert result.exit_code == 2 and "-k must be a positive" in result.output
    result = runner.invoke(app, ["recommend", "--run", str(tmp_path / "nowhere"), "--user", user])
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.mark.parametrize("name", ["ml-100k.yaml", "amazon-beauty.yaml", "world-pagellm.yaml"])
def test_shipped_configs_build(name):
    from pathlib import Path

    from recstack.cli.run import load_run_config

    config = load_run_config(Path(__file__).resolve().parents[1] / "configs" / name)
    Cascade(config)  # every component name and key resolves
    assert config.expect


def test_page_tuning_weighs_channels_and_survives_save_load(world_dataset, tmp_path):
    cfg = config(
        ranker={"name": "dcn_din_mmoe", "train": {"epochs": 1, "batch_size": 256}},
        page={"k": 10, "tune": True, "tune_grid": [0.0, 0.5, 5.0], "tune_rounds": 1},
    )
    cascade = Cascade(cfg).fit(world_dataset, tmp_path / "run", progress=lambda m: None)
    tuning = cascade.page_tuning
    assert tuning["ndcg_after"] >= tuning["ndcg_before"]
    assert set(tuning["channel_weights"]) <= set(FAST_CHANNELS)
    assert cascade.config.page["channel_weights"] == tuning["channel_weights"]
    cascade.save(tmp_path / "run")
    batch = world_dataset.user_batch(torch.arange(1, 21))
    loaded = Cascade.load(tmp_path / "run")
    assert loaded.config.page["channel_weights"] == tuning["channel_weights"]
    assert torch.equal(cascade.recommend(batch).items, loaded.recommend(batch).items)


def test_impression_logs_feed_retrieval_only_their_clicks(tmp_path):
    world = World(WorldConfig(num_users=60, num_items=80, num_topics=4, num_interactions=6000, seed=5))
    logs = prepare(world.generate_logs(), name="tinylogs")
    assert logs.is_impression_log()
    cascade = Cascade(config(dataset={"name": "tinylogs"}, merge={"k_total": 30}, eval={"ks": [10, 30]}))
    view = cascade.retrieval_view(logs)
    assert view.interactions.height == int(logs.interactions["click"].sum()) < logs.interactions.height
    cascade.fit(logs, progress=lambda m: None)
    popular = cascade.channels["popular"]
    # the popularity channel counts clicks, not impressions
    clicks = logs.interactions.filter((logs.interactions["click"] == 1) & (logs.interactions["split"] == 0))
    top_clicked = clicks.group_by("item").len().sort(["len", "item"], descending=[True, False])["item"][0]
    page = popular.retrieve(view.user_batch(torch.tensor([0])), 1)
    assert int(page.items[0, 0]) == top_clicked
    metrics = cascade.evaluate(logs, "test")
    assert metrics["users"] == view.eval_users("test")[0].numel()
    with pytest.raises(DataError, match="no label column 'nope'"):
        logs.positives("nope")


def test_positive_only_logs_keep_every_row_for_retrieval(world_dataset):
    # a MovieLens-like log: rating, a derived like that varies, and view = 1 everywhere
    frame = world_dataset.interactions
    ratings = (frame["item"] % 5 + 1).cast(pl.Int8)
    logged = Dataset(
        world_dataset.name,
        frame.with_columns(rating=ratings, like=(ratings >= 4).cast(pl.Int8), view=pl.lit(1, pl.Int8)),
        world_dataset.items,
        world_dataset.users,
        {**world_dataset.meta, "labels": ["rating", "like", "view"]},
    )
    assert logged.binary_labels() == ["like", "view"] and not logged.is_impression_log()
    assert Cascade(config()).retrieval_view(logged) is logged


def test_run_seed_reaches_every_component_unless_it_sets_its_own():
    channels = {
        **FAST_CHANNELS,
        "swing_own": {"name": "swing", "seed": 3},
        "sasrec": {"name": "sasrec", "train": {"epochs": 1}},
    }
    cascade = Cascade(config(seed=7, channels=channels, ranker={"name": "dcn_din_mmoe", "train": {"seed": 5}}))
    assert cascade.channels["swing"].config.seed == 7
    assert cascade.channels["swing_own"].config.seed == 3
    assert cascade.channels["sasrec"].config.train.seed == 7
    assert cascade.ranker.config.train.seed == 5
    assert cascade.ranker.config.samples.seed == 0  # the fixed valid/test negatives do not move with the seed


def test_cli_run_seed_threads_and_full_tables_off_a_terminal(world_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")  # CliRunner's output is not a terminal; rich would cut at 60 columns
    monkeypatch.delenv("MKL_CBWR", raising=False)
    path, runs = write_config(tmp_path), tmp_path / "runs"
    threads = torch.get_num_threads()
    result = runner.invoke(app, ["run", str(path), "--runs-dir", str(runs), "--seed", "7", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == threads and "MKL_CBWR" not in os.environ  # both restored after the run
    assert "…" not in result.output
    for name in ("recall@10", "ndcg@10", "mrr@10", "recall@50", "popularity baseline"):
        assert name in result.output, name
    metrics = json.loads((runs / "cli" / "metrics.json").read_text())
    assert (metrics["seed"], metrics["threads"], metrics["mkl_cbwr"]) == (7, 1, "AVX2,STRICT")
    assert f"{metrics['metrics']['test']['page']['ndcg@10']:.4f}" in result.output
    # the folder holds a seed-7 run: resuming it with another seed is refused, --fresh replaces it
    result = runner.invoke(app, ["run", str(path), "--runs-dir", str(runs)])
    assert result.exit_code == 2 and "seed 7, not 42" in result.output
    result = runner.invoke(app, ["run", str(path), "--runs-dir", str(runs), "--fresh"])
    assert result.exit_code == 0 and json.loads((runs / "cli" / "metrics.json").read_text())["seed"] == 42


@pytest.mark.slow
def test_cli_run_gives_the_same_bits_with_one_and_two_threads(world_dataset, tmp_path):
    """`recstack run --threads 1` and `--threads 2` (fresh processes): bit-identical metrics with SASRec
    and a ranker in the cascade (MKL strict mode + nn/reproducible.py). On the 2-core x86 machine of
    docs/BENCHMARKS.md the same two runs with MKL_CBWR=AUTO differ, so this exercises the threaded paths."""
    import subprocess
    import sys

    channels = {**FAST_CHANNELS, "sasrec": {"name": "sasrec", "train": {"epochs": 3, "progress": False}}}
    ranker = {"name": "dcn_din_mmoe", "train": {"epochs": 1, "progress": False}}
    path = write_config(tmp_path, channels=channels, ranker=ranker, page={"k": 10, "tune": True})
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    metrics = []
    for threads in ("1", "2"):
        runs = tmp_path / f"runs{threads}"
        command = [sys.executable, "-m", "recstack.cli.main", "run", str(path), "--runs-dir", str(runs)]
        done = subprocess.run([*command, "--threads", threads], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        metrics.append(json.loads((runs / "cli" / "metrics.json").read_text())["metrics"])
    assert metrics[0] == metrics[1]
