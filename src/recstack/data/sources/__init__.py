"""Data sources: one loader per public format, each returning validated `RawTables`.

    @source("movielens")
    def load_movielens(path: str | Path, **options) -> RawTables: ...

    get_source("movielens")("/data/ml-100k")   # -> RawTables

Loaders are registered under the "source" kind of `recstack.registry`; the modules below are
imported on first lookup, so importing this package stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from recstack.data.tables import RawTables
from recstack.registry import add_plugin_modules, lookup, names, register

SourceLoader = Callable[..., RawTables]

add_plugin_modules(
    "source",
    [
        f"recstack.data.sources.{module}"
        for module in ("movielens", "amazon", "recbole", "minionerec", "kuai", "generic", "world")
    ],
)


def source(name: str) -> Callable[[SourceLoader], SourceLoader]:
    """Register a loader `(path, **options) -> RawTables` under `name`."""
    return register("source", name)  # type: ignore[return-value]


def get_source(name: str) -> SourceLoader:
    """The loader registered as `name`; ConfigError listing the known sources otherwise."""
    return lookup("source", name).cls


def source_names() -> list[str]:
    return names("source")


def load_source(name: str, path: str | Path, **options: Any) -> RawTables:
    return get_source(name)(path, **options)
