"""The simulator: the world's answer to a page — true funnel probabilities and sampled feedback.

Funnel (every stage conditioned on the previous one; positions are the page's columns):
    P(click)              = examination(position) * sigmoid(click_logit)
    P(like | click)       = sigmoid(like_bias + like_match_weight * match + like_quality_weight * quality)
    P(long_view | click)  = sigmoid(long_view_bias + long_view_match_weight * match
                                    + long_view_quality_weight * quality)
    P(purchase | like or long_view) = sigmoid(purchase_bias + scenario offset + purchase_match_weight * match
                                              - purchase_price_weight * price_term)
like and long_view are independent given a click; a purchase needs at least one of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from scipy.special import expit as _sigmoid

from recstack.errors import ConfigError, DataError

if TYPE_CHECKING:
    from recstack.world.model import World

TASKS = ("click", "like", "long_view", "purchase")
DEFAULT_PAGE_WEIGHTS = {"click": 1.0, "like": 1.0, "long_view": 1.0, "purchase": 3.0}
_MAX_SCORE_CELLS = 4_000_000  # users × items scored at once when ranking the whole catalogue


class SimulatorMixin:
    """Methods of World that answer pages; `self` is a World."""

    def stage_probabilities(  # type: ignore[misc]
        self: World, users: np.ndarray, pages: np.ndarray | None, scenario, time
    ) -> dict[str, np.ndarray]:
        """Conditional stage probabilities [B, K] ([B, N] with pages=None, then without position bias):
        examine, click (given examined), like / long_view (given click), purchase (given like or long_view)."""
        funnel = self.config.funnel
        match, click_logit, price_term = self.click_terms(users, pages, scenario, time)
        index = slice(None) if pages is None else np.asarray(pages)
        quality = self.item_quality[index]
        width = self.num_items if pages is None else np.shape(pages)[1]
        examine = np.ones(width) if pages is None else self.examination(width)
        purchase_logit = (
            funnel.purchase_bias + funnel.purchase_match_weight * match - funnel.purchase_price_weight * price_term
        )
        if scenario is not None:
            codes = self.scenario_codes(scenario, len(match))
            purchase_logit = purchase_logit + self.scenario_purchase_offset[codes, None]
        return {
            "examine": np.broadcast_to(examine.astype(np.float32), match.shape),
            "click": _sigmoid(click_logit),
            "like": _sigmoid(
                funnel.like_bias + funnel.like_match_weight * match + funnel.like_quality_weight * quality
            ),
            "long_view": _sigmoid(
                funnel.long_view_bias
                + funnel.long_view_match_weight * match
                + funnel.long_view_quality_weight * quality
            ),
            "purchase": _sigmoid(purchase_logit),
        }

    def expected_engagement(self: World, users: np.ndarray, pages: np.ndarray, scenario, time) -> dict[str, np.ndarray]:  # type: ignore[misc]
        """Ground-truth marginal probabilities [B, K] of click, like, long_view and purchase for
        `users` [B] shown `pages` [B, K] (world item ids, column = position) in `scenario` at unix `time`."""
        return _marginals(self.stage_probabilities(users, pages, scenario, time))

    def feedback(  # type: ignore[misc]
        self: World, users: np.ndarray, pages: np.ndarray, scenario, time, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """Sampled labels (Int8 [B, K]) click, like, long_view, purchase, drawn with `rng`;
        nested per slot: purchase ⊆ like ∪ long_view ⊆ click."""
        stage = self.stage_probabilities(users, pages, scenario, time)
        shape = stage["click"].shape
        click = rng.random(shape) < stage["examine"] * stage["click"]
        like = click & (rng.random(shape) < stage["like"])
        long_view = click & (rng.random(shape) < stage["long_view"])
        purchase = (like | long_view) & (rng.random(shape) < stage["purchase"])
        return {name: value.astype(np.int8) for name, value in zip(TASKS, (click, like, long_view, purchase))}

    def page_value(  # type: ignore[misc]
        self: World,
        users: np.ndarray,
        pages: np.ndarray,
        weights: dict[str, float] | None = None,
        scenario=None,
        time=None,
    ) -> np.ndarray:
        """Expected weighted engagement per page [B] (default: first scenario, at the end of the log)."""
        weights = _check_weights(weights)
        scenario = self.scenarios[0] if scenario is None else scenario
        time = self.end_time if time is None else time
        expected = self.expected_engagement(users, pages, scenario, time)
        return sum(
            (weight * expected[task].sum(axis=1) for task, weight in weights.items()),
            start=np.zeros(len(expected["click"])),
        )

    def item_values(  # type: ignore[misc]
        self: World, users: np.ndarray, weights: dict[str, float] | None = None, scenario=None, time=None
    ) -> np.ndarray:
        """Expected weighted engagement of every item at the top position [B, N] (no position bias)."""
        weights = _check_weights(weights)
        scenario = self.scenarios[0] if scenario is None else scenario
        time = self.end_time if time is None else time
        users = self.check_users(users)
        times = np.broadcast_to(np.asarray(time), users.shape)
        codes = self.scenario_codes(scenario, len(users))
        step = max(1, _MAX_SCORE_CELLS // self.num_items)
        values = np.empty((len(users), self.num_items), dtype=np.float32)
        for lo in range(0, len(users), step):  # chunks of users bound the [B, N] memory
            part = slice(lo, lo + step)
            expected = _marginals(self.stage_probabilities(users[part], None, codes[part], times[part]))
            values[part] = sum(weight * expected[task] for task, weight in weights.items())
        return values

    def oracle_pages(  # type: ignore[misc]
        self: World,
        users: np.ndarray,
        page_size: int | None = None,
        weights: dict[str, float] | None = None,
        scenario=None,
        time=None,
    ) -> np.ndarray:
        """The best page [B, K] for each user: items by true value, best first (optimal because the
        value of an item at position k is examination(k) × its top-position value)."""
        k = page_size or self.config.page_size
        values = self.item_values(users, weights, scenario, time)
        top = np.argpartition(-values, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(values, top, axis=1), axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1)

    def random_pages(self: World, count: int, rng: np.random.Generator, page_size: int | None = None) -> np.ndarray:  # type: ignore[misc]
        """Uniformly random pages [count, K] of distinct items (a baseline for page metrics)."""
        k = page_size or self.config.page_size
        return (
            np.argsort(rng.random((count, self.num_items)), axis=1)[:, :k]
            if self.num_items <= 4 * k
            else _distinct_random(rng, count, k, self.num_items)
        )

    # ---- ids and checks --------------------------------------------------------------------------
    def scenario_codes(self: World, scenario, batch: int) -> np.ndarray:  # type: ignore[misc]
        """Scenario name / index / array of either -> int codes [batch]."""
        values = np.broadcast_to(np.asarray(scenario), (batch,))
        if values.dtype.kind in "iu":
            bad = (values < 0) | (values >= len(self.scenarios))
            if bad.any():
                raise DataError(f"scenario index {values[bad][0]} out of range 0..{len(self.scenarios) - 1}")
            return values.astype(np.int64)
        lookup = {name: i for i, name in enumerate(self.scenarios)}
        names, inverse = np.unique(values.astype(str), return_inverse=True)
        unknown = [str(n) for n in names if n not in lookup]
        if unknown:
            raise DataError(f"unknown scenario {unknown[0]!r}; known: {', '.join(self.scenarios)}")
        return np.array([lookup[n] for n in names], dtype=np.int64)[inverse]

    def check_users(self: World, users: np.ndarray) -> np.ndarray:  # type: ignore[misc]
        users = np.asarray(users)
        if users.ndim != 1 or users.dtype.kind not in "iu":
            raise DataError(f"users must be a 1-d integer array, got shape {users.shape} dtype {users.dtype}")
        if users.size and (users.min() < 0 or users.max() >= self.num_users):
            raise DataError(f"users: id out of range 0..{self.num_users - 1}")
        return users

    def check_items(self: World, items: np.ndarray, name: str, ndim: int, batch: int | None = None) -> np.ndarray:  # type: ignore[misc]
        items = np.asarray(items)
        if items.ndim != ndim or items.dtype.kind not in "iu" or (batch is not None and items.shape[0] != batch):
            raise DataError(
                f"{name} must be a {ndim}-d integer array with {batch} rows, "
                f"got shape {items.shape} dtype {items.dtype}"
            )
        if items.size and (items.min() < 0 or items.max() >= self.num_items):
            raise DataError(f"{name}: item id out of range 0..{self.num_items - 1}")
        return items

    def item_raw_ids(self: World, items: np.ndarray) -> np.ndarray:  # type: ignore[misc]
        """World item ids [...] -> raw ids "i<id>" (object array, same shape)."""
        items = self.check_items(np.asarray(items), "items", np.ndim(items))
        return self.item_raw.gather(items.ravel()).to_numpy().reshape(items.shape)

    def user_raw_ids(self: World, users: np.ndarray) -> np.ndarray:  # type: ignore[misc]
        """World user ids [B] -> raw ids "u<id>" (object array)."""
        users = self.check_users(np.asarray(users).ravel())
        return self.user_raw.gather(users).to_numpy()

    def item_ids(self: World, raw) -> np.ndarray:  # type: ignore[misc]
        """Raw ids "i<id>" -> world item ids (int64); a malformed or unknown id is a DataError."""
        return _parse_ids(raw, "i", self.num_items, "item")

    def user_ids(self: World, raw) -> np.ndarray:  # type: ignore[misc]
        """Raw ids "u<id>" -> world user ids (int64)."""
        return _parse_ids(raw, "u", self.num_users, "user")


def _marginals(stage: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    click = stage["examine"] * stage["click"]
    engaged = 1.0 - (1.0 - stage["like"]) * (1.0 - stage["long_view"])
    return {
        "click": click,
        "like": click * stage["like"],
        "long_view": click * stage["long_view"],
        "purchase": click * engaged * stage["purchase"],
    }


def _check_weights(weights: dict[str, float] | None) -> dict[str, float]:
    weights = DEFAULT_PAGE_WEIGHTS if weights is None else weights
    unknown = sorted(set(weights) - set(TASKS))
    if unknown:
        raise ConfigError(f"page weights: unknown task {unknown[0]!r}; valid: {', '.join(TASKS)}")
    return weights


def _distinct_random(rng: np.random.Generator, count: int, k: int, n: int) -> np.ndarray:
    """Distinct random items per row by rejection of in-row repeats (n > 4k keeps repeats rare)."""
    pages = rng.integers(n, size=(count, k))
    while True:
        ordered = np.sort(pages, axis=1)
        repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        if not repeated.any():
            return pages
        pages[repeated] = rng.integers(n, size=(int(repeated.sum()), k))


def _parse_ids(raw, prefix: str, count: int, kind: str) -> np.ndarray:
    series = pl.Series(raw, dtype=pl.String) if not isinstance(raw, pl.Series) else raw.cast(pl.String)
    ids = series.str.strip_prefix(prefix).cast(pl.Int64, strict=False)
    canonical = prefix + ids.cast(pl.String)  # rejects "x1", "i07", "i+1"
    bad = (ids.is_null() | (series != canonical) | (ids < 0) | (ids >= count)).fill_null(True)
    if bad.any():
        raise DataError(f"{kind} id {series.filter(bad)[0]!r} is not of the form {prefix}<0..{count - 1}>")
    return ids.to_numpy()
