"""Tiny data builders shared by tests (tests never read ../shared)."""

from __future__ import annotations

import json
import os

import numpy as np
import polars as pl

from recstack.data.tables import RawTables

# Tests that train and assert a quality threshold are marked `learns`; benchmarks/robustness.py reruns
# them under several seeds and thread counts through these variables and collects their margins.
SEED_OFFSET = int(os.environ.get("RECSTACK_TEST_SEED", "0"))
TEST_THREADS = int(os.environ.get("RECSTACK_TEST_THREADS", "1"))
MARGIN_LOG = os.environ.get("RECSTACK_MARGIN_LOG")


def seeded(base: int = 0) -> int:
    """The seed `base` shifted by $RECSTACK_TEST_SEED (0 by default: the suite's usual seeds)."""
    return base + SEED_OFFSET


def check_at_least(value: float, floor: float, what: str) -> None:
    """assert value >= floor; with $RECSTACK_MARGIN_LOG set, also append the margin (value - floor) there."""
    _record_margin(what, float(value), float(floor), float(value) - float(floor))
    assert value >= floor, f"{what}: {value:.4f} < {floor}"


def check_at_most(value: float, ceiling: float, what: str) -> None:
    """assert value <= ceiling; the margin recorded is ceiling - value."""
    _record_margin(what, float(value), float(ceiling), float(ceiling) - float(value))
    assert value <= ceiling, f"{what}: {value:.4f} > {ceiling}"


def _record_margin(what: str, value: float, bound: float, margin: float) -> None:
    if not MARGIN_LOG:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
    row = {
        "test": test,
        "check": what,
        "value": value,
        "bound": bound,
        "margin": margin,
        "seed": SEED_OFFSET,
        "threads": TEST_THREADS,
    }
    with open(MARGIN_LOG, "a") as out:
        out.write(json.dumps(row) + "\n")


def make_raw(num_users: int = 30, num_items: int = 40, per_user: int = 8, seed: int = 0) -> RawTables:
    """Random implicit log: every user has `per_user` distinct items at increasing times."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(num_users):
        chosen = rng.choice(num_items, size=per_user, replace=False)
        users += [f"u{u}"] * per_user
        items += [f"i{i}" for i in chosen]
        times += sorted(rng.integers(0, 10_000, per_user).tolist())
    frame = pl.DataFrame(
        {"user": users, "item": items, "timestamp": times, "rating": rng.integers(1, 6, len(users)).astype(np.float64)}
    )
    item_table = pl.DataFrame(
        {"item": [f"i{i}" for i in range(num_items)], "title": [f"item {i}" for i in range(num_items)]}
    )
    return RawTables("tiny", frame, items=item_table, labels=["rating"], text_fields=["title"])
