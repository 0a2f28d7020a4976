"""Summary statistics of a prepared Dataset (what `recstack data describe` prints)."""

from __future__ import annotations

import numpy as np
import polars as pl

from recstack.data.dataset import SPLIT_CODES, Dataset


def describe(dataset: Dataset) -> dict:
    inter = dataset.interactions
    lengths = inter.group_by("user").len()["len"].to_numpy()
    quantiles = {f"p{int(q * 100)}": float(np.quantile(lengths, q)) for q in (0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)}
    stats = {
        "name": dataset.name,
        "users": dataset.num_users,
        "items": dataset.num_items,
        "interactions": inter.height,
        "density": inter.height / max(1, dataset.num_users * dataset.num_items),
        "sequence_length": {"mean": float(lengths.mean()), **quantiles},
        "split": {name: int((inter["split"] == code).sum()) for name, code in SPLIT_CODES.items()},
        "split_method": dataset.meta.get("split"),
        "label_rates": {
            label: float(inter[label].cast(pl.Float64).gt(0).mean())
            for label in dataset.labels
            if label in inter.columns
        },
        "timestamp_kind": dataset.meta.get("timestamp_kind"),
        "text_fields": dataset.text_fields,
    }
    for column in ("scenario", "event"):
        names = dataset.meta.get(f"{column}_names")
        if names:
            counts = inter[column].value_counts().sort(column)
            stats[column] = {names[int(c)]: int(n) for c, n in counts.iter_rows()}
    return stats
