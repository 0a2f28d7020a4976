"""ModelHolder: the model being served, and hot reload that swaps it atomically.

A reload loads and smoke-tests the new run on a background thread while the old model keeps serving;
only a run that passed is swapped in, by one reference assignment. Requests take the model reference
once, when they are resolved, and keep it to the end (their internal ids belong to that model), so a
request never sees half of each model and none fails during a swap: the old model lives until its last
request is answered. A run that fails to load is refused with the reason; the old model stays.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

from recstack.serve.model import ServingModel, load_model
from recstack.serve.schemas import RequestError

log = logging.getLogger("recstack.serve")


class ModelHolder:
    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._model: ServingModel | None = None
        self._reloading = threading.Lock()
        self.last_reload: dict[str, Any] | None = None

    @property
    def ready(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> ServingModel:
        if self._model is None:
            raise RequestError(503, "not_ready", "the model is still loading; retry shortly (see /readyz)")
        return self._model

    def load_initial(self) -> ServingModel:
        self._model = load_model(self.run_dir)
        return self._model

    def reload(self, run_dir: str | Path | None = None) -> dict[str, Any]:
        """Load `run_dir` (default: the current one) and swap it in; RequestError if refused or busy."""
        if not self._reloading.acquire(blocking=False):
            raise RequestError(409, "reload_in_progress", "a reload is already running; retry when it ends")
        target = Path(run_dir) if run_dir is not None else self.run_dir
        started = time.perf_counter()
        try:
            previous = self._model
            try:
                model = load_model(target)
            except Exception as exc:
                serving = f"{previous.run_dir} (version {previous.version})" if previous else "nothing"
                self.last_reload = {"ok": False, "run_dir": str(target), "error": str(exc), "at": time.time()}
                log.error("reload of %s refused: %s; still serving %s", target, exc, serving)
                raise RequestError(
                    422, "reload_refused", f"reload of {target} refused: {exc}; still serving {serving}", "run_dir"
                ) from exc
            self._model, self.run_dir = model, model.run_dir  # the swap: one reference assignment
            seconds = time.perf_counter() - started
            self.last_reload = {"ok": True, "run_dir": str(target), "version": model.version, "at": time.time()}
            log.info("reloaded %s as version %d in %.1f s", target, model.version, seconds)
            return {
                "status": "reloaded",
                "previous_version": previous.version if previous else None,
                "seconds": round(seconds, 3),
                "model": model.describe(),
            }
        finally:
            self._reloading.release()

    async def reload_in_background(self, run_dir: str | Path | None = None) -> dict[str, Any]:
        """`reload` on a worker thread (not the model thread: serving goes on meanwhile)."""
        return await asyncio.to_thread(self.reload, run_dir)
