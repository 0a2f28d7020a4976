"""The HTTP contract: request and response bodies (pydantic, so they appear in the OpenAPI docs) and
the one error body every 4xx uses, {"error": {"code", "message", "field"}}, so a client can branch on
`code` and show `message` as it is."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

RawId = str | int
"""raw ids as in the source data; numbers are accepted and compared as their decimal text"""


class RequestError(Exception):
    """A request the server refuses, with the status, a stable code and a message naming the field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: RawId | None = Field(
        default=None, description="a known user's raw id; unknown users get the cold-start page"
    )
    history: list[RawId] | None = Field(
        default=None, description="raw item ids, oldest first, for a user the run does not know (instead of user_id)"
    )
    k: int | None = Field(default=None, description="items on the page, 1..max_k (default: the run's page size)")
    exclude: list[RawId] = Field(default_factory=list, description="raw item ids never to show")
    scenario: str | None = Field(default=None, description="scenario name, for datasets logged in several scenarios")


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[RecommendRequest]


class PageItem(BaseModel):
    item_id: str
    score: float
    channels: list[str] = Field(description="retrieval channels that found the item")
    title: str


class RecommendResponse(BaseModel):
    items: list[PageItem]
    user_id: str | None
    user_known: bool
    cold_start: bool = Field(description="true when the page is the popular-items fallback")
    dropped_history_items: list[str] = Field(description="history ids the run does not know, left out")
    unknown_exclude_items: list[str] = Field(description="exclude ids the run does not know (nothing to exclude)")
    timings_ms: dict[str, float] = Field(description="per stage: queue, each channel, merge, rank, page, total")
    batch_size: int = Field(description="requests served together in this request's micro-batch")
    model_version: int


class BatchResponse(BaseModel):
    results: list[RecommendResponse]


class ItemResponse(BaseModel):
    item_id: str
    title: str
    fields: dict[str, Any]
    train_interactions: int


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_dir: str | None = Field(default=None, description="run folder to load (default: the one being served)")
