"""ServeConfig: every setting of `recstack serve`, with its default in one place.

The CLI, the app factory and the tests all build a ServeConfig; nothing else holds a default. Limits
exist so one request cannot make the server allocate without bound (a 100k-item history, a 10k-user
batch): requests over a limit get a 4xx naming the limit, never a truncated answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from recstack.errors import ConfigError


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    """loopback by default: expose the server on purpose (--host 0.0.0.0), not by accident"""
    port: int = 8000
    workers: int = 1
    """uvicorn worker processes; each loads its own copy of the run (memory x workers)"""
    max_k: int = 100
    """largest page a request may ask for (k in 1..max_k)"""
    max_history: int = 1000
    """longest `history` (raw item ids) a request may send"""
    max_exclude: int = 1000
    """longest `exclude` list a request may send"""
    max_batch_requests: int = 256
    """most requests in one POST /v1/recommend/batch"""
    max_body_bytes: int = 2_000_000
    """request bodies larger than this (Content-Length) are refused with 413 before they are parsed"""
    micro_batching: bool = True
    """queue concurrent requests and serve them as one UserBatch; off: one request per model call"""
    max_batch: int = 64
    """most requests in one micro-batch"""
    max_wait_ms: float = 2.0
    """how long the first request of a micro-batch waits for company (the queue fills anyway while
    the previous batch runs, so this only matters under light load)"""
    admin_token_env: str = "RECSTACK_ADMIN_TOKEN"
    """environment variable holding the admin token; unset or empty: /admin/* is disabled"""
    torch_threads: int | None = None
    """torch intra-op threads for inference (None: torch's default)"""
    demo_users: int = 50
    """users offered in the demo page's picker"""
    log_level: str = "info"

    def __post_init__(self) -> None:
        positive = ("port", "workers", "max_k", "max_history", "max_batch_requests", "max_body_bytes", "max_batch")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"serve.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_exclude < 0:
            raise ConfigError(f"serve.max_exclude must be >= 0, got {self.max_exclude}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"serve.max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"serve.torch_threads must be >= 1, got {self.torch_threads}")
        if not self.admin_token_env:
            raise ConfigError("serve.admin_token_env must name an environment variable")
