"""Tiny data builders shared by tests (tests never read ../shared)."""

from __future__ import annotations

import numpy as np
import polars as pl

from recstack.data.tables import RawTables


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
