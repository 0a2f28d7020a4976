"""World: the ground truth of a synthetic recommendation world (users, items, topics, scenarios, time).

Topics are unit vectors `topic_vectors [T, D]` (orthonormal when D >= T). An item has a main topic, a
topic mixture `item_mixture [N, T]`, a unit vector near `mixture @ topic_vectors`, a quality (std
normal), a price (log-uniform in the configured range, correlated with quality) and a popularity prior.
A user has a stable base taste over topics, a personal offset in embedding space, a price sensitivity
and a sequence of focus topics, one per drift period; interest at time t is
`(1 - focus_weight) * base + focus_weight * f(t)`, where f moves continuously towards the current focus
topic at `interest_drift_rate` per day (closed form, so any time can be queried in any order).

The true user·item `match` is `user_vector(t) · item_vector`; the click logit adds quality, popularity,
the user's price sensitivity × item price and the scenario's topic boost. The funnel built on it lives
in simulator.py, the logs in logs.py. World ids are 0..N-1 / 0..U-1; raw ids are "i<id>" / "u<id>".
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from scipy.special import ndtr

from recstack.config import from_dict
from recstack.world.config import WorldConfig
from recstack.world.logs import LogsMixin, sample_rows
from recstack.world.simulator import SimulatorMixin

SECONDS_PER_DAY = 86_400.0
AGE_BUCKETS = ("<18", "18-24", "25-34", "35-44", "45-54", "55+")
NUM_REGIONS = 8
FILLER_WORDS = ("new", "best", "with", "for", "and", "the", "classic", "premium", "set", "edition", "great", "pack")
# Independent random streams, so adding draws to one part of the world never shifts another.
_STREAMS = {"topics": 1, "items": 2, "users": 3, "focus": 4, "scenarios": 5, "text": 6, "logs": 7, "sequences": 8}


class World(SimulatorMixin, LogsMixin):
    """A seeded synthetic world; `World(WorldConfig(...))` or `World({"num_users": 100, ...})`."""

    def __init__(self, config: WorldConfig | dict | None = None) -> None:
        if config is None or isinstance(config, dict):
            config = from_dict(WorldConfig, config, "world")
        self.config = config.validate()
        self.num_users, self.num_items, self.num_topics = config.num_users, config.num_items, config.num_topics
        self.scenarios = list(config.scenarios)
        self.start_time = int(config.start_time)
        self.end_time = int(config.start_time + round(config.duration_days * SECONDS_PER_DAY))
        self._build_topics()
        self._build_items()
        self._build_users()
        self._build_scenarios()
        self.vocabulary = _pseudo_words(self.rng("text"), self.num_topics, config.vocab_per_topic)
        self.user_raw = _raw_ids("u", self.num_users)  # [U] "u<id>", gathered when building tables
        self.item_raw = _raw_ids("i", self.num_items)

    def rng(self, stream: str, *keys: int) -> np.random.Generator:
        """The random generator of one named stream (and sub-keys such as a chunk index)."""
        return np.random.default_rng([self.config.seed, _STREAMS[stream], *keys])

    # ---- construction ----------------------------------------------------------------------------
    def _build_topics(self) -> None:
        cfg, rng = self.config, self.rng("topics")
        gauss = rng.standard_normal((cfg.embedding_dim, cfg.num_topics))
        if cfg.embedding_dim >= cfg.num_topics:
            vectors = np.linalg.qr(gauss)[0].T  # orthonormal rows: topics do not overlap
        else:
            vectors = (gauss / np.linalg.norm(gauss, axis=0)).T
        self.topic_vectors = vectors.astype(np.float32)  # [T, D]
        self.topic_popularity = rng.dirichlet(np.full(cfg.num_topics, 2.0))  # [T]
        self.topic_names = [f"topic{t:02d}" for t in range(cfg.num_topics)]

    def _build_items(self) -> None:
        cfg, rng, n = self.config, self.rng("items"), self.num_items
        self.item_topic = rng.choice(self.num_topics, size=n, p=self.topic_popularity).astype(np.int64)
        spread = _dirichlet(rng, np.full((n, self.num_topics), 0.5))
        mixture = (1.0 - cfg.item_topic_purity) * spread
        mixture[np.arange(n), self.item_topic] += cfg.item_topic_purity
        self.item_mixture = mixture.astype(np.float32)  # [N, T]
        noise = rng.standard_normal((n, cfg.embedding_dim)) * (cfg.item_vector_noise / math.sqrt(cfg.embedding_dim))
        vectors = mixture @ self.topic_vectors + noise
        self.item_vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)  # [N, D]
        self.item_quality = rng.standard_normal(n).astype(np.float32)
        # Dearer items tend to be better: price quantile follows a normal correlated 0.5 with quality.
        price_score = 0.5 * self.item_quality + math.sqrt(0.75) * rng.standard_normal(n)
        log_lo, log_hi = math.log(cfg.price_min), math.log(cfg.price_max)
        price = np.round(np.exp(log_lo + ndtr(price_score) * (log_hi - log_lo)), 2)  # in cents
        self.item_price = np.clip(price, cfg.price_min, cfg.price_max)
        self.item_price_z = _standardise(np.log(self.item_price)).astype(np.float32)
        log_pop = cfg.popularity_sigma * (0.3 * self.item_quality + math.sqrt(0.91) * rng.standard_normal(n))
        self.item_popularity = np.exp(log_pop - log_pop.max())
        self.item_popularity /= self.item_popularity.sum()  # [N] prior share of attention
        self.item_log_popularity = np.log(self.item_popularity).astype(np.float32)
        funnel = cfg.funnel  # the user-independent part of the click logit
        self._item_click_static = funnel.quality_weight * self.item_quality + funnel.popularity_weight * _standardise(
            self.item_log_popularity
        )

    def _build_users(self) -> None:
        cfg, rng, u, t = self.config, self.rng("users"), self.num_users, self.num_topics
        self.user_age = rng.integers(len(AGE_BUCKETS), size=u)
        self.user_region = rng.integers(NUM_REGIONS, size=u)
        # Age groups share topic tastes, so user features carry signal about interests.
        age_taste = rng.dirichlet(np.ones(t), size=len(AGE_BUCKETS))
        prior = 0.5 * age_taste[self.user_age] + 0.5 * self.topic_popularity
        self.user_base_interest = _dirichlet(rng, cfg.interest_concentration * t * prior).astype(np.float32)
        offset = rng.standard_normal((u, cfg.embedding_dim)) * (cfg.user_taste_noise / math.sqrt(cfg.embedding_dim))
        self.user_offset = offset.astype(np.float32)  # [U, D]
        region_price = rng.normal(0.0, 0.5, NUM_REGIONS)
        self.user_price_sensitivity = np.exp(region_price[self.user_region] + 0.5 * rng.standard_normal(u) - 0.25)
        self.user_price_sensitivity = self.user_price_sensitivity.astype(np.float32)
        activity = np.exp(rng.standard_normal(u))
        self.user_activity = activity / activity.sum()  # [U] share of requests (heavy-tailed)
        # Focus topic per drift period: mostly from the user's base taste, sometimes anything popular.
        focus_rng = self.rng("focus")
        periods = math.ceil(cfg.duration_days / cfg.drift_period_days) + 1
        explore = 0.8 * self.user_base_interest + 0.2 * self.topic_popularity[None, :]
        focus = np.empty((u, periods), dtype=np.int16)
        focus[:, 0] = sample_rows(self.user_base_interest, 1, focus_rng)[:, 0]
        for k in range(1, periods):  # loop over time periods, vectorised over users
            switch = focus_rng.random(u) < cfg.focus_switch_prob
            new = sample_rows(explore, 1, focus_rng)[:, 0]
            focus[:, k] = np.where(switch, new, focus[:, k - 1])
        self.user_focus = focus  # [U, periods]

    def _build_scenarios(self) -> None:
        cfg, rng, s = self.config, self.rng("scenarios"), len(self.scenarios)
        self.scenario_topic_boost = rng.normal(0.0, cfg.scenario_topic_shift, (s, self.num_topics)).astype(np.float32)
        self.scenario_item_boost = (self.scenario_topic_boost @ self.item_mixture.T).astype(np.float32)  # [S, N]
        self.scenario_click_offset = rng.normal(0.0, 0.3, s).astype(np.float32)
        self.scenario_purchase_offset = rng.normal(0.0, 0.5, s).astype(np.float32)
        weights = np.asarray(cfg.scenario_weights or np.ones(s), dtype=np.float64)
        self.scenario_share = weights / weights.sum()  # [S] share of requests

    # ---- ground truth ----------------------------------------------------------------------------
    def user_interest(self, users: np.ndarray, time: float | np.ndarray) -> np.ndarray:
        """Interest over topics [B, T] (rows sum to 1) of `users` [B] at unix `time` (scalar or [B])."""
        cfg = self.config
        users = np.asarray(users)
        days = np.maximum(np.broadcast_to(np.asarray(time, dtype=np.float64), users.shape) - self.start_time, 0.0)
        days = days / SECONDS_PER_DAY
        period, rate, periods = cfg.drift_period_days, cfg.interest_drift_rate, self.user_focus.shape[1]
        current = np.minimum(np.floor(days / period).astype(np.int64), periods - 1)
        base = self.user_base_interest[users].astype(np.float64)
        focus = np.exp(-rate * days)[:, None] * base
        rows = np.arange(len(users))
        for k in range(int(current.max(initial=0)) + 1):  # closed-form EMA, one term per period
            since_start = np.exp(-rate * np.maximum(days - k * period, 0.0))
            since_end = np.exp(-rate * np.maximum(days - (k + 1) * period, 0.0))
            weight = np.where(k < current, since_end - since_start, np.where(k == current, 1.0 - since_start, 0.0))
            focus[rows, self.user_focus[users, k]] += weight  # one entry per row: no index repeats
        return ((1.0 - cfg.focus_weight) * base + cfg.focus_weight * focus).astype(np.float32)

    def user_vectors(self, users: np.ndarray, time: float | np.ndarray) -> np.ndarray:
        """Users' true taste vectors [B, D] at `time`: interest @ topic_vectors + personal offset."""
        return self.user_interest(users, time) @ self.topic_vectors + self.user_offset[np.asarray(users)]

    def click_terms(self, users: np.ndarray, items: np.ndarray | None, scenario, time) -> tuple[np.ndarray, ...]:
        """(match, click_logit, price_term), each [B, K] for items [B, K] or [B, N] for items=None (all).

        click_logit excludes position bias; price_term = user price sensitivity × item price z-score.
        `scenario` is a name, an index, an array [B] of either, or None (no scenario effect).
        """
        users = self.check_users(users)
        funnel = self.config.funnel
        user_vec = self.user_vectors(users, time)
        if items is None:  # item arrays indexed by the slice stay [N] and broadcast against [B, 1]
            index: np.ndarray | slice = slice(None)
            match = user_vec @ self.item_vectors.T
        else:
            index = self.check_items(items, "items", ndim=2, batch=len(users))
            match = np.einsum("bd,bkd->bk", user_vec, self.item_vectors[index])
        price_term = self.user_price_sensitivity[users, None] * self.item_price_z[index]
        logit = (
            funnel.click_bias
            + funnel.match_weight * match
            + self._item_click_static[index]
            - funnel.price_weight * price_term
        )
        if scenario is not None:
            codes = self.scenario_codes(scenario, len(users))
            boost = self.scenario_item_boost[codes if items is None else (codes[:, None], index)]
            logit = logit + boost + self.scenario_click_offset[codes, None]
        return match.astype(np.float32), logit.astype(np.float32), price_term.astype(np.float32)

    def examination(self, num_positions: int) -> np.ndarray:
        """Probability [K] that a user examines positions 0..K-1 (position bias, 1 at the top)."""
        cfg = self.config
        positions = np.arange(num_positions, dtype=np.float64)
        return cfg.position_bias_floor + (1 - cfg.position_bias_floor) / (1 + positions) ** cfg.position_bias_power

    # ---- side tables (canonical schema) ----------------------------------------------------------
    def items_table(self) -> pl.DataFrame:
        """item, title, description (text from topic vocabularies), topic, price, quality."""
        cfg, rng, n = self.config, self.rng("text", 1), self.num_items
        per_topic, words = cfg.vocab_per_topic, _word_series(self)
        # Title: main-topic words, then one word of a topic drawn from the item's mixture.
        title = self.item_topic[:, None] * per_topic + rng.integers(per_topic, size=(n, cfg.title_words))
        title[:, -1] = sample_rows(self.item_mixture, 1, rng)[:, 0] * per_topic + rng.integers(per_topic, size=n)
        # Description: words of topics drawn from the mixture, with a quarter generic filler words.
        topics = sample_rows(self.item_mixture, cfg.description_words, rng)
        description = topics * per_topic + rng.integers(per_topic, size=topics.shape)
        filler = rng.random(topics.shape) < 0.25
        description[filler] = self.num_topics * per_topic + rng.integers(
            len(words) - self.num_topics * per_topic, size=int(filler.sum())
        )
        return pl.DataFrame(
            {
                "item": self.item_raw,
                "title": _join_words(words, title),
                "description": _join_words(words, description),
                "topic": pl.Series(self.topic_names, dtype=pl.String).gather(self.item_topic),
                "price": self.item_price.astype(np.float64),
                "quality": self.item_quality.astype(np.float64),
            }
        )

    def users_table(self) -> pl.DataFrame:
        """user, age_bucket, region (age groups share topic tastes; regions share price sensitivity)."""
        return pl.DataFrame(
            {
                "user": self.user_raw,
                "age_bucket": pl.Series(AGE_BUCKETS, dtype=pl.String).gather(self.user_age),
                "region": pl.Series([f"r{r}" for r in range(NUM_REGIONS)], dtype=pl.String).gather(self.user_region),
            }
        )


