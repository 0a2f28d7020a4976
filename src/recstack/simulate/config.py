"""SimulateConfig: every knob of an online evaluation, with its default, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field

from recstack.errors import ConfigError
from recstack.world.simulator import DEFAULT_PAGE_WEIGHTS, TASKS


@dataclass
class SimulateConfig:
    """How simulated users meet the served pages (`recstack simulate` options in brackets)."""

    users: int = 1000
    """simulated users [--users], drawn without replacement from the users of the first run's dataset"""
    sessions: int = 5
    """sessions per user [--sessions]: one page each, at advancing simulated times"""
    session_gap_hours: float = 24.0
    """simulated time between a user's sessions [--gap-hours]; session s of a user falls at a uniformly
    drawn time in [end of the log + s * gap, end of the log + (s + 1) * gap)"""
    page_size: int | None = None
    """items per page [--page-size]; None: the first run's page.k"""
    scenario: str | None = None
    """serve every page in this scenario [--scenario]; None: each session's scenario is drawn by the
    world's request shares"""
    baselines: list[str] = field(default_factory=list)
    """baseline arms [--baseline]: registered page policies (random, oracle, logged)"""
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PAGE_WEIGHTS))
    """task weights of the page value (expected weighted engagement)"""
    common_random_numbers: bool = True
    """every arm sees the same uniform draws for the feedback of a (user, session, slot) [--no-crn turns it
    off]; arms differ only where their pages differ, so paired differences have small variance"""
    closed_loop: bool = True
    """the clicks of a session join that user's history (for the next pages and the exclusion of consumed
    items) in each arm separately [--open-loop turns it off: every session sees the logged history]"""
    confidence: float = 0.95
    """level of the intervals [--confidence]"""
    batch_size: int = 512
    """users served at once [--batch-size]: bounds memory; the random streams are drawn per batch, so the
    same seed and batch size reproduce a simulation exactly"""
    seed: int = 0
    """seeds users, times, scenarios, feedback and the random / logged baselines [--seed]"""

    def __post_init__(self) -> None:
        _check(self.users >= 2, "users", self.users, "must be >= 2 (an interval needs two users)")
        _check(self.sessions >= 1, "sessions", self.sessions, "must be >= 1")
        _check(self.session_gap_hours >= 0, "session_gap_hours", self.session_gap_hours, "must be >= 0")
        _check(self.page_size is None or self.page_size >= 1, "page_size", self.page_size, "must be >= 1")
        _check(0 < self.confidence < 1, "confidence", self.confidence, "must be in (0, 1)")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        unknown = sorted(set(self.weights) - set(TASKS))
        _check(not unknown, "weights", self.weights, f"names unknown task(s) {unknown}; tasks: {', '.join(TASKS)}")
        _check(len(set(self.baselines)) == len(self.baselines), "baselines", self.baselines, "has duplicates")


def _check(ok: bool, key: str, value: object, rule: str) -> None:
    if not ok:
        raise ConfigError(f"simulate.{key} = {value!r} {rule}")
