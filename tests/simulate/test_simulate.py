import json

import numpy as np
import pytest
from typer.testing import CliRunner

from recstack.cascade import Cascade, RunConfig
from recstack.cli.main import app
from recstack.config import from_dict, to_dict
from recstack.data.catalog import load_raw
from recstack.data.dataset import Dataset
from recstack.data.prepare import PrepareConfig, prepare
from recstack.errors import ConfigError, DataError
from recstack.simulate import SimulateConfig, evaluate_online, paired, world_of
from recstack.world import World, WorldConfig
from tests.helpers import check_at_least, check_at_most, make_raw, seeded

runner = CliRunner()
WORLD = {"num_users": 150, "num_items": 200, "num_topics": 6, "num_interactions": 15_000}
CHANNELS = {"popular": {"name": "popular"}, "itemcf": {"name": "itemcf"}}


def train_run(root, dataset_path, name="r", **overrides):
    """A fast cascade (popularity + ItemCF, no ranker) saved in root/name; returns its folder."""
    spec = {
        "name": name,
        "dataset": {"name": str(dataset_path)},  # a folder path: independent of RECSTACK_HOME
        "channels": CHANNELS,
        "ranker": None,
        "merge": {"k_total": 50},
        "page": {"k": 8, "tune": False},
        **overrides,
    }
    config = from_dict(RunConfig, spec)
    dataset = Dataset.load(dataset_path)
    Cascade(config).fit(dataset, root / name, progress=lambda m: None).save(root / name)
    return root / name


@pytest.fixture(scope="module")
def world_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("simworld")
    world = World(WorldConfig(**WORLD, seed=seeded(11)))
    dataset = prepare(world.generate_logs(), PrepareConfig(split="temporal"), name="simworld")
    path = dataset.save(root / "data")
    return {"root": root, "data": path, "run": train_run(root, path), "world": world}


def history_of(dataset_path, view_label, users):
    """{world user: set of world items} of the logged rows positive on `view_label`."""
    dataset = Dataset.load(dataset_path)
    frame = dataset.interactions.filter(dataset.interactions[view_label] == 1)
    raw_users = dataset.users["raw_id"].gather(frame["user"] - 1).to_list()
    raw_items = dataset.items["raw_id"].gather(frame["item"] - 1).to_list()
    out = {int(u): set() for u in users}
    for user, item in zip(raw_users, raw_items):
        if int(user[1:]) in out:
            out[int(user[1:])].add(int(item[1:]))
    return out


def test_self_ab_interval_contains_zero(world_run):
    config = SimulateConfig(users=80, sessions=2, seed=seeded(1))
    _, summary = evaluate_online([world_run["run"], world_run["run"]], config, progress=False)
    (comparison,) = summary["comparisons"].values()
    # common random numbers: the same pages get the same feedback, so the difference is exactly 0
    for metric, d in comparison["metrics"].items():
        assert d["low"] <= 0.0 <= d["high"] and d["difference"] == 0.0, metric
    assert comparison["metrics"]["clicks"]["unpaired_half_width"] > 0
    # independent feedback per arm: the difference is pure noise and a 95% interval covers 0 in about 95%
    # of simulations (measured 95.0% over 120 seeds); here >= 8 of 10 (fails with probability 1.2%)
    covered = 0
    for i in range(10):
        config = SimulateConfig(users=40, sessions=1, seed=seeded(100 + i), common_random_numbers=False)
        _, summary = evaluate_online([world_run["run"], world_run["run"]], config, progress=False)
        (comparison,) = summary["comparisons"].values()
        d = comparison["metrics"]["clicks"]
        assert d["half_width"] > 0
        covered += d["low"] <= 0.0 <= d["high"]
    check_at_least(covered, 8, "self A/B without common random numbers: intervals covering 0, of 10")


