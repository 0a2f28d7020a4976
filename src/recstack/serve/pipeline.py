"""The serving path: many requests -> UserBatches -> channels -> merge -> ranker -> page, timed per stage.

It is `Cascade.recommend` taken apart so that each stage can be timed (each channel's retrieve, the
merge, the ranker's scores, the page arrangement) and so that a request's `exclude` list can be applied
inside retrieval; with no `exclude` it calls exactly what `Cascade.retrieve` and `Cascade.rank` call, in
the same order, and returns the same pages. Rows are grouped (a known user / a raw history / a
cold-start page; with or without a scenario) and each group is one vectorised call per stage: the only
Python loops run over groups, channels and the distinct page sizes asked for.

A raw-history request carries no times: its events are taken as one second apart, ending at the newest
timestamp of the data (rankers and sequential channels that read time gaps see a recent, dense session).
It carries no labels either, so rankers count every event as a positive (their documented default).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from recstack.data.batch import Candidates, Page, UserBatch
from recstack.data.jagged import Jagged
from recstack.page.base import PageInputs

if TYPE_CHECKING:
    from recstack.serve.model import ServingModel


@dataclass
class Row:
    """One resolved request, in internal ids."""

    user: int
    """internal user id; 0 for a raw-history or cold-start request"""
    history: list[int] | None
    """internal item ids of a raw-history request; None: the known user's own history"""
    k: int
    exclude: list[int] = field(default_factory=list)
    scenario: int | None = None
    cold: bool = False
    """serve the cold-start page (train popularity) instead of the cascade"""


@dataclass
class RowResult:
    items: list[int]
    scores: list[float]
    channels: list[list[str]]
    timings_ms: dict[str, float]
    batch_size: int


