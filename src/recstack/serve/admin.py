"""POST /admin/reload and SIGHUP: hot reload, behind a bearer token read from the environment.

The token is read once, when the app is created, from `ServeConfig.admin_token_env` (default
RECSTACK_ADMIN_TOKEN). No token configured: the admin endpoints are disabled (403), so a server started
without thinking about it cannot be reloaded by whoever reaches its port. A missing token is 401, a
wrong one 403; tokens are compared in constant time. SIGHUP reloads the current run folder (there is no
body to name another one); it is installed only when the app runs in the main thread (uvicorn with one
worker). With several workers uvicorn's own supervisor answers SIGHUP by restarting the workers, and
POST /admin/reload reaches only the worker that accepted the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
from typing import Any

from fastapi import APIRouter, Header

from recstack.serve.holder import ModelHolder
from recstack.serve.metrics import ServeMetrics
from recstack.serve.schemas import ReloadRequest, RequestError

log = logging.getLogger("recstack.serve")


def admin_router(holder: ModelHolder, metrics: ServeMetrics, token_env: str) -> APIRouter:
    token = os.environ.get(token_env, "")
    router = APIRouter(prefix="/admin", tags=["admin"])

    def check(authorization: str | None) -> None:
        if not token:
            raise RequestError(403, "admin_disabled", f"admin endpoints are disabled: set {token_env} to enable them")
        if not authorization:
            raise RequestError(401, "missing_token", "send the admin token as `Authorization: Bearer <token>`")
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise RequestError(403, "wrong_token", "the admin token is wrong")

    @router.post("/reload", summary="Load a run folder in the background and swap it in atomically")
    async def reload(body: ReloadRequest | None = None, authorization: str | None = Header(None)) -> dict[str, Any]:
        check(authorization)
        try:
            result = await holder.reload_in_background(body.run_dir if body else None)
        except RequestError as exc:
            if exc.code == "reload_refused":
                metrics.reloads.labels(outcome="refused").inc()
            raise
        metrics.reloads.labels(outcome="ok").inc()
        metrics.model_version.set(holder.model.version)
        return result

    return router


def install_sighup(holder: ModelHolder, metrics: ServeMetrics) -> bool:
    """Reload the current run on SIGHUP; False where signals cannot be handled (not the main thread)."""
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()  # keep a reference until each reload ends

    def start() -> None:
        task = loop.create_task(on_hup())
        running.add(task)
        task.add_done_callback(running.discard)

    async def on_hup() -> None:
        try:
            await holder.reload_in_background()
            metrics.reloads.labels(outcome="ok").inc()
            metrics.model_version.set(holder.model.version)
        except RequestError as exc:
            metrics.reloads.labels(outcome="refused").inc()
            log.error("SIGHUP reload: %s", exc.message)

    try:
        loop.add_signal_handler(signal.SIGHUP, start)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        return False
    return True


def remove_sighup() -> None:
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError, AttributeError):
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
