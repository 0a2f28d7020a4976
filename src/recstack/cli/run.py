"""`recstack run [CONFIG]`: the main job (until the cascade lands: popularity baseline on ML-100K)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from recstack.cli.common import console, metrics_table
from recstack.data.dataset import Dataset
from recstack.errors import DataError


def ensure_dataset(name: str, path: Path | None = None) -> Dataset:
    """Load a prepared dataset, preparing it (fetching when needed) on first use."""
    try:
        return Dataset.load(name)
    except DataError:
        from recstack.cli.data import prepare_dataset

        with console.status(f"preparing {name} (first use)"):
            return prepare_dataset(name, path)


def run_command(config: Optional[Path] = typer.Argument(None, help="experiment YAML (default: ML-100K)")) -> None:
    """Train every stage, evaluate, and print the metrics."""
    from recstack.eval.evaluator import evaluate_retriever
    from recstack.retrieval.popular import Popular, PopularConfig

    dataset = ensure_dataset("ml-100k")
    model = Popular(PopularConfig()).fit(dataset)
    rows = {split: evaluate_retriever(model, dataset, split=split, ks=(5, 10, 20)) for split in ("valid", "test")}
    console.print(metrics_table(f"popularity on {dataset.name} (leave-one-out, full ranking)", rows))