def run_rows(model: ServingModel, rows: list[Row]) -> list[RowResult]:
    """Pages for `rows`, in order; one vectorised pass per group of alike rows."""
    groups: dict[tuple[bool, bool, bool], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[(row.cold, row.history is None, row.scenario is None)].append(i)
    out: list[RowResult | None] = [None] * len(rows)
    with torch.inference_mode():
        for (cold, _, _), members in groups.items():
            part = [rows[i] for i in members]
            results = _cold_pages(model, part) if cold else _cascade_pages(model, part)
            for i, result in zip(members, results):
                out[i] = result
    return [r for r in out if r is not None]


def _cold_pages(model: ServingModel, rows: list[Row]) -> list[RowResult]:
    """Most popular train items, minus each row's `exclude` (as `recstack recommend` does for unknown users)."""
    started = time.perf_counter()
    scores = model.popularity[1:].unsqueeze(0).repeat(len(rows), 1)
    mask = _exclusion_mask(rows, model.num_items)[:, 1:]
    scores = scores.masked_fill(mask, float("-inf"))
    top_scores, top = torch.topk(scores, min(max(r.k for r in rows), model.num_items), dim=1)
    items, values = (top + 1).tolist(), top_scores.tolist()
    timings = {"popular": (time.perf_counter() - started) * 1000}
    out = []
    for b, row in enumerate(rows):
        keep = [j for j in range(min(row.k, len(values[b]))) if values[b][j] != float("-inf")]
        page_items, page_scores = [items[b][j] for j in keep], [values[b][j] for j in keep]
        out.append(RowResult(page_items, page_scores, [["popular"] for _ in keep], timings, len(rows)))
    return out


def _cascade_pages(model: ServingModel, rows: list[Row]) -> list[RowResult]:
    cascade, timings = model.cascade, {}
    batch = _user_batch(model, rows)
    extra = max(len(r.exclude) for r in rows)
    excluded = _exclusion_mask(rows, model.num_items) if extra else None
    per_channel: dict[str, Candidates] = {}
    for alias, channel in cascade.channels.items():
        started = time.perf_counter()
        quota = cascade.quota(alias)
        candidates = channel.retrieve(batch, quota + extra)
        per_channel[alias] = _drop(candidates, excluded, quota) if excluded is not None else candidates
        timings[f"channel:{alias}"] = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    merged = cascade.merge(per_channel)
    timings["merge"] = (time.perf_counter() - started) * 1000
    ks = sorted({r.k for r in rows})
    if cascade.ranker is None:
        started = time.perf_counter()
        longest = cascade.rank(batch, merged, ks[-1])
        pages = {k: longest.first(k) for k in ks}
        timings["page"] = (time.perf_counter() - started) * 1000
    else:
        started = time.perf_counter()
        scores = cascade.ranker.score(batch, merged)
        timings["rank"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        inputs = PageInputs(batch, merged, scores)
        # One arrangement for the longest page: a shorter page is its prefix (every arranger writes the
        # page slot by slot), so mixed page sizes in one batch cost one pass.
        longest = cascade.page.arrange(inputs, ks[-1])
        pages = {k: longest.first(k) for k in ks}
        timings["page"] = (time.perf_counter() - started) * 1000
    return _results(rows, pages, timings)


def _results(rows: list[Row], pages: dict[int, Page], timings: dict[str, float]) -> list[RowResult]:
    lists = {
        k: (p.items.tolist(), p.scores.tolist(), None if p.channels is None else p.channels.tolist())
        for k, p in pages.items()
    }
    out = []
    for b, row in enumerate(rows):
        items, scores, masks = lists[row.k]
        names = pages[row.k].channel_names
        keep = [j for j, item in enumerate(items[b]) if item > 0]
        tags = [[n for c, n in enumerate(names) if masks[b][j] >> c & 1] if masks else [] for j in keep]
        out.append(RowResult([items[b][j] for j in keep], [scores[b][j] for j in keep], tags, timings, len(rows)))
    return out


def _user_batch(model: ServingModel, rows: list[Row]) -> UserBatch:
    """Known users: their stored histories (selected, not rebuilt); raw histories: a new jagged batch."""
    if rows[0].history is None:
        batch = model.histories.select(torch.tensor([r.user - 1 for r in rows]))
    else:
        histories = [r.history or [] for r in rows]
        history = Jagged.from_lists(histories)
        lengths = history.lengths()
        within = torch.arange(history.values.numel()) - torch.repeat_interleave(history.offsets[:-1], lengths)
        stamps = model.latest_time - torch.repeat_interleave(lengths, lengths) + 1 + within
        batch = UserBatch(torch.zeros(len(rows), dtype=torch.long), history, {"timestamp": stamps.long()})
    if rows[0].scenario is not None:
        batch.scenario = torch.tensor([r.scenario for r in rows], dtype=torch.long)
    return batch


def _exclusion_mask(rows: list[Row], num_items: int) -> torch.Tensor:
    """[B, num_items + 1] True at each row's excluded items."""
    mask = torch.zeros(len(rows), num_items + 1, dtype=torch.bool)
    which = Jagged.from_lists([r.exclude for r in rows])
    mask[which.row_ids(), which.values] = True
    return mask


def _drop(candidates: Candidates, excluded: torch.Tensor, quota: int) -> Candidates:
    """Remove excluded items from a channel's list (order kept) and cut it back to `quota` columns."""
    hit = excluded.gather(1, candidates.items.long()) & (candidates.items > 0)
    order = torch.argsort(hit.to(torch.int8), dim=1, stable=True)[:, :quota]
    gone = hit.gather(1, order)
    items = candidates.items.gather(1, order).masked_fill(gone, 0)
    scores = candidates.scores.gather(1, order).masked_fill(gone, float("-inf"))
    channels = candidates.channels.gather(1, order).masked_fill(gone, 0)
    evidence = candidates.channel_scores
    if evidence is not None:
        evidence = evidence.gather(1, order.unsqueeze(-1).expand(-1, -1, evidence.shape[-1]))
        evidence = evidence.masked_fill(gone.unsqueeze(-1), 0.0)
    return Candidates(items, scores, channels, list(candidates.channel_names), evidence)
