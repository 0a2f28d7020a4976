"""Intervals over users: the summary of a SimulationResult.

The unit is the user: each user's mean over their S sessions is one observation (a user's sessions
share their taste and history, so pages are not independent; averaging per user first is the
user-clustered estimate, and every user has the same S pages, so it equals the mean per page).
Intervals are Student-t intervals of those U means (CLT over users). An A/B difference is paired
per user: d_u = mean_B,u - mean_A,u, with the same users, times, scenarios and (with common random
numbers) the same feedback draws in both arms, so its interval is much tighter than the unpaired
one, which is reported beside it for comparison.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from recstack.simulate.engine import METRICS, SimulationResult

INTERVAL_METHOD = (
    "Student-t interval over users (CLT): each user's mean over their sessions is one observation; "
    "A/B differences are paired per user (same users, times, scenarios and feedback draws)"
)


def interval(values: np.ndarray, confidence: float) -> dict[str, float]:
    """Mean of `values` [U] with its t-interval: mean, low, high, half_width, std, n."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    half = _quantile(confidence, n) * std / math.sqrt(n) if n > 1 else math.inf
    return {"mean": mean, "low": mean - half, "high": mean + half, "half_width": half, "std": std, "n": n}


def paired(base: np.ndarray, other: np.ndarray, confidence: float) -> dict[str, float]:
    """Paired difference other - base over users [U] with its t-interval, the relative difference
    (difference / base mean), a two-sided p-value, and the half-width an unpaired test would have."""
    base, other = np.asarray(base, dtype=np.float64), np.asarray(other, dtype=np.float64)
    n = len(base)
    diff = interval(other - base, confidence)
    se = diff["std"] / math.sqrt(n)
    p_value = 1.0 if se == 0 else float(2 * stats.t.sf(abs(diff["mean"]) / se, n - 1))
    if se == 0 and diff["mean"] != 0:
        p_value = 0.0
    unpaired = _quantile(confidence, n) * math.sqrt((base.var(ddof=1) + other.var(ddof=1)) / n)
    base_mean = float(base.mean())
    return {
        "difference": diff["mean"],
        "low": diff["low"],
        "high": diff["high"],
        "half_width": diff["half_width"],
        "relative": diff["mean"] / base_mean if base_mean else math.nan,
        "p_value": p_value,
        "excludes_zero": bool(diff["low"] > 0 or diff["high"] < 0),
        "unpaired_half_width": float(unpaired),
    }


def summarise(result: SimulationResult) -> dict[str, Any]:
    """JSON-ready summary: per arm and metric the mean per page with its interval, paired differences of
    every arm against the first, per-session means, catalogue coverage and the oracle gap closed."""
    confidence = result.config.confidence
    per_user = {arm: {m: v.mean(axis=1) for m, v in values.items()} for arm, values in result.values.items()}
    arms = list(per_user)
    base = arms[0]
    summary: dict[str, Any] = {
        "arms": {arm: {m: interval(per_user[arm][m], confidence) for m in METRICS} for arm in arms},
        "comparisons": {
            f"{arm} - {base}": {
                "base": base,
                "other": arm,
                "metrics": {m: paired(per_user[base][m], per_user[arm][m], confidence) for m in METRICS},
            }
            for arm in arms[1:]
        },
        "sessions": {
            arm: {
                m: [interval(result.values[arm][m][:, s], confidence) for s in range(result.config.sessions)]
                for m in ("page_value", "clicks", "topics")
            }
            for arm in arms
        },
        "coverage": {},
        "interval_method": INTERVAL_METHOD,
    }
    for info in result.arms:
        shown = result.pages[info["name"]]
        summary["coverage"][info["name"]] = len(np.unique(shown[shown >= 0])) / max(info["catalogue"], 1)
    kinds = {info["kind"]: info["name"] for info in result.arms}
    if "random" in kinds and "oracle" in kinds:
        low = summary["arms"][kinds["random"]]["page_value"]["mean"]
        high = summary["arms"][kinds["oracle"]]["page_value"]["mean"]
        summary["oracle_gap_closed"] = {
            info["name"]: (summary["arms"][info["name"]]["page_value"]["mean"] - low) / (high - low)
            for info in result.arms
            if high != low
        }
    return summary


def _quantile(confidence: float, n: int) -> float:
    return float(stats.t.ppf(0.5 + confidence / 2, max(n - 1, 1)))
