"""`recstack recommend --run DIR --user ID [-k 10]`: one user's page, with titles and channels."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import torch
import typer
from rich.table import Table

from recstack.cascade import Cascade, history_features
from recstack.cli.common import console
from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError


def _titles(dataset: Dataset, items: list[int]) -> list[str]:
    field = next((f for f in dataset.text_fields if f in dataset.items.columns), None)
    if field is None:
        return ["" for _ in items]
    column = dataset.items[field]
    return [str(column[i - 1]) if i > 0 else "" for i in items]


def recommend_command(
    run: Path = typer.Option(..., "--run", help="run folder written by `recstack run`"),
    user: str = typer.Option(..., "--user", help="raw user id, as in the source data"),
    k: int = typer.Option(10, "-k", help="items on the page"),
) -> None:
    """Print the page the cascade would show to a user (cold-start page for unknown users)."""
    if k <= 0:
        raise ConfigError(f"-k must be a positive number of items, got {k}")
    if not run.is_dir():
        raise DataError(f"run folder {run} does not exist; create one with `recstack run`")
    cascade = Cascade.load(run)
    dataset = Dataset.load(cascade.config.dataset.name)
    view = cascade.retrieval_view(dataset)  # consumed items only (clicks of an impression log)
    match = dataset.users.filter(pl.col("raw_id") == user)
    raw_items = dataset.items["raw_id"]
    table = Table(title=f"page for user {user} ({run.name})")
    for column in ("rank", "item", "title", "score", "channels"):
        table.add_column(column, justify="right" if column in ("rank", "score") else "left")
    if match.height == 0:
        console.print(
            f"[yellow]notice:[/] user {user!r} is not in {dataset.name}; showing the cold-start page "
            "(most popular items in the training data)"
        )
        scores, top = torch.topk(view.item_popularity("train")[1:], min(k, dataset.num_items))
        items = (top + 1).tolist()
        for rank, (item, title) in enumerate(zip(items, _titles(dataset, items)), 1):
            table.add_row(str(rank), str(raw_items[item - 1]), title, f"{float(scores[rank - 1]):.0f}", "popular")
        console.print(table)
        return
    batch = view.user_batch(torch.tensor([int(match["user"][0])]), features=history_features(view))
    page = cascade.recommend(batch, k)
    items = [i for i in page.items[0].tolist() if i > 0]
    for rank, (item, title) in enumerate(zip(items, _titles(dataset, items)), 1):
        mask = int(page.channels[0, rank - 1]) if page.channels is not None else 0
        tags = [n for c, n in enumerate(page.channel_names) if mask >> c & 1]
        table.add_row(
            str(rank), str(raw_items[item - 1]), title, f"{float(page.scores[0, rank - 1]):.4f}", ", ".join(tags)
        )
    console.print(table)
