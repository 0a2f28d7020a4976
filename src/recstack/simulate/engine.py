"""The simulation loop: serve every arm's pages to the same simulated users and collect their feedback.

For each session s (simulated time advances by `session_gap_hours` per session) and each batch of
users, every arm serves a page; the world answers it with ground-truth marginals (expected engagement,
page value) and sampled feedback (clicks, likes, long views, purchases). With common random numbers
every arm's feedback for (user, session, slot) uses the same uniform draws, so two arms that show the
same page get the same feedback and differences come only from the pages. In the closed loop each
arm's clicks join its own copy of the users' histories before the next session.

Vectorised: a batch of users is one call per stage (cascade retrieve/rank in torch, world in numpy);
the Python loops run over sessions, batches and arms only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recstack.cascade import history_features
from recstack.data.dataset import Dataset
from recstack.errors import ConfigError
from recstack.progress import progress_bar
from recstack.registry import lookup
from recstack.simulate.config import SimulateConfig
from recstack.simulate.history import History
from recstack.simulate.link import LoadedRun, WorldLink
from recstack.simulate.policies import CascadePolicy, Policy, Request, first_valid
from recstack.world.model import World
from recstack.world.simulator import TASKS

PLURAL = {"click": "clicks", "like": "likes", "long_view": "long_views", "purchase": "purchases"}
METRICS = (
    *PLURAL.values(),
    *(f"expected_{name}" for name in PLURAL.values()),
    "page_value",
    "topics",
    "filled",
)
"""Per page: sampled counts, ground-truth expected counts, expected weighted engagement (page value),
distinct topics (diversity) and items shown (below page size only when a policy runs out of items)."""
_REFILLS = 8  # times a stochastic policy is asked again for rows it left short


@dataclass
class Arm:
    """One policy under test. `link` and `view` give its catalogue and the logged history it starts from."""

    name: str
    kind: str  # "run" or a baseline name
    policy: Policy
    link: WorldLink
    view: Dataset
    features: tuple[str, ...]
    run: str | None = None
    page_size: int | None = None  # the run's page.k

    @property
    def consumed_label(self) -> str:
        """The feedback that joins the history: the run's retrieval label when the world produces it."""
        label = self.view.meta.get("positive_label")
        return label if label in TASKS else "click"


def run_arm(run: LoadedRun, name: str | None = None) -> Arm:
    view = run.cascade.retrieval_view(run.link.dataset)
    policy = CascadePolicy(run)
    features = history_features(view)
    return Arm(name or run.name, "run", policy, run.link, view, features, str(run.path), run.cascade.page.config.k)


def baseline_arm(kind: str, like: Arm, weights: dict[str, float]) -> Arm:
    """Baseline `kind` (a registered "sim_policy") on the catalogue and logged history of arm `like`."""
    policy = lookup("sim_policy", kind).cls(like.link, weights)
    return Arm(kind, kind, policy, like.link, like.view, ("timestamp",))


@dataclass
class SimulationResult:
    """Raw per-page results. values[arm][metric]: [U, S]; pages[arm]: [U, S, K] world ids (-1 empty);
    consumed[arm]: [U, S, K] bool, the slots whose feedback joined the history (clicks by default)."""

    config: SimulateConfig
    arms: list[dict[str, Any]]
    page_size: int
    users: np.ndarray
    times: np.ndarray
    scenarios: np.ndarray
    values: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    pages: dict[str, np.ndarray] = field(default_factory=dict)
    consumed: dict[str, np.ndarray] = field(default_factory=dict)
    policy_seconds: dict[str, float] = field(default_factory=dict)
    history_removed: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    world: dict[str, Any] = field(default_factory=dict)


def sample_users(link: WorldLink, count: int, seed: int) -> np.ndarray:
    """`count` distinct world users known to `link`'s dataset, drawn uniformly ([count] world ids)."""
    known = link.world_users[1:]
    if count > len(known):
        raise ConfigError(f"simulate.users (--users) = {count} exceeds the {len(known)} users of {link.dataset.name}")
    return np.sort(np.random.default_rng([seed, 0, 0]).choice(known, size=count, replace=False))


