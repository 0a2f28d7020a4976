"""Online evaluation of saved cascades against the world simulator: the API behind `recstack simulate`.

result, summary = evaluate_online(["runs/world-cascade"], SimulateConfig(users=2000, baselines=["random", "oracle"]))
result, summary = evaluate_online(["runs/a", "runs/b"], SimulateConfig(users=2000))   # A/B: b - a
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recstack.errors import ConfigError
from recstack.simulate.config import SimulateConfig
from recstack.simulate.engine import Arm, SimulationResult, baseline_arm, run_arm, simulate
from recstack.simulate.link import load_run
from recstack.simulate.stats import summarise


def build_arms(runs: list[str | Path], config: SimulateConfig) -> list[Arm]:
    """One arm per run (all on the first run's world), then one per baseline on the first run's catalogue."""
    if not runs:
        raise ConfigError("simulate: name at least one run folder")
    first = load_run(runs[0])
    loaded = [first] + [load_run(path, first.link.world) for path in runs[1:]]
    names = [run.name for run in loaded]
    if len(set(names)) < len(names):  # e.g. a run against itself: label the arms A, B, ...
        names = [f"{name} ({chr(ord('A') + i)})" for i, name in enumerate(names)]
    arms = [run_arm(run, name) for run, name in zip(loaded, names)]
    clash = sorted(set(config.baselines) & set(names))
    if clash:
        raise ConfigError(f"simulate: run name {clash[0]!r} is also a baseline name; rename the run")
    return arms + [baseline_arm(kind, arms[0], config.weights) for kind in config.baselines]


def evaluate_online(
    runs: list[str | Path], config: SimulateConfig | None = None, progress: bool = True
) -> tuple[SimulationResult, dict[str, Any]]:
    """Simulate every run (and baseline) and summarise: (raw per-page result, JSON-ready summary)."""
    config = config or SimulateConfig()
    arms = build_arms(runs, config)
    page_size = config.page_size or arms[0].page_size or 10
    result = simulate(arms, arms[0].link.world, config, page_size, progress)
    return result, summarise(result)
