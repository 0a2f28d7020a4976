"""`recstack eval PREDICTIONS --dataset NAME`: metrics of a saved prediction file."""

from __future__ import annotations

from pathlib import Path

import typer

from recstack.cli.common import print_metrics
from recstack.data.dataset import Dataset


def eval_command(
    predictions: Path = typer.Argument(..., help="Parquet file: user, item, score, rank (top-K per user)"),
    dataset: str = typer.Option(..., "--dataset", help="prepared dataset name or folder"),
    split: str = typer.Option("test", "--split", help="valid or test"),
    ks: str = typer.Option("5,10,20", "--ks", help="comma-separated cut-offs"),
) -> None:
    """Full-ranking top-K metrics of a prediction file against a dataset split."""
    from recstack.eval.predictions import evaluate_prediction_file

    cutoffs = tuple(int(k) for k in ks.split(","))
    metrics = evaluate_prediction_file(predictions, Dataset.load(dataset), split, cutoffs)
    print_metrics(f"{predictions.name} on {dataset}/{split}", {"predictions": metrics})
