"""Online evaluation: serve a saved cascade's pages to the world simulator's users, A/B with intervals.

The World that generated a run's training logs is rebuilt from the dataset's meta (link.py); every
arm (runs, and the random / oracle / logged baselines) serves the same users at the same simulated
times with common random numbers for the feedback (engine.py); intervals are over users and A/B
differences are paired (stats.py); results go to a folder as JSON + Markdown/HTML with plots (report.py).
"""

from recstack.simulate.config import SimulateConfig
from recstack.simulate.engine import METRICS, Arm, SimulationResult, simulate
from recstack.simulate.link import LoadedRun, WorldLink, load_run, world_of
from recstack.simulate.online import build_arms, evaluate_online
from recstack.simulate.stats import INTERVAL_METHOD, interval, paired, summarise

__all__ = [
    "INTERVAL_METHOD",
    "METRICS",
    "Arm",
    "LoadedRun",
    "SimulateConfig",
    "SimulationResult",
    "WorldLink",
    "build_arms",
    "evaluate_online",
    "interval",
    "load_run",
    "paired",
    "simulate",
    "summarise",
    "world_of",
]