def test_pages_never_contain_duplicates_or_history_items(world_run):
    config = SimulateConfig(users=60, sessions=3, baselines=["random", "oracle", "logged"], seed=seeded(2))
    result, _ = evaluate_online([world_run["run"]], config, progress=False)
    logged = history_of(world_run["data"], "click", result.users)
    dataset = Dataset.load(world_run["data"])
    catalogue = {int(raw[1:]) for raw in dataset.items["raw_id"].to_list()}
    for arm, pages in result.pages.items():
        assert pages.shape == (60, 3, 8)
        assert (pages >= 0).all(), arm  # every page is full
        for row, user in enumerate(result.users):
            seen = set(logged[int(user)])
            for session in range(3):
                page = pages[row, session].tolist()
                assert len(set(page)) == len(page), (arm, row, session)
                assert not set(page) & seen, (arm, row, session, set(page) & seen)
                assert set(page) <= catalogue
                seen |= set(pages[row, session][result.consumed[arm][row, session]].tolist())


def test_expected_engagement_is_the_worlds_ground_truth(world_run):
    config = SimulateConfig(users=40, sessions=2, baselines=["oracle"], seed=seeded(3))
    result, summary = evaluate_online([world_run["run"]], config, progress=False)
    world = world_run["world"]
    for arm in ("r", "oracle"):
        for session in range(2):
            pages = result.pages[arm][:, session].astype(np.int64)
            value = world.page_value(
                result.users, pages, config.weights, result.scenarios[:, session], result.times[:, session]
            )
            np.testing.assert_allclose(result.values[arm]["page_value"][:, session], value, rtol=1e-5)
    # sessions advance simulated time past the end of the log, in the configured gaps
    assert (result.times[:, 0] >= world.end_time).all()
    assert (np.diff(result.times, axis=1) > 0).all()
    assert summary["arms"]["r"]["topics"]["mean"] <= 8


@pytest.mark.learns
def test_oracle_beats_random_and_the_run_sits_between(world_run):
    config = SimulateConfig(users=100, sessions=2, baselines=["random", "oracle"], seed=seeded(4))
    result, summary = evaluate_online([world_run["run"]], config, progress=False)
    for metric in ("page_value", "clicks"):
        random = result.values["random"][metric].mean(axis=1)
        oracle = result.values["oracle"][metric].mean(axis=1)
        d = paired(random, oracle, 0.95)
        check_at_least(d["low"], 0.0, f"oracle - random {metric}: interval low end")
    gap = summary["oracle_gap_closed"]["r"]
    check_at_least(gap, 0.05, "share of the random -> oracle gap the run closes")
    check_at_most(gap, 0.95, "share of the random -> oracle gap the run closes")


