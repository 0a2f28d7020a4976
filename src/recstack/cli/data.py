"""`recstack data list | fetch | prepare | describe`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from recstack.cli.common import console, friendly_errors
from recstack.config import from_dict, load_yaml
from recstack.data import catalog
from recstack.data.dataset import Dataset
from recstack.data.describe import describe
from recstack.data.prepare import PrepareConfig, prepare

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.command("list")
@friendly_errors
def list_command() -> None:
    """Datasets recstack knows, and whether each is prepared here."""
    table = Table(title="datasets")
    for column in ("name", "source", "prepared", "description"):
        table.add_column(column)
    for info in catalog.list_datasets():
        try:
            Dataset.load(info.name)
            prepared = "yes"
        except Exception:
            prepared = ""
        table.add_row(info.name, info.source, prepared, info.description)
    console.print(table)


@app.command("fetch")
@friendly_errors
def fetch_command(name: str) -> None:
    """Download (or locate) the raw files of a named dataset into the cache."""
    path = catalog.fetch(name)
    console.print(f"{name}: raw files in {path}")


def prepare_dataset(
    name: str, path: Path | None = None, config: dict | None = None, output: str | None = None
) -> Dataset:
    """Load raw tables by catalogue name (from `path` if given), prepare and save them."""
    raw = catalog.load_raw(name, path)
    prepare_config = from_dict(PrepareConfig, {**catalog.default_prepare(name), **(config or {})}, "prepare")
    dataset = prepare(raw, prepare_config, name=output or name)
    dataset.save()
    return dataset


@app.command("prepare")
@friendly_errors
def prepare_command(
    name: str = typer.Argument(..., help="catalogue name (see `recstack data list`), or 'generic'"),
    path: Path | None = typer.Option(None, "--path", help="folder (or YAML mapping for 'generic') with the raw files"),
    config: Path | None = typer.Option(None, "--config", help="YAML with PrepareConfig keys"),
    output: str | None = typer.Option(None, "--name", help="name to store the prepared dataset under"),
) -> None:
    """Read raw files, filter, remap ids, split, and store Parquet tables under RECSTACK_HOME."""
    options = load_yaml(config) if config else None
    with console.status(f"preparing {name}"):
        dataset = prepare_dataset(name, path, options, output)
    for step in dataset.meta.get("report", []):
        console.print(
            f"  removed {step['rows_removed']:,} of {step['rows_before']:,} rows at {step['step']}: {step['reason']}"
        )
    print_description(dataset)


@app.command("describe")
@friendly_errors
def describe_command(name: str) -> None:
    """Users, items, interactions, density, sequence-length quantiles and label rates."""
    print_description(Dataset.load(name))


def print_description(dataset: Dataset) -> None:
    stats = describe(dataset)
    table = Table(title=f"dataset {stats['name']}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("users", f"{stats['users']:,}")
    table.add_row("items", f"{stats['items']:,}")
    table.add_row("interactions", f"{stats['interactions']:,}")
    table.add_row("density", f"{stats['density']:.5f}")
    seq = stats["sequence_length"]
    table.add_row("sequence length mean", f"{seq['mean']:.1f}")
    table.add_row(
        "sequence length min/p25/p50/p75/p90/p99/max",
        " / ".join(f"{seq[k]:g}" for k in ("p0", "p25", "p50", "p75", "p90", "p99", "p100")),
    )
    table.add_row(f"split ({stats['split_method']})", " / ".join(f"{k} {v:,}" for k, v in stats["split"].items()))
    for label, rate in stats["label_rates"].items():
        table.add_row(f"label rate: {label}", f"{rate:.4f}")
    for column in ("scenario", "event"):
        if column in stats:
            table.add_row(column, ", ".join(f"{k} {v:,}" for k, v in stats[column].items()))
    if stats["text_fields"]:
        table.add_row("text fields", ", ".join(stats["text_fields"]))
    console.print(table)
