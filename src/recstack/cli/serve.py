"""`recstack serve RUN_DIR [--host --port --workers ...]`: the cascade of a run folder behind HTTP.

Options left out take ServeConfig's defaults (recstack/serve/config.py), so the defaults live in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from recstack.errors import ConfigError, DataError
from recstack.serve.config import ServeConfig

_D = ServeConfig()  # the defaults, shown in --help


def serve_command(
    run_dir: Path = typer.Argument(..., help="run folder written by `recstack run`"),
    host: str | None = typer.Option(None, help=f"interface to listen on (default: {_D.host})"),
    port: int | None = typer.Option(None, help=f"port (default: {_D.port})"),
    workers: int | None = typer.Option(
        None, help=f"uvicorn worker processes, each with its own model (default: {_D.workers})"
    ),
    max_k: int | None = typer.Option(None, "--max-k", help=f"largest page a request may ask for (default: {_D.max_k})"),
    micro_batching: bool | None = typer.Option(
        None,
        "--micro-batching/--no-micro-batching",
        help=f"serve concurrent requests together (default: {_D.micro_batching})",
    ),
    max_batch: int | None = typer.Option(
        None, "--max-batch", help=f"most requests per micro-batch (default: {_D.max_batch})"
    ),
    max_wait_ms: float | None = typer.Option(
        None, "--max-wait-ms", help=f"longest wait for a micro-batch to fill (default: {_D.max_wait_ms})"
    ),
    threads: int | None = typer.Option(None, "--threads", help="torch threads for inference (default: torch's own)"),
    log_level: str | None = typer.Option(None, "--log-level", help=f"uvicorn log level (default: {_D.log_level})"),
) -> None:
    """Serve pages over HTTP: POST /v1/recommend, demo page at /, docs at /docs, metrics at /metrics.

    Hot reload: set RECSTACK_ADMIN_TOKEN, then POST /admin/reload with `Authorization: Bearer <token>`,
    or send SIGHUP."""
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"recstack serve needs {exc.name}: pip install 'recstack[serve]'") from exc
    from recstack.config import from_dict
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
