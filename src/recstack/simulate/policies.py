"""Page policies the simulator serves: a saved cascade, and baselines registered by name.

A policy returns, for a batch of requests, a ranked list of world item ids [B, L] (L >= k is allowed,
-1 marks an empty slot). The engine turns it into the page: the first k items of the list that are
in the run's catalogue, not repeated and not in the user's history (`first_valid`); a stochastic
policy whose list runs short is asked again for those rows.

Baselines (`--baseline NAME`, registry kind "sim_policy"):
    random  uniformly random catalogue items (the floor)
    oracle  the best page under the world's ground truth: catalogue items by true expected weighted
            engagement at the request's time and scenario, history excluded (the ceiling; optimal
            because an item's value at position k is examination(k) × its top-position value)
    logged  the logging policy that generated the training logs (World.logging_policy: popularity +
            noisy personalised + random candidates), history removed and refilled by further draws
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from recstack.registry import register
from recstack.simulate.history import HistorySlice
from recstack.simulate.link import LoadedRun, WorldLink


@dataclass
class Request:
    """One batch of page requests (B users) at one session.

    users:     [B] world user ids
    time:      [B] unix seconds
    scenarios: [B] world scenario codes
    history:   the users' consumed items in this arm (world ids)
    rng:       this arm's generator for this batch (stochastic policies draw from it)
    """

    users: np.ndarray
    time: np.ndarray
    scenarios: np.ndarray
    history: HistorySlice
    rng: np.random.Generator

    def select(self, rows: np.ndarray) -> Request:
        keep = np.isin(self.history.rows, rows)
        remap = np.full(self.history.size, -1, dtype=np.int64)
        remap[rows] = np.arange(len(rows))
        history = HistorySlice(
            len(rows),
            self.history.num_items,
            remap[self.history.rows[keep]],
            self.history.items[keep],
            {name: value[keep] for name, value in self.history.features.items()},
        )
        return Request(self.users[rows], self.time[rows], self.scenarios[rows], history, self.rng)


class Policy(Protocol):
    stochastic: bool

    def ranked(self, request: Request, k: int) -> np.ndarray:
        """Ranked world item ids [B, L] (-1 = empty), best first; the page is the first k valid ones."""
        ...


class CascadePolicy:
    """A saved cascade: retrieval channels -> merge -> ranker -> fused order over all merged candidates."""

    stochastic = False

    def __init__(self, run: LoadedRun) -> None:
        self.run = run

    def ranked(self, request: Request, k: int) -> np.ndarray:
        link = self.run.link
        batch = request.history.user_batch(link, request.users, request.time, request.scenarios)
        with torch.no_grad():
            _, merged = self.run.cascade.retrieve(batch, k)
            page = self.run.cascade.rank(batch, merged, max(k, merged.k))
        return link.world_items[page.items.numpy().astype(np.int64)]  # dataset id 0 (empty) -> -1


@register("sim_policy", "random")
class RandomPolicy:
    stochastic = True

    def __init__(self, link: WorldLink, weights: dict[str, float]) -> None:
        self.items = np.nonzero(link.catalogue)[0]

    def ranked(self, request: Request, k: int) -> np.ndarray:
        return self.items[request.rng.integers(len(self.items), size=(len(request.users), 3 * k))]


@register("sim_policy", "oracle")
class OraclePolicy:
    stochastic = False

    def __init__(self, link: WorldLink, weights: dict[str, float]) -> None:
        self.world, self.weights, self.outside = link.world, weights, ~link.catalogue

    def ranked(self, request: Request, k: int) -> np.ndarray:
        values = self.world.item_values(request.users, self.weights, request.scenarios, request.time)  # [B, N]
        values[:, self.outside] = -np.inf
        values[request.history.rows, request.history.items] = -np.inf
        k = min(k, values.shape[1])
        top = np.argpartition(-values, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(values, top, axis=1), axis=1), axis=1)
        return np.where(np.isfinite(np.take_along_axis(values, top, axis=1)), top, -1)


@register("sim_policy", "logged")
class LoggedPolicy:
    stochastic = True

    def __init__(self, link: WorldLink, weights: dict[str, float]) -> None:
        self.world = link.world

    def ranked(self, request: Request, k: int) -> np.ndarray:
        draws = -(-2 * k // self.world.config.page_size)  # enough logged pages for 2k candidates
        return np.concatenate(
            [
                self.world.logging_policy(request.users, request.scenarios, request.time, request.rng)
                for _ in range(draws)
            ],
            axis=1,
        )


def first_valid(
    candidates: np.ndarray, k: int, history: HistorySlice, catalogue: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The page [B, k]: the first k candidates [B, L] of each row that are real (>= 0), in `catalogue`
    ([N] bool), not a repeat of an earlier candidate and not in `history`; -1 where a row runs short.
    Also returns [B] how many candidates each row lost to history."""
    if candidates.shape[1] < k:
        candidates = np.pad(candidates, ((0, 0), (0, k - candidates.shape[1])), constant_values=-1)
    safe = np.maximum(candidates, 0)
    invalid = (candidates < 0) | ~catalogue[safe]
    order = np.argsort(candidates, axis=1, kind="stable")  # equal items keep their left-to-right order
    ordered = np.take_along_axis(candidates, order, axis=1)
    repeat = np.zeros_like(invalid)
    repeat[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    np.put_along_axis(invalid, order, np.take_along_axis(invalid, order, axis=1) | repeat, axis=1)
    consumed = history.contains(candidates) & ~invalid
    invalid |= consumed
    pick = np.argsort(invalid, axis=1, kind="stable")[:, :k]
    page = np.take_along_axis(candidates, pick, axis=1)
    page[np.take_along_axis(invalid, pick, axis=1)] = -1
    return page, consumed.sum(axis=1)
