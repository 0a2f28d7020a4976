"""`recstack serve RUN_DIR [--host --port --workers ...]`: the cascade of a run folder behind HTTP.

Options left out take ServeConfig's defaults (recstack/serve/config.py), so the defaults live in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from recstack.errors import DataError


def serve_command(
    run_dir: Path = typer.Argument(..., help="run folder written by `recstack run`"),
    host: str | None = typer.Option(None, help="interface to listen on [default: 127.0.0.1, loopback only]"),
    port: int | None = typer.Option(None, help="port [default: 8000]"),
    workers: int | None = typer.Option(None, help="uvicorn worker processes, each with its own model [default: 1]"),
    max_k: int | None = typer.Option(None, "--max-k", help="largest page a request may ask for [default: 100]"),
    micro_batching: bool | None = typer.Option(
        None, "--micro-batching/--no-micro-batching", help="serve concurrent requests together [default: on]"
    ),
    max_batch: int | None = typer.Option(None, "--max-batch", help="most requests per micro-batch [default: 64]"),
    max_wait_ms: float | None = typer.Option(
        None, "--max-wait-ms", help="longest wait for a micro-batch to fill [default: 2]"
    ),
    threads: int | None = typer.Option(None, "--threads", help="torch threads for inference [default: torch's]"),
    log_level: str | None = typer.Option(None, "--log-level", help="uvicorn log level [default: info]"),
) -> None:
    """Serve pages over HTTP: POST /v1/recommend, demo page at /, docs at /docs, metrics at /metrics.

    Hot reload: set RECSTACK_ADMIN_TOKEN, then POST /admin/reload with `Authorization: Bearer <token>`,
    or send SIGHUP."""
    from recstack.config import from_dict
    from recstack.serve.config import ServeConfig
    from recstack.serve.server import serve

    if not (run_dir / "config.json").is_file():
        raise DataError(f"{run_dir} is not a recstack run folder (no config.json); create one with `recstack run`")
    given: dict[str, Any] = {
        "host": host,
        "port": port,
        "workers": workers,
        "max_k": max_k,
        "micro_batching": micro_batching,
        "max_batch": max_batch,
        "max_wait_ms": max_wait_ms,
        "torch_threads": threads,
        "log_level": log_level,
    }
    serve(run_dir, from_dict(ServeConfig, {k: v for k, v in given.items() if v is not None}, where="serve"))
