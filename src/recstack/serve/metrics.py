"""Prometheus metrics of one app, in its own registry (two apps in one process, as in tests, never clash).

recstack_serve_requests_total{endpoint, status}      every HTTP request, by route template and status
recstack_serve_request_seconds{endpoint}             end-to-end handling time
recstack_serve_errors_total{endpoint, code}          refused (4xx, by error code) and failed (5xx) requests
recstack_serve_stage_seconds{stage}                  one observation per micro-batch and stage:
                                                     channel:<alias>, merge, rank, page, popular (cold start)
recstack_serve_queue_seconds                         time a request waited for its micro-batch
recstack_serve_batch_size                            requests per micro-batch
recstack_serve_reloads_total{outcome}                hot reloads: ok / refused
recstack_serve_model_version                         version of the model being served
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Milliseconds to seconds: a page is served in ~1-100 ms; stages take from microseconds up.
_STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("recstack_serve_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "recstack_serve_request_seconds", "request handling time", ["endpoint"], buckets=_STAGE_BUCKETS, registry=r
        )
        self.errors = Counter("recstack_serve_errors", "refused or failed requests", ["endpoint", "code"], registry=r)
        self.stages = Histogram(
            "recstack_serve_stage_seconds",
            "time per pipeline stage and micro-batch",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.queue = Histogram(
            "recstack_serve_queue_seconds", "wait for a micro-batch", buckets=_STAGE_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "recstack_serve_batch_size", "requests per micro-batch", buckets=_BATCH_BUCKETS, registry=r
        )
        self.reloads = Counter("recstack_serve_reloads", "hot reloads", ["outcome"], registry=r)
        self.model_version = Gauge("recstack_serve_model_version", "version of the served model", registry=r)

    def observe_batch(self, timings_ms: dict[str, float], size: int) -> None:
        for stage, ms in timings_ms.items():
            self.stages.labels(stage=stage).observe(ms / 1000)
        self.batch_size.observe(size)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
