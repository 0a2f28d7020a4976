"""Where recstack keeps prepared data, downloads and caches."""

from __future__ import annotations

import os
from pathlib import Path

from recstack.errors import DataError


def recstack_home() -> Path:
    """`RECSTACK_HOME`, default `~/.cache/recstack`; created on first use and checked for writing."""
    home = Path(os.environ.get("RECSTACK_HOME", Path.home() / ".cache" / "recstack")).expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"RECSTACK_HOME={home} cannot be created: {exc.strerror}. Set RECSTACK_HOME to a writable folder."
        ) from exc
    if not os.access(home, os.W_OK):
        raise DataError(f"RECSTACK_HOME={home} is not writable. Set RECSTACK_HOME to a writable folder.")
    return home


def datasets_dir() -> Path:
    path = recstack_home() / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def downloads_dir() -> Path:
    path = recstack_home() / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path
