"""Which users the pipeline trains and evaluates on, fixed once per work folder.

The held-out users are drawn first (their own seed) so that changing `users` never moves one of them
into training; both lists are written to users.json because a resumed run must keep working on the
same users even when the drawing code or the dataset's user count changes.
"""

from __future__ import annotations

import json
from pathlib import Path

from recstack.data.dataset import Dataset
from recstack.llm.taiji.categories import CategoryPaths
from recstack.llm.taiji.config import TaijiConfig
from recstack.llm.taiji.prompting import ContextMode, UserContext, build_contexts, sample_users
from recstack.train.checkpoint import write_json


def chosen_users(path: Path, dataset: Dataset, config: TaijiConfig) -> dict[str, list[int]]:
    """{"train": [...], "eval": [...]} internal user ids, read from `path` when an earlier run wrote it."""
    if path.is_file():
        return {k: [int(u) for u in v] for k, v in json.loads(path.read_text()).items()}
    held_out = sample_users(dataset, config.eval_users, config.seed + 1) if config.eval_users else []
    chosen = {"eval": held_out, "train": sample_users(dataset, config.users, config.seed, exclude=held_out)}
    write_json(path, chosen)
    return chosen


def split_contexts(dataset: Dataset, categories: CategoryPaths, users: list[int], which: str) -> list[UserContext]:
    """Training users see their train_last context and held-out users their test one; a target without a
    category path could be neither prompted with an answer nor scored, so its user is left out."""
    mode: ContextMode = "train_last" if which == "train" else "test"
    return [c for c in build_contexts(dataset, users, mode) if categories[c.target]]
