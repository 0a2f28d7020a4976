"""Progress bars that suit both a terminal and a log file.

On a terminal a bar redraws often; when stderr is a file or a CI log, every redraw is a new line,
so the bar updates at most every `log_interval` seconds instead of flooding the log.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress_bar(iterable: Any = None, log_interval: float = 30.0, **kwargs: Any) -> tqdm:
    """tqdm(iterable, **kwargs) with mininterval raised to `log_interval` when stderr is not a terminal."""
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", log_interval)
    return tqdm(iterable, **kwargs)