def test_a_run_not_trained_on_world_data_is_refused(tmp_path):
    dataset = prepare(make_raw(), name="tiny")
    path = dataset.save(tmp_path / "tiny")
    run = train_run(tmp_path, path, "plain", channels={"popular": {"name": "popular"}}, merge={"k_total": 20})
    with pytest.raises(DataError, match="not generated by the recstack world"):
        evaluate_online([run], SimulateConfig(users=5, sessions=1), progress=False)
    result = runner.invoke(app, ["simulate", str(run), "--users", "5"])
    assert result.exit_code == 2 and "no simulator to answer its pages" in result.output
    result = runner.invoke(app, ["simulate", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_runs_from_different_worlds_and_bad_options_are_refused(world_run, tmp_path):
    other = World(WorldConfig(**WORLD, seed=seeded(11) + 1))
    path = prepare(other.generate_logs(), PrepareConfig(split="temporal"), name="other").save(tmp_path / "other")
    run_b = train_run(tmp_path, path, "b")
    with pytest.raises(DataError, match="another world"):
        evaluate_online([world_run["run"], run_b], SimulateConfig(users=5, sessions=1), progress=False)
    with pytest.raises(ConfigError, match=r"exceeds the \d+ users of simworld"):
        evaluate_online([world_run["run"]], SimulateConfig(users=10_000), progress=False)
    with pytest.raises(ConfigError, match=r"simulate\.sessions"):
        SimulateConfig(sessions=0)
    result = runner.invoke(app, ["simulate", str(world_run["run"]), "--baseline", "best"])
    assert result.exit_code == 2 and "unknown; known: logged, oracle, random" in result.output


def test_world_config_is_recovered_from_the_dataset_and_checked(world_run, tmp_path):
    dataset = Dataset.load(world_run["data"])
    rebuilt = world_of(dataset)
    assert to_dict(rebuilt.config) == to_dict(world_run["world"].config)
    np.testing.assert_array_equal(rebuilt.item_topic, world_run["world"].item_topic)
    # items that the rebuilt world contradicts: the world changed since the data was prepared
    dataset.items = dataset.items.with_columns(dataset.items["quality"] + 1.0)
    with pytest.raises(DataError, match="has quality"):
        world_of(dataset)
    # the `world` source: a YAML of WorldConfig keys -> logs whose meta keeps the config
    yaml_path = tmp_path / "world.yaml"
    yaml_path.write_text("num_users: 30\nnum_items: 40\nnum_topics: 3\nnum_interactions: 600\nseed: 5\n")
    prepared = prepare(load_raw("world", yaml_path), name="w")
    assert world_of(prepared).config.seed == 5 and prepared.is_impression_log()
    yaml_path.write_text("num_user: 30\n")
    with pytest.raises(ConfigError, match="unknown key .*num_user"):
        load_raw("world", yaml_path)


def test_cli_simulate_ab_with_baselines(world_run, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")  # not a terminal: tables must still print every name in full
    out = tmp_path / "sim"
    args = ["simulate", str(world_run["run"]), str(world_run["run"]), "--users", "30", "--sessions", "2"]
    result = runner.invoke(app, [*args, "-b", "random,oracle", "--out", str(out), "--seed", str(seeded(5))])
    assert result.exit_code == 0, result.output
    for name in ("results.json", "report.md", "report.html", "arms.png", "sessions.png", "differences.png"):
        assert (out / name).is_file(), name
    assert "…" not in result.output
    for text in ("expected_purchases", "page_value", "r (B) - r (A): paired differences", "oracle", "random"):
        assert text in result.output, text
    results = json.loads((out / "results.json").read_text())
    assert set(results["arms"]) == {"r (A)", "r (B)", "random", "oracle"}
    assert results["config"]["users"] == 30 and results["config"]["baselines"] == ["random", "oracle"]
    assert f"{results['arms']['oracle']['page_value']['mean']:.4f}" in result.output
    assert "data:image/png;base64" in (out / "report.html").read_text()
    from benchmarks.simulate import record  # the JSONL record of benchmarks/results/simulate.jsonl

    row = record(out, "test")
    assert row["command"].startswith("recstack simulate") and "--baseline random,oracle" in row["command"]
    assert row["comparisons"]["r (B) - r (A)"]["page_value"]["difference"] == 0.0
    assert not list(tmp_path.glob(".sim*"))  # no temporary folder left behind
    # default output folder: inside the run
    result = runner.invoke(app, ["simulate", str(world_run["run"]), "--users", "10", "--sessions", "1"])
    assert result.exit_code == 0, result.output
    assert (world_run["run"] / "simulate" / "results.json").is_file()


@pytest.mark.parametrize("name", ["world.yaml", "world-retrieval.yaml"])
def test_shipped_world_configs_build(name):
    from pathlib import Path

    from recstack.cli.run import load_run_config
    from recstack.config import load_yaml

    configs = Path(__file__).resolve().parents[2] / "configs"
    config = load_run_config(configs / name)
    Cascade(config)  # every component name and key resolves
    assert config.expect and config.dataset.name == "world"
    assert (configs.parent / config.dataset.path).resolve() == configs / "world-data.yaml"
    WorldConfig(**load_yaml(configs / "world-data.yaml"))  # every key is a WorldConfig key
