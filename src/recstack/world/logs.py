"""Logged data of the world in the canonical schema (`RawTables`), generated in chunks of requests.

Impression logs: each request picks a user (by activity), a scenario and a time (requests are spread
evenly over `duration_days`, so timestamps never decrease); the logging policy shows a page and the
simulator samples the funnel. Chunk c uses its own random stream, so `iter_log_chunks`,
`generate_logs` and `write_logs_parquet` yield identical rows for the same seed and size.

Sequence logs (`generate_sequences`): only positive consumption events; each user picks the next item
by a softmax over the catalogue of true click logits at the event time, so the next item follows
the user's drifting focus topic.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from recstack.config import to_dict
from recstack.data.tables import RawTables
from recstack.errors import ConfigError
from recstack.world.simulator import TASKS

if TYPE_CHECKING:
    from recstack.world.model import World

EVENT_NAMES = ("impression", "click", "long_view", "like", "purchase")  # shallow -> deep
_POLICY_ROWS = 4096  # requests scored at once by the logging policy ([rows, pool, D] gathers)
_MAX_SCORE_CELLS = 2_000_000  # users × items scored at once by the sequence choice model


class LogsMixin:
    """Methods of World that write logs; `self` is a World."""

    # ---- request sampling ----------------------------------------------------------------------
    @cached_property
    def _samplers(self: World) -> _Samplers:  # type: ignore[misc]
        by_topic = np.argsort(self.item_topic, kind="stable")
        topics = np.arange(self.num_topics)
        stride = max(1, round(0.618 * self.num_items))
        while math.gcd(stride, self.num_items) != 1:
            stride += 1
        return _Samplers(
            popularity_cdf=np.cumsum(self.item_popularity),
            by_topic=by_topic,
            by_topic_cdf=np.cumsum(self.item_popularity[by_topic]),
            topic_begin=np.searchsorted(self.item_topic[by_topic], topics, side="left"),
            topic_end=np.searchsorted(self.item_topic[by_topic], topics, side="right"),
            activity_cdf=np.cumsum(self.user_activity),
            scenario_cdf=np.cumsum(self.scenario_share),
            random_stride=stride,
        )

    def sample_items_in_topics(self: World, topics: np.ndarray, rng: np.random.Generator) -> np.ndarray:  # type: ignore[misc]
        """One item per entry of `topics` [...], drawn by popularity within that topic (any item if empty)."""
        s = self._samplers
        begin, end = s.topic_begin[topics], s.topic_end[topics]
        empty = begin == end
        begin, end = np.where(empty, 0, begin), np.where(empty, self.num_items, end)
        low = np.where(begin > 0, s.by_topic_cdf[np.maximum(begin - 1, 0)], 0.0)
        draw = low + rng.random(topics.shape) * (s.by_topic_cdf[end - 1] - low)
        return s.by_topic[np.clip(_searchsorted(s.by_topic_cdf, draw), begin, end - 1)]

    def sample_popular_items(self: World, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:  # type: ignore[misc]
        """Items [shape] drawn by popularity prior."""
        return _draw(self._samplers.popularity_cdf, rng.random(shape))

    def sample_requests(self: World, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[misc]
        """Users (by activity) and scenario codes (by scenario share) of `count` requests."""
        return _draw(self._samplers.activity_cdf, rng.random(count)), _draw(
            self._samplers.scenario_cdf, rng.random(count)
        )

    # ---- impression logs -----------------------------------------------------------------------
    def iter_log_chunks(self: World, num_interactions: int | None = None) -> Iterator[pl.DataFrame]:  # type: ignore[misc]
        """Interaction frames of about `chunk_size` rows: user, item, timestamp, scenario, event,
        position (Int16), request (Int64), click, like, long_view, purchase (Int8)."""
        cfg, k = self.config, self.config.page_size
        total = _positive(cfg.num_interactions if num_interactions is None else num_interactions, "num_interactions")
        num_requests = math.ceil(total / k)
        seconds = self.end_time - self.start_time
        scenario_names = pl.Series(self.scenarios, dtype=pl.String)
        event_names = pl.Series(EVENT_NAMES, dtype=pl.String)
        for chunk, first in enumerate(range(0, num_requests, cfg.requests_per_chunk)):
            rng = self.rng("logs", chunk)
            request = np.arange(first, min(first + cfg.requests_per_chunk, num_requests), dtype=np.int64)
            b = len(request)
            times = self.start_time + np.floor((request + rng.random(b)) * (seconds / num_requests)).astype(np.int64)
            users, scenarios = self.sample_requests(b, rng)
            pages = np.empty((b, k), dtype=np.int64)
            labels = {task: np.empty((b, k), dtype=np.int8) for task in TASKS}
            for lo in range(0, b, _POLICY_ROWS):  # sub-batches bound the policy's [rows, pool, D] gather
                part = slice(lo, lo + _POLICY_ROWS)
                pages[part] = self.logging_policy(users[part], scenarios[part], times[part], rng)
                for task, value in self.feedback(users[part], pages[part], scenarios[part], times[part], rng).items():
                    labels[task][part] = value
            event = np.select(
                [labels["purchase"] == 1, labels["like"] == 1, labels["long_view"] == 1, labels["click"] == 1],
                [4, 3, 2, 1],
                0,
            )
            yield pl.DataFrame(
                {
                    "user": self.user_raw.gather(np.repeat(users, k)),
                    "item": self.item_raw.gather(pages.ravel()),
                    "timestamp": np.repeat(times, k),
                    "scenario": scenario_names.gather(np.repeat(scenarios, k)),
                    "event": event_names.gather(event.ravel()),
                    "position": np.tile(np.arange(k, dtype=np.int16), b),
                    "request": np.repeat(request, k),
                    **{task: labels[task].ravel() for task in TASKS},
                }
            )

    def generate_logs(self: World, num_interactions: int | None = None) -> RawTables:  # type: ignore[misc]
        """Impression logs (rounded up to whole pages) with the items and users tables."""
        frame = pl.concat(list(self.iter_log_chunks(num_interactions)), rechunk=True)
        return self._tables("world", frame, list(TASKS))

    def write_logs_parquet(self: World, path: str | Path, num_interactions: int | None = None) -> Path:  # type: ignore[misc]
        """Stream the impression logs chunk by chunk into one Parquet file (written atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder: os.replace is atomic
        writer = None
        try:
            for frame in self.iter_log_chunks(num_interactions):
                table = frame.to_arrow()
                if writer is None:
                    writer = pq.ParquetWriter(temp, table.schema)
                writer.write_table(table)
            assert writer is not None  # total > 0: at least one chunk
            writer.close()
            writer = None
            os.replace(temp, path)
        except BaseException:
            if writer is not None:
                writer.close()
            temp.unlink(missing_ok=True)
            raise
        return path

    def logging_policy(  # type: ignore[misc]
        self: World, users: np.ndarray, scenarios: np.ndarray, times: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Pages [B, K] from a pool of personalised, popular and random candidates, best logging score first."""
        policy, k, n, b = self.config.policy, self.config.page_size, self.num_items, len(users)
        topics = sample_rows(self.user_interest(users, times), k * policy.personalised_pool, rng)
        start = rng.integers(n, size=(b, 1))
        pool = np.concatenate(
            [
                self.sample_items_in_topics(topics, rng),
                self.sample_popular_items((b, k * policy.popular_pool), rng),
                # distinct random items: the stride is coprime to n
                (start + np.arange(k * policy.random_pool) * self._samplers.random_stride) % n,
            ],
            axis=1,
        )
        _, click_logit, _ = self.click_terms(users, pool, scenarios, times)
        score = (
            policy.affinity_weight * (click_logit + policy.affinity_noise * rng.standard_normal(pool.shape))
            + policy.popularity_weight * self.item_log_popularity[pool]
            + policy.temperature * gumbel(rng, pool.shape)
        )
        # Keep one copy of each item per row: sort the pool, drop repeats, then take the top K scores.
        order = np.argsort(pool, axis=1, kind="stable")
        pool, score = np.take_along_axis(pool, order, axis=1), np.take_along_axis(score, order, axis=1)
        score[:, 1:][pool[:, 1:] == pool[:, :-1]] = -np.inf
        top = np.argpartition(-score, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(score, top, axis=1), axis=1), axis=1)
        return np.take_along_axis(pool, top, axis=1)

    # ---- sequence logs -------------------------------------------------------------------------
    def generate_sequences(self: World, num_users: int | None = None, mean_length: int | None = None) -> RawTables:  # type: ignore[misc]
        """Positive events only (label `view` = 1): per user, items chosen one after another by a
        softmax (temperature `sequence_temperature`) over true click logits at the event time, without
        repeats. Users are 0..num_users-1; lengths vary around `mean_length` (at least 5)."""
        cfg = self.config
        num_users = _positive(self.num_users if num_users is None else num_users, "num_users")
        if num_users > self.num_users:
            raise ConfigError(
                f"generate_sequences: num_users = {num_users} exceeds WorldConfig.num_users ({self.num_users})"
            )
        mean = _positive(cfg.sequence_mean_length if mean_length is None else mean_length, "sequence_mean_length")
        rng = self.rng("sequences")
        lengths = np.clip(np.round(mean * np.exp(0.5 * rng.standard_normal(num_users) - 0.125)), 5, 4 * mean)
        lengths = np.minimum(lengths, self.num_items).astype(np.int64)
        # Times: uniform between a user's start (in the first half of the period) and the end, sorted,
        # plus the event's index so that a user's timestamps strictly increase.
        seconds, steps = self.end_time - self.start_time, int(lengths.max())
        first = rng.random((num_users, 1)) * 0.5 * seconds
        draws = np.where(np.arange(steps)[None, :] < lengths[:, None], rng.random((num_users, steps)), np.inf)
        spread = np.sort(draws, axis=1)[:, :steps] * (seconds - first)
        times = self.start_time + np.floor(first + np.where(np.isfinite(spread), spread, 0)).astype(np.int64)
        times += np.arange(steps)
        chosen = np.full(times.shape, -1, dtype=np.int64)
        step = max(1, _MAX_SCORE_CELLS // self.num_items)
        for lo in range(0, num_users, step):  # chunks of users; within a chunk, loop over steps
            users = np.arange(lo, min(lo + step, num_users))
            seen = np.zeros((len(users), self.num_items), dtype=bool)
            for t in range(int(lengths[users].max())):
                _, logit, _ = self.click_terms(users, None, None, times[users, t])
                logit = logit / cfg.sequence_temperature + gumbel(rng, logit.shape)
                logit[seen] = -np.inf
                pick = logit.argmax(axis=1)
                seen[np.arange(len(users)), pick] = True
                chosen[users, t] = pick
        valid = np.arange(times.shape[1])[None, :] < lengths[:, None]
        rows = np.nonzero(valid)
        frame = pl.DataFrame(
            {
                "user": self.user_raw.gather(rows[0]),
                "item": self.item_raw.gather(chosen[rows]),
                "timestamp": times[rows],
                "view": np.ones(len(rows[0]), dtype=np.int8),
            }
        )
        return self._tables("world_sequences", frame, ["view"])

    def _tables(self: World, name: str, interactions: pl.DataFrame, labels: list[str]) -> RawTables:  # type: ignore[misc]
        return RawTables(
            name,
            interactions,
            items=self.items_table(),
            users=self.users_table(),
            labels=labels,
            text_fields=["title", "description"],
            origin=f"world(seed={self.config.seed})",
            extra={"world_config": to_dict(self.config)},
        )


def _positive(value: int, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"WorldConfig.{key} = {value!r} must be a positive integer")
    return int(value)


def sample_rows(probs: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Draw `count` categories per row of `probs` [B, C] (rows need not be normalised) -> [B, count]."""
    batch, classes = probs.shape
    cdf = np.cumsum(probs, axis=1, dtype=np.float64)
    cdf /= cdf[:, -1:]
    # Offset row r's CDF into [r, r + 1] so one searchsorted over the flat array serves every row.
    offsets = np.arange(batch, dtype=np.float64)[:, None]
    flat = (cdf + offsets).ravel()
    found = np.searchsorted(flat, rng.random((batch, count)) + offsets, side="right")
    return np.clip(found - np.arange(batch)[:, None] * classes, 0, classes - 1)


def gumbel(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard Gumbel noise in float32 (half the cost of rng.gumbel's float64)."""
    uniform = rng.random(shape, dtype=np.float32)
    return -np.log(-np.log(np.maximum(uniform, np.float32(1e-30))))


def _searchsorted(cdf: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """np.searchsorted(cdf, draws, side="right") for unordered draws; sorting them first is ~2x faster
    on large CDFs (cache-friendly)."""
    flat = draws.ravel()
    order = np.argsort(flat)
    found = np.empty(flat.shape, dtype=np.int64)
    found[order] = np.searchsorted(cdf, flat[order], side="right")
    return found.reshape(draws.shape)


def _draw(cdf: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Categories for uniform [0, 1) draws under an (unnormalised) CDF."""
    return np.minimum(_searchsorted(cdf, uniform * cdf[-1]), len(cdf) - 1)


@dataclass(frozen=True)
class _Samplers:
    """CDFs for drawing items, users and scenarios in O(log n) each."""

    popularity_cdf: np.ndarray  # [N]
    by_topic: np.ndarray  # [N] item ids grouped by topic
    by_topic_cdf: np.ndarray  # [N] popularity CDF in by_topic order
    topic_begin: np.ndarray  # [T] first index of each topic in by_topic
    topic_end: np.ndarray  # [T]
    activity_cdf: np.ndarray  # [U]
    scenario_cdf: np.ndarray  # [S]
    random_stride: int  # coprime with N: (start + j * stride) % N are distinct for j < N