def simulate(
    arms: list[Arm], world: World, config: SimulateConfig, page_size: int, progress: bool = True
) -> SimulationResult:
    """Serve `config.sessions` pages of `page_size` items to `config.users` users in every arm."""
    if not arms:
        raise ConfigError("simulate: nothing to serve (no run and no baseline)")
    names = [arm.name for arm in arms]
    if len(set(names)) != len(names):
        raise ConfigError(f"simulate: arm names must differ, got {names}")
    started = time.perf_counter()
    users = sample_users(arms[0].link, config.users, config.seed)
    num_users, sessions, k = len(users), config.sessions, page_size
    rng = np.random.default_rng([config.seed, 0, 1])
    gap = config.session_gap_hours * 3600.0
    times = world.end_time + np.floor((np.arange(sessions)[None, :] + rng.random((num_users, sessions))) * gap)
    times = times.astype(np.int64)  # [U, S]
    if config.scenario is not None:
        scenarios = np.full((num_users, sessions), world.scenario_codes(config.scenario, 1)[0])
    else:
        cdf = np.cumsum(world.scenario_share)
        draws = np.searchsorted(cdf, rng.random((num_users, sessions)) * cdf[-1], side="right")
        scenarios = np.minimum(draws, len(cdf) - 1)
    result = SimulationResult(
        config,
        [{"name": a.name, "kind": a.kind, "run": a.run, "catalogue": int(a.link.catalogue.sum())} for a in arms],
        k,
        users,
        times,
        scenarios,
    )
    cfg = world.config
    result.world = {
        "seed": cfg.seed,
        "users": cfg.num_users,
        "items": cfg.num_items,
        "topics": cfg.num_topics,
        "scenarios": list(cfg.scenarios),
        "dataset": arms[0].link.dataset.name,
        "catalogue": int(arms[0].link.catalogue.sum()),
    }
    histories = [History.logged(arm.link, users, arm.features, arm.view) for arm in arms]
    for arm in arms:
        result.values[arm.name] = {m: np.zeros((num_users, sessions), dtype=np.float64) for m in METRICS}
        result.pages[arm.name] = np.full((num_users, sessions, k), -1, dtype=np.int32)
        result.consumed[arm.name] = np.zeros((num_users, sessions, k), dtype=bool)
        result.policy_seconds[arm.name] = 0.0
        result.history_removed[arm.name] = 0
    starts = list(range(0, num_users, config.batch_size))
    bar = progress_bar(total=sessions * len(starts), desc="simulate", unit="batch", disable=not progress)
    for session in range(sessions):
        consumed: list[list[_Events]] = [[] for _ in arms]
        for b, lo in enumerate(starts):
            hi = min(lo + config.batch_size, num_users)
            batch_users, batch_time, batch_scen = users[lo:hi], times[lo:hi, session], scenarios[lo:hi, session]
            for a, arm in enumerate(arms):
                request = Request(
                    batch_users,
                    batch_time,
                    batch_scen,
                    histories[a].slice(lo, hi),
                    np.random.default_rng([config.seed, 2, session, b, a]),
                )
                tic = time.perf_counter()
                page, removed = _serve(arm, request, k)
                result.history_removed[arm.name] += removed
                result.policy_seconds[arm.name] += time.perf_counter() - tic
                noise = [config.seed, 1, session, b] + ([] if config.common_random_numbers else [a + 1])
                outcome = _answer(world, request, page, config.weights, np.random.default_rng(noise))
                for metric, value in outcome.items():
                    if metric in METRICS:
                        result.values[arm.name][metric][lo:hi, session] = value
                result.pages[arm.name][lo:hi, session] = page
                taken = outcome["feedback"][arm.consumed_label] == 1
                result.consumed[arm.name][lo:hi, session] = taken
                rows, cols = np.nonzero(taken)
                labels = {t: outcome["feedback"][t][rows, cols] for t in TASKS}
                consumed[a].append(_Events(rows + lo, page[rows, cols].astype(np.int64), labels, batch_time[rows]))
            bar.update(1)
        if config.closed_loop:
            for history, events in zip(histories, consumed):
                _record(history, events)
    bar.close()
    result.seconds = time.perf_counter() - started
    return result


def _serve(arm: Arm, request: Request, k: int) -> tuple[np.ndarray, int]:
    """The page [B, k] of `arm` and how many of its first-choice candidates were history items."""
    page, removed = first_valid(arm.policy.ranked(request, k), k, request.history, arm.link.catalogue)
    for _ in range(_REFILLS if arm.policy.stochastic else 0):
        short = np.nonzero((page < 0).any(axis=1))[0]
        if short.size == 0:
            break
        sub = request.select(short)
        more = arm.policy.ranked(sub, k)
        page[short] = first_valid(np.concatenate([page[short], more], axis=1), k, sub.history, arm.link.catalogue)[0]
    return page, int(removed.sum())


def _answer(
    world: World, request: Request, page: np.ndarray, weights: dict[str, float], rng: np.random.Generator
) -> dict[str, Any]:
    """Per-page metrics [B] of `page` [B, K] (world ids, -1 empty) and the sampled feedback [B, K]."""
    shown = page >= 0
    items = np.where(shown, page, 0)
    expected = world.expected_engagement(request.users, items, request.scenarios, request.time)
    feedback = world.feedback(request.users, items, request.scenarios, request.time, rng)
    feedback = {task: value * shown for task, value in feedback.items()}
    out: dict[str, Any] = {"feedback": feedback, "filled": shown.sum(axis=1)}
    page_value = np.zeros(len(page))
    for task, plural in PLURAL.items():
        out[plural] = feedback[task].sum(axis=1)
        out[f"expected_{plural}"] = (expected[task] * shown).sum(axis=1)
        page_value += weights.get(task, 0.0) * out[f"expected_{plural}"]
    out["page_value"] = page_value
    topics = np.sort(np.where(shown, world.item_topic[items], -1), axis=1)
    new = np.ones_like(shown)
    new[:, 1:] = topics[:, 1:] != topics[:, :-1]
    out["topics"] = (new & (topics >= 0)).sum(axis=1)
    return out


@dataclass
class _Events:
    """Consumed slots of one batch: global user rows [E], world items [E], labels [E] each, times [E]."""

    rows: np.ndarray
    items: np.ndarray
    labels: dict[str, np.ndarray]
    time: np.ndarray


def _record(history: History, parts: list[_Events]) -> None:
    """Append a session's consumed items to a History (every feature it keeps; labels the world does
    not produce, e.g. a positive-only log's `view`, count as 1)."""
    if not parts:
        return
    rows = np.concatenate([p.rows for p in parts])
    items = np.concatenate([p.items for p in parts])
    labels = {t: np.concatenate([p.labels[t] for p in parts]) for t in TASKS}
    stamps = np.concatenate([p.time for p in parts])
    features = {name: labels.get(name, np.ones(len(rows), dtype=np.int8)) for name in history.features}
    if "timestamp" in history.features:
        features["timestamp"] = stamps
    history.append(rows, items, features)
