"""create_app(run_dir, config) -> the FastAPI app of `recstack serve`.

    POST /v1/recommend         one page: {user_id | history, k, exclude, scenario}
    POST /v1/recommend/batch   {"requests": [...]}: many pages, queued together
    GET  /v1/items/{item_id}   an item's title and fields
    GET  /v1/model             what is being served
    GET  /healthz, /readyz     liveness (the process answers) / readiness (a model is loaded)
    GET  /metrics              Prometheus text format
    POST /admin/reload         hot reload (admin.py)
    GET  /                     the demo page (demo.py); OpenAPI docs at /docs

The run is loaded in the lifespan start-up, so uvicorn accepts connections only once it can serve, and
a run folder that cannot serve stops the start with its error. Every refusal has the body of
schemas.RequestError.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from recstack.serve.admin import admin_router, install_sighup, remove_sighup
from recstack.serve.config import ServeConfig
from recstack.serve.demo import render_demo
from recstack.serve.holder import ModelHolder
from recstack.serve.metrics import ServeMetrics
from recstack.serve.schemas import (
    BatchRequest,
    BatchResponse,
    ItemResponse,
    RecommendRequest,
    RecommendResponse,
    RequestError,
)
from recstack.serve.service import RecommendService


def _endpoint(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "unmatched")


def create_app(run_dir: str | Path, config: ServeConfig | None = None) -> FastAPI:
    config = config or ServeConfig()
    holder, metrics = ModelHolder(run_dir), ServeMetrics()
    service = RecommendService(holder, config, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if config.torch_threads is not None:
            torch.set_num_threads(config.torch_threads)
        await asyncio.to_thread(holder.load_initial)
        metrics.model_version.set(holder.model.version)
        await service.batcher.start()
        app.state.sighup = install_sighup(holder, metrics)
        yield
        if app.state.sighup:
            remove_sighup()
        await service.batcher.stop()

    app = FastAPI(
        title="recstack serve",
        summary="Pages from a saved recstack cascade: retrieval channels, merge, ranker, page.",
        lifespan=lifespan,
    )
    app.state.holder, app.state.metrics, app.state.service, app.state.config = holder, metrics, service, config

    @app.middleware("http")
    async def count_and_limit(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
            error = RequestError(413, "payload_too_large", f"body of {length} bytes; at most {config.max_body_bytes}")
            metrics.errors.labels(endpoint="unmatched", code=error.code).inc()
            return JSONResponse(error.body(), status_code=413)
        try:
            response = await call_next(request)
        except Exception:
            metrics.requests.labels(endpoint=_endpoint(request), status="500").inc()
            metrics.errors.labels(endpoint=_endpoint(request), code="internal_error").inc()
            raise
        endpoint = _endpoint(request)
        metrics.requests.labels(endpoint=endpoint, status=str(response.status_code)).inc()
        metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        metrics.errors.labels(endpoint=_endpoint(request), code=exc.code).inc()
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = exc.errors()
        where = ".".join(str(p) for p in problems[0]["loc"] if p != "body") if problems else None
        message = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in problems)
        return await refused(request, RequestError(422, "invalid_request", message, where or None))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return await refused(request, RequestError(exc.status_code, "http_error", str(exc.detail)))

    @app.post("/v1/recommend", response_model=RecommendResponse, tags=["recommend"])
    async def recommend(body: RecommendRequest) -> RecommendResponse:
        return (await service.recommend([body]))[0]

    @app.post("/v1/recommend/batch", response_model=BatchResponse, tags=["recommend"])
    async def recommend_batch(body: BatchRequest) -> BatchResponse:
        if len(body.requests) > config.max_batch_requests:
            raise RequestError(
                422,
                "batch_too_large",
                f"{len(body.requests)} requests in one batch; at most {config.max_batch_requests}",
                "requests",
            )
        return BatchResponse(results=await service.recommend(body.requests, "requests"))

    @app.get("/v1/items/{item_id}", response_model=ItemResponse, tags=["catalogue"])
    async def item(item_id: str) -> ItemResponse:
        model = holder.model
        index = model.item_index.get(item_id)
        if index is None:
            raise RequestError(404, "unknown_item", f"item {item_id!r} is not in {model.dataset.name}", "item_id")
        row = model.dataset.items.row(index - 1, named=True)
        fields = {k: v for k, v in row.items() if k not in ("item", "raw_id")}
        return ItemResponse(
            item_id=item_id, title=model.titles[index], fields=fields, train_interactions=int(model.popularity[index])
        )

    @app.get("/v1/model", tags=["ops"])
    async def model_info() -> dict[str, object]:
        return {**holder.model.describe(), "last_reload": holder.last_reload}

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> JSONResponse:
        if not holder.ready:
            return JSONResponse(RequestError(503, "not_ready", "the model is still loading").body(), status_code=503)
        return JSONResponse({"status": "ready", "model_version": holder.model.version})

    @app.get("/metrics", tags=["ops"])
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def demo(user_id: str | None = None, other: str | None = None, k: int = 10) -> HTMLResponse:
        model = holder.model
        users = list(model.user_index)[: config.demo_users]
        chosen = (other or "").strip() or user_id or (users[0] if users else None)
        page, error = None, None
        if chosen is not None:
            try:
                page = (await service.recommend([RecommendRequest(user_id=chosen, k=k)]))[0]
            except RequestError as exc:
                error = exc.message
        return HTMLResponse(render_demo(model, users, chosen, k, page, error))

    app.include_router(admin_router(holder, metrics, config.admin_token_env))
    return app
