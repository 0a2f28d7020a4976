"""Benchmark worlds: a prepared impression-log Dataset generated deterministically from a config, cached.

    dataset = benchmark_world()                              # the default ranking world (1M impressions)
    dataset = benchmark_world({"world": {"num_interactions": 50_000}}, data_dir="/tmp/worlds")
    python -m recstack.world.benchmark_data [--data-dir DIR] [--set world.num_interactions=2000000]

The world simulator (world/logs.py) logs pages in several scenarios with the full behaviour funnel
(impression -> click -> long_view / like -> purchase); `prepare` remaps ids and splits by global
time (temporal: the latest 10% of impressions are test, the 10% before them valid), the protocol of
a ranker that is trained on yesterday's logs and serves today.

Cache: `<data_dir or RECSTACK_HOME/datasets>/<name>-<digest>`, where the digest is a hash of the whole
config (world + prepare), so a changed knob never reuses stale data. The folder is written by
`Dataset.save` (temp folder, then rename), so an interrupted generation leaves nothing behind.
`meta["generation"]` records the generation and preparation time in seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recstack.config import from_dict, to_dict
from recstack.data.dataset import Dataset
from recstack.data.prepare import PrepareConfig, prepare
from recstack.errors import ConfigError
from recstack.paths import datasets_dir
from recstack.world.config import WorldConfig


def _ranking_world() -> WorldConfig:
    # 1M impressions over 20k users (about 50 impressions, 5 pages, per user) and 10k items in four
    # scenarios: enough rows per user for histories and enough rows that 0.002 AUC differences between
    # rankers are above the seed noise; generation takes seconds (benchmarks/prepare_synthetic.py).
    return WorldConfig(
        num_users=20_000,
        num_items=10_000,
        num_topics=32,
        num_interactions=1_000_000,
        scenarios=["home_feed", "search", "mall", "live"],
        scenario_weights=[0.4, 0.25, 0.2, 0.15],
        seed=2026,
    )


def _temporal_split() -> PrepareConfig:
    return PrepareConfig(split="temporal", valid_fraction=0.1, test_fraction=0.1)


@dataclass
class BenchmarkWorldConfig:
    """A named benchmark world: the simulator's config and how its log is prepared."""

    name: str = "world-ranking"
    world: WorldConfig = field(default_factory=_ranking_world)
    prepare: PrepareConfig = field(default_factory=_temporal_split)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"benchmark world name must be a non-empty folder name, got {self.name!r}")

    def digest(self) -> str:
        """12 hex digits identifying every setting (world + prepare)."""
        text = json.dumps(to_dict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def folder(self, data_dir: str | Path | None = None) -> Path:
        root = Path(data_dir).expanduser() if data_dir is not None else datasets_dir()
        return root / f"{self.name}-{self.digest()}"


def benchmark_world(
    config: BenchmarkWorldConfig | dict[str, Any] | None = None,
    data_dir: str | Path | None = None,
    rebuild: bool = False,
) -> Dataset:
    """The prepared Dataset of `config`, loaded from the cache or generated, prepared and saved there."""
    if not isinstance(config, BenchmarkWorldConfig):
        config = from_dict(BenchmarkWorldConfig, config or {}, "benchmark_world")
    folder = config.folder(data_dir)
    if (folder / "meta.json").is_file() and not rebuild:
        return Dataset.load(folder)
    from recstack.world.model import World

    started = time.perf_counter()
    raw = World(config.world).generate_logs()
    generate_seconds = time.perf_counter() - started
    dataset = prepare(raw, config.prepare, name=config.name)
    dataset.meta["generation"] = {
        "generate_seconds": round(generate_seconds, 2),
        "prepare_seconds": round(time.perf_counter() - started - generate_seconds, 2),
        "impressions": raw.interactions.height,
        "digest": config.digest(),
        "config": to_dict(config),
    }
    dataset.save(folder)
    return dataset


def oracle_metrics(
    dataset: Dataset,
    config: BenchmarkWorldConfig | dict[str, Any] | None = None,
    split: str = "test",
    positions: bool = True,
) -> dict[str, float]:
    """AUC / GAUC / logloss per task of the world's true marginal probabilities on the `split` impressions:
    the ceiling a ranker can reach on this log. positions=False leaves out the position bias (rankers
    do not see the slot), a ceiling for position-blind scorers."""
    import numpy as np
    import polars as pl
    import torch

    from recstack.eval.pointwise import pointwise_metrics
    from recstack.world.model import World
    from recstack.world.simulator import TASKS

    if not isinstance(config, BenchmarkWorldConfig):
        config = from_dict(BenchmarkWorldConfig, config or {}, "benchmark_world")
    world = World(config.world)
    rows = dataset.split_frame(split)
    users = world.user_ids(dataset.users["raw_id"].gather(rows["user"] - 1))
    items = world.item_ids(dataset.items["raw_id"].gather(rows["item"] - 1))
    scenario = pl.Series(dataset.meta["scenario_names"]).gather(rows["scenario"]).to_numpy()
    truth = world.expected_engagement(users, items[:, None], scenario, rows["timestamp"].to_numpy())  # [N, 1] each
    examine = world.examination(config.world.page_size)[rows["position"].to_numpy()] if positions else 1.0
    probs = {t: torch.from_numpy(np.asarray(truth[t][:, 0] * examine, dtype=np.float64)) for t in TASKS}
    labels = {t: torch.from_numpy(rows[t].to_numpy().astype(np.float32)) for t in TASKS}
    return pointwise_metrics(labels, probs, torch.from_numpy(rows["user"].to_numpy().astype(np.int64)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None, help="cache root (default RECSTACK_HOME/datasets)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override, e.g. world.num_interactions=2000000 (repeatable)",
    )
    parser.add_argument("--rebuild", action="store_true", help="generate again even when cached")
    args = parser.parse_args(argv)
    import yaml

    spec: dict[str, Any] = {}
    for pair in args.set:
        key, _, text = pair.partition("=")
        node = spec
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(text)
    config = from_dict(BenchmarkWorldConfig, spec, "benchmark_world")
    started = time.perf_counter()
    dataset = benchmark_world(config, args.data_dir, rebuild=args.rebuild)
    print(
        json.dumps(
            {
                "folder": str(config.folder(args.data_dir)),
                "seconds": round(time.perf_counter() - started, 2),
                "counts": dataset.meta.get("counts"),
                "generation": {k: v for k, v in dataset.meta.get("generation", {}).items() if k != "config"},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