def _dirichlet(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    draws = rng.gamma(alpha) + 1e-12  # the floor keeps rows valid when every tiny-alpha draw underflows
    return draws / draws.sum(axis=-1, keepdims=True)


def _standardise(values: np.ndarray) -> np.ndarray:
    std = values.std()
    return (values - values.mean()) / (std if std > 0 else 1.0)


def _raw_ids(prefix: str, count: int) -> pl.Series:
    return (prefix + pl.int_range(count, eager=True).cast(pl.String)).alias(prefix)


def _pseudo_words(rng: np.random.Generator, num_topics: int, per_topic: int) -> list[list[str]]:
    """Distinct pronounceable words, `per_topic` for each topic (runs once per world, not a hot path)."""
    consonants, vowels = "bcdfghjklmnprstvz", "aeiou"
    needed = num_topics * per_topic
    words: dict[str, None] = {}  # a dict keeps first-seen order: deterministic
    while len(words) < needed:
        syllables = rng.integers(2, 4, size=needed)
        letters = rng.integers(0, 85, size=(needed, 3))
        for count, row in zip(syllables, letters):
            word = "".join(consonants[s // 5] + vowels[s % 5] for s in row[:count])
            if word not in FILLER_WORDS:
                words[word] = None
    flat = list(words)[:needed]
    return [flat[t * per_topic : (t + 1) * per_topic] for t in range(num_topics)]


def _word_series(world: World) -> pl.Series:
    return pl.Series([w for topic in world.vocabulary for w in topic] + list(FILLER_WORDS), dtype=pl.String)


def _join_words(words: pl.Series, index: np.ndarray) -> pl.Series:
    """Word indices [N, L] -> N strings of L space-separated words."""
    return words.gather(index.ravel()).reshape(index.shape).arr.join(" ")
