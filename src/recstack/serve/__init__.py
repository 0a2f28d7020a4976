"""`recstack serve`: a saved cascade behind an HTTP server (FastAPI + uvicorn).

config.py    ServeConfig, every setting and its default
model.py     ServingModel: a loaded, smoke-tested run with its lookups precomputed
pipeline.py  the timed, vectorised serving path (channels -> merge -> ranker -> page)
resolve.py   request validation and raw -> internal ids
batcher.py   dynamic micro-batching on one model thread
service.py   requests -> batcher -> response bodies
holder.py    the served model and its atomic hot reload
admin.py     POST /admin/reload (token from the environment) and SIGHUP
metrics.py   Prometheus metrics; demo.py the page at `/`; app.py the routes; server.py uvicorn
"""

from __future__ import annotations

from typing import Any

from recstack.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str) -> Any:
    """`create_app` is imported on first use: importing the package (as the CLI does) stays light and
    works without the serve extra installed."""
    if name == "create_app":
        from recstack.serve.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
