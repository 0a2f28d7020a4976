"""RecommendService: raw requests in, response bodies out, through the micro-batcher.

Requests are resolved against the model held at that moment and queued as (model, row) jobs; the
batcher's model thread serves each model's rows with one `run_rows` call, so a micro-batch that spans
a hot reload serves old and new requests each with their own model. Stage timings are recorded in
Prometheus once per micro-batch (not once per request, which would weight big batches by their size).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from recstack.serve.batcher import MicroBatcher
from recstack.serve.config import ServeConfig
from recstack.serve.holder import ModelHolder
from recstack.serve.metrics import ServeMetrics
from recstack.serve.model import ServingModel
from recstack.serve.pipeline import Row, RowResult, run_rows
from recstack.serve.resolve import Resolved, resolve
from recstack.serve.schemas import PageItem, RecommendRequest, RecommendResponse

Job = tuple[ServingModel, Row]


class RecommendService:
    def __init__(self, holder: ModelHolder, config: ServeConfig, metrics: ServeMetrics) -> None:
        self.holder, self.config, self.metrics = holder, config, metrics
        self.batcher: MicroBatcher[Job, RowResult] = MicroBatcher(
            self._process, config.micro_batching, config.max_batch, config.max_wait_ms
        )

    def _process(self, jobs: list[Job]) -> list[RowResult]:
        """Runs on the model thread: one `run_rows` call per model among the jobs."""
        by_model: dict[int, list[int]] = defaultdict(list)
        for index, (model, _) in enumerate(jobs):
            by_model[id(model)].append(index)
        out: list[RowResult | None] = [None] * len(jobs)
        for members in by_model.values():
            model = jobs[members[0]][0]
            results = run_rows(model, [jobs[i][1] for i in members])
            for index, result in zip(members, results):
                out[index] = result
            seen: set[int] = set()
            for result in results:  # one observation per group of rows served together
                if id(result.timings_ms) not in seen:
                    seen.add(id(result.timings_ms))
                    self.metrics.observe_batch(result.timings_ms, result.batch_size)
        return [r for r in out if r is not None]

    async def recommend(self, requests: list[RecommendRequest], where: str = "") -> list[RecommendResponse]:
        """Responses in request order; RequestError (naming `where[i]`) before anything is queued."""
        started = time.perf_counter()
        model = self.holder.model
        resolved = [
            resolve(model, self.config, request, f"{where}[{i}]" if where else "") for i, request in enumerate(requests)
        ]
        outcomes = await asyncio.gather(*(self.batcher.submit((model, r.row)) for r in resolved))
        total_ms = (time.perf_counter() - started) * 1000
        responses = []
        for r, (result, waited) in zip(resolved, outcomes):
            self.metrics.queue.observe(waited)
            responses.append(self._response(model, r, result, waited * 1000, total_ms))
        return responses

    @staticmethod
    def _response(
        model: ServingModel, r: Resolved, result: RowResult, queue_ms: float, total_ms: float
    ) -> RecommendResponse:
        items = [
            PageItem(item_id=model.raw_items[i - 1], score=s, channels=tags, title=model.titles[i])
            for i, s, tags in zip(result.items, result.scores, result.channels)
        ]
        timings = {"queue": queue_ms, **result.timings_ms, "total": total_ms}
        return RecommendResponse(
            items=items,
            user_id=r.user_id,
            user_known=r.user_known,
            cold_start=r.row.cold,
            dropped_history_items=r.dropped_history,
            unknown_exclude_items=r.unknown_exclude,
            timings_ms={k: round(v, 3) for k, v in timings.items()},
            batch_size=result.batch_size,
            model_version=model.version,
        )
