"""Shared CLI helpers: error display, tables."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
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


def metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    """rows: {row name: {metric: value}} -> a rich table with one column per metric."""
    columns: list[str] = []
    for values in rows.values():
        columns += [c for c in values if c not in columns]
    table = Table(title=title)
    table.add_column("")
    for column in columns:
        table.add_column(column, justify="right")
    for name, values in rows.items():
        table.add_row(name, *[_fmt(values.get(c)) for c in columns])
    return table


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
