"""WorldConfig: every knob of the synthetic world, with its default, in one place.

A config is checked when it is built (`__post_init__`), so a bad value fails with a ConfigError
naming the key before any array is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recstack.errors import ConfigError


@dataclass
class FunnelConfig:
    """Logit coefficients of the behaviour funnel impression -> click -> (like, long_view) -> purchase.

    `match` below is the true user·item match (user interest vector · item vector, roughly in [-0.5, 1]).
    """

    click_bias: float = -2.5
    match_weight: float = 4.0  # click logit per unit of match
    quality_weight: float = 0.5  # click logit per std of item quality
    popularity_weight: float = 0.2  # click logit per std of log popularity (social proof)
    price_weight: float = 0.5  # click logit lost per (user price sensitivity × item price z-score)
    like_bias: float = -2.0
    like_match_weight: float = 2.0
    like_quality_weight: float = 0.5
    long_view_bias: float = -1.0
    long_view_match_weight: float = 1.0
    long_view_quality_weight: float = 1.0
    purchase_bias: float = -3.0
    purchase_match_weight: float = 1.0
    purchase_price_weight: float = 1.0


@dataclass
class PolicyConfig:
    """The logging policy that chose the logged pages: popularity + noisy personalised + random.

    Per request a candidate pool is drawn (sizes are multiples of the page size), each candidate is
    scored `affinity_weight * (true click logit + noise) + popularity_weight * log popularity +
    temperature * Gumbel`, and the top page_size distinct candidates are shown in score order.
    """

    personalised_pool: int = 3  # candidates drawn from the user's current topics, × page size
    popular_pool: int = 1  # candidates drawn by popularity, × page size
    random_pool: int = 1  # uniformly random distinct candidates, × page size
    affinity_weight: float = 1.0
    affinity_noise: float = 1.0  # std of the policy's error on the true click logit
    popularity_weight: float = 0.5
    temperature: float = 1.0  # scale of the Gumbel noise: the policy's randomness


@dataclass
class WorldConfig:
    num_users: int = 1000
    num_items: int = 2000
    num_topics: int = 20
    embedding_dim: int = 32
    scenarios: list[str] = field(default_factory=lambda: ["home_feed", "search", "mall"])
    scenario_weights: list[float] | None = None  # request share per scenario; None = uniform
    scenario_topic_shift: float = 1.0  # std of each scenario's per-topic click-logit boost
    seed: int = 0

    # time and interest drift
    start_time: int = 1_700_000_000  # unix seconds of the first logged request
    duration_days: float = 30.0
    drift_period_days: float = 1.0  # a user's focus topic may change once per period
    focus_switch_prob: float = 0.3  # chance per period that the focus topic changes
    interest_drift_rate: float = 0.5  # per day: how fast interest moves towards the focus topic
    focus_weight: float = 0.6  # share of interest that follows the focus (rest: stable base taste)
    interest_concentration: float = 0.3  # Dirichlet concentration of base taste (small = few topics)
    user_taste_noise: float = 0.3  # personal taste beyond topics, as a share of the interest vector's norm

    # items
    item_topic_purity: float = 0.7  # mass of an item's main topic in its topic mixture
    item_vector_noise: float = 0.3  # item-specific deviation from its topic mixture in embedding space
    popularity_sigma: float = 1.5  # std of log popularity (heavy tail)
    price_min: float = 1.0
    price_max: float = 500.0
    vocab_per_topic: int = 30
    title_words: int = 4
    description_words: int = 16

    # behaviour
    position_bias_power: float = 0.8  # examination(k) = floor + (1 - floor) / (1 + k) ** power
    position_bias_floor: float = 0.05
    funnel: FunnelConfig = field(default_factory=FunnelConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    # log generation
    num_interactions: int = 100_000  # impressions logged (rounded up to whole pages)
    page_size: int = 10  # impressions per request
    chunk_size: int = 262_144  # impressions generated per chunk (bounds memory)
    sequence_mean_length: int = 20  # mean positive events per user in generate_sequences
    sequence_temperature: float = 0.5  # softmax temperature of the sequence choice model

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> WorldConfig:
        positive = (
            "num_users",
            "num_items",
            "num_topics",
            "embedding_dim",
            "num_interactions",
            "page_size",
            "chunk_size",
            "vocab_per_topic",
            "title_words",
            "description_words",
            "sequence_mean_length",
            "duration_days",
            "drift_period_days",
            "interest_concentration",
            "price_min",
            "sequence_temperature",
        )
        for key in positive:
            _check(getattr(self, key) > 0, key, getattr(self, key), "must be > 0")
        for key in (
            "interest_drift_rate",
            "user_taste_noise",
            "scenario_topic_shift",
            "item_vector_noise",
            "popularity_sigma",
            "position_bias_power",
            "start_time",
        ):
            _check(getattr(self, key) >= 0, key, getattr(self, key), "must be >= 0")
        for key in ("focus_switch_prob", "focus_weight", "item_topic_purity", "position_bias_floor"):
            _check(0 <= getattr(self, key) <= 1, key, getattr(self, key), "must be in [0, 1]")
        _check(
            self.num_items >= self.page_size,
            "num_items",
            self.num_items,
            f"must be >= page_size ({self.page_size}) so a page has distinct items",
        )
        _check(
            self.num_topics * self.vocab_per_topic <= 100_000,
            "vocab_per_topic",
            self.vocab_per_topic,
            f"× num_topics ({self.num_topics}) must be <= 100000 distinct words",
        )
        _check(
            self.price_max >= self.price_min, "price_max", self.price_max, f"must be >= price_min ({self.price_min})"
        )
        _check(len(self.scenarios) > 0, "scenarios", self.scenarios, "must name at least one scenario")
        _check(len(set(self.scenarios)) == len(self.scenarios), "scenarios", self.scenarios, "has duplicates")
        if self.scenario_weights is not None:
            weights = self.scenario_weights
            _check(
                len(weights) == len(self.scenarios),
                "scenario_weights",
                weights,
                f"needs one weight per scenario ({len(self.scenarios)})",
            )
            _check(
                all(w >= 0 for w in weights) and sum(weights) > 0,
                "scenario_weights",
                weights,
                "must be >= 0 with a positive sum",
            )
        policy = self.policy
        for key in ("personalised_pool", "popular_pool", "random_pool"):
            _check(getattr(policy, key) >= 0, f"policy.{key}", getattr(policy, key), "must be >= 0")
        _check(
            policy.random_pool >= 1,
            "policy.random_pool",
            policy.random_pool,
            "must be >= 1 (the random candidates guarantee a full page of distinct items)",
        )
        for key in ("affinity_noise", "temperature"):
            _check(getattr(policy, key) >= 0, f"policy.{key}", getattr(policy, key), "must be >= 0")
        return self

    @property
    def requests_per_chunk(self) -> int:
        return max(1, self.chunk_size // self.page_size)


def _check(ok: bool, key: str, value: object, rule: str) -> None:
    if not ok:
        raise ConfigError(f"WorldConfig.{key} = {value!r} {rule}")
