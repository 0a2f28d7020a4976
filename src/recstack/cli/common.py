"""Shared CLI helpers: error display, tables."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from recstack.errors import RecstackError

console = Console()


def friendly_errors(func: Callable) -> Callable:
    """Show RecstackError as one red line and exit 2 (no traceback for user mistakes)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RecstackError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def metrics_table(title: str, rows: Mapping[str, Mapping[str, Any]]) -> Table:
    """rows: {row name: {metric: value}} -> a rich table with one column per metric.

    Cells fold instead of ending in "…": a name or value is never cut (see `print_metrics`)."""
    columns: list[str] = []
    for values in rows.values():
        columns += [c for c in values if c not in columns]
    table = Table(title=title)
    table.add_column("", overflow="fold")
    for column in columns:
        table.add_column(column, justify="right", overflow="fold")
    for name, values in rows.items():
        table.add_row(name, *[_fmt(values.get(c)) for c in columns])
    return table


def print_metrics(title: str, rows: Mapping[str, Mapping[str, Any]], out: Console | None = None) -> None:
    """Print `metrics_table(title, rows)` with every metric name and value in full, whatever the width.

    Off a terminal (a log file, `| tee`, CI) the table is printed at its own width, however wide: rich
    would otherwise squeeze it into 80 columns and cut names to "recal…". On a terminal too narrow for
    it, the table is printed transposed (one row per metric), which needs far fewer columns."""
    out = out or console
    table = metrics_table(title, rows)
    width = Measurement.get(out, out.options.update_width(_UNBOUNDED), table).maximum
    if width <= out.width:
        out.print(table)
    elif not out.is_terminal:
        Console(file=out.file, width=width, no_color=out.no_color, highlight=False).print(table)
    else:
        metrics = list(dict.fromkeys(m for values in rows.values() for m in values))
        out.print(
            metrics_table(
                title, {m: {name: values[m] for name, values in rows.items() if m in values} for m in metrics}
            )
        )


_UNBOUNDED = 100_000


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
