"""Run the app under uvicorn: in-process for one worker, through an import-string factory for several.

uvicorn's multi-process mode imports the app in each worker process, so the run folder and the
settings travel to the workers in one environment variable (JSON), read by `app_from_env`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from fastapi import FastAPI

from recstack.config import from_dict
from recstack.errors import ConfigError
from recstack.serve.app import create_app
from recstack.serve.config import ServeConfig

_ENV = "RECSTACK_SERVE_SPEC"


def app_from_env() -> FastAPI:
    """The app factory uvicorn workers call: {"run_dir", "config"} from $RECSTACK_SERVE_SPEC."""
    spec = os.environ.get(_ENV)
    if not spec:
        raise ConfigError(f"{_ENV} is not set; start the server with `recstack serve RUN_DIR`")
    data = json.loads(spec)
    return create_app(data["run_dir"], from_dict(ServeConfig, data["config"]))


def serve(run_dir: str | Path, config: ServeConfig) -> None:
    """Serve `run_dir` in the foreground until interrupted."""
    import uvicorn

    if config.workers == 1:
        uvicorn.run(create_app(run_dir, config), host=config.host, port=config.port, log_level=config.log_level)
        return
    os.environ[_ENV] = json.dumps({"run_dir": str(run_dir), "config": asdict(config)})
    uvicorn.run(
        "recstack.serve.server:app_from_env",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        log_level=config.log_level,
    )
