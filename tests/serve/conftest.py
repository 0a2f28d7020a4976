"""One tiny trained cascade (world data, four channels, a ranker, a tuned page) shared by tests/serve.

The dataset is saved under the session's temporary folder and the run names it by path, so the run
serves whatever RECSTACK_HOME a test sets."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from recstack.cascade import Cascade, RunConfig
from recstack.config import from_dict
from recstack.data.dataset import Dataset
from recstack.data.prepare import prepare
from recstack.serve import ServeConfig, create_app
from recstack.world import World, WorldConfig

CHANNELS = {
    "popular": {"name": "popular"},
    "itemcf": {"name": "itemcf"},
    "swing": {"name": "swing"},
    "sasrec": {"name": "sasrec", "dim": 16, "train": {"epochs": 1, "progress": False}},
}


def build_run(root: Path, name: str = "serve-test", seed: int = 3) -> Path:
    """Train and save a tiny cascade under root/<name>; the dataset goes to root/<name>-data."""
    world = World(WorldConfig(num_users=120, num_items=150, num_topics=6, seed=seed))
    dataset = prepare(world.generate_sequences(mean_length=12), name=f"{name}-data")
    data_path = dataset.save(root / f"{name}-data")
    config = from_dict(
        RunConfig,
        {
            "name": name,
            "dataset": {"name": str(data_path)},
            "channels": CHANNELS,
            "ranker": {"name": "dcn_din_mmoe", "train": {"epochs": 1, "batch_size": 256, "progress": False}},
            "merge": {"k_total": 50, "quotas": {"popular": 20, "itemcf": 30, "swing": 30, "sasrec": 30}},
            "page": {"k": 10, "tune": True, "tune_grid": [0.0, 1.0], "tune_rounds": 1},
            "eval": {"ks": [10, 50]},
        },
    )
    torch.set_num_threads(1)
    run = root / name
    Cascade(config).fit(dataset, run, progress=lambda m: None).save(run)
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    return run


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_run(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="session")
def served_dataset(run_dir: Path) -> Dataset:
    return Dataset.load(run_dir.parent / "serve-test-data")


def make_client(run_dir: Path, **settings: object) -> TestClient:
    return TestClient(create_app(run_dir, ServeConfig(**settings)))  # type: ignore[arg-type]


@pytest.fixture
def client(run_dir: Path) -> Iterator[TestClient]:
    with make_client(run_dir, max_k=20, max_history=50, max_exclude=20, max_batch_requests=8) as c:
        yield c
