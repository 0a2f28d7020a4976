"""Name -> class registries, one per component kind ("retriever", "ranker", "quantizer", ...).

@register("retriever", "sasrec", config=SASRecConfig)
class SASRec: ...

build("retriever", {"name": "sasrec", "dim": 64})  # -> SASRec(SASRecConfig(dim=64))
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recstack.config import from_dict
from recstack.errors import ConfigError, DataError


@dataclass(frozen=True)
class Entry:
    cls: type
    config: type | None


_REGISTRIES: dict[str, dict[str, Entry]] = {}

# Modules imported on first lookup of a kind, so that their @register decorators have run.
_PLUGIN_MODULES: dict[str, list[str]] = {}


def register(kind: str, name: str, config: type | None = None) -> Callable[[type], type]:
    def decorator(cls: type) -> type:
        table = _REGISTRIES.setdefault(kind, {})
        if name in table and table[name].cls is not cls:
            raise ConfigError(f"{kind} {name!r} is registered twice ({table[name].cls} and {cls})")
        table[name] = Entry(cls, config)
        return cls

    return decorator


def add_plugin_modules(kind: str, modules: list[str]) -> None:
    """Declare modules whose import registers components of `kind` (imported lazily)."""
    _PLUGIN_MODULES.setdefault(kind, []).extend(m for m in modules if m not in _PLUGIN_MODULES.get(kind, []))


def _load_plugins(kind: str) -> None:
    for module in _PLUGIN_MODULES.get(kind, []):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # A declared plugin that is not written yet is skipped; a missing dependency still fails.
            if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
                raise


def names(kind: str) -> list[str]:
    _load_plugins(kind)
    return sorted(_REGISTRIES.get(kind, {}))


def lookup(kind: str, name: str) -> Entry:
    _load_plugins(kind)
    table = _REGISTRIES.get(kind, {})
    if name not in table:
        raise ConfigError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table)) or '(none)'}")
    return table[name]


def build(kind: str, spec: dict[str, Any] | str, where: str = "", **kwargs: Any) -> Any:
    """Instantiate a registered component from `{"name": ..., **config}` (or just a name)."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"{where or kind}: expected a mapping with a 'name' key, got {spec!r}")
    entry = lookup(kind, spec["name"])
    params = {k: v for k, v in spec.items() if k != "name"}
    if entry.config is None:
        if params:
            raise ConfigError(f"{where or kind}: {spec['name']!r} takes no options, got {sorted(params)}")
        return entry.cls(**kwargs)
    return entry.cls(from_dict(entry.config, params, where or f"{kind}.{spec['name']}"), **kwargs)


def load_saved_config(path: str | Path, kind: str) -> tuple[Entry, Any, dict]:
    """Read `path/config.json` written by a component's `save`: (registry entry, its built config or None,
    the whole metadata). Errors name the folder."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise DataError(f"no saved {kind} at {path} (missing {file.name})")
    try:
        meta = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: not valid JSON ({exc})") from exc
    entry = lookup(kind, meta["name"])
    config = from_dict(entry.config, meta.get("config", {}), f"{file}: config") if entry.config else None
    return entry, config, meta
