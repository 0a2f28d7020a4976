"""Scaling laws: a metric against log compute, Kunlun's scaling efficiency, and the plot.

    fit = fit_scaling(flops, auc)                      # auc ≈ intercept + slope · log10(flops)
    fit.slope, fit.intercept, fit.r2, fit.predict(2e6)
    scaling_efficiency(fit_model, fit_baseline)        # η / η_baseline (Kunlun, METHODS.md §2.9)
    png = plot_scaling({"tokenmixer_large": (flops, auc, fit)}, "like/auc")   # bytes, for reports
    write_scaling_plot(path, {...}, "like/auc")                                # the same PNG, atomically

Kunlun writes the law as `NE(C) = NE_0 − η·log(C/C_0)`: a straight line in log compute whose slope
η is the metric gained per unit of log compute, and defines *scaling efficiency* = η / η_baseline,
the ratio of two models' slopes measured the same way (Kunlun reports 2× vs InterFormer). Here the
fit is ordinary least squares of the metric on log10(FLOPs per sample) (η per decade of compute;
the efficiency ratio does not depend on the log base). For a lower-is-better metric (NE, logloss)
η = −slope, for a higher-is-better one (AUC, GAUC) η = slope, so η > 0 means "more compute helps".
`reference_flops` C_0 is the smallest compute of the sweep; `metric_at_reference` is NE_0.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recstack.errors import ConfigError


@dataclass(frozen=True)
class ScalingFit:
    """metric ≈ intercept + slope · log10(flops), from `points` (flops, metric) pairs."""

    slope: float
    intercept: float
    r2: float
    points: int
    higher_is_better: bool
    reference_flops: float

    @property
    def eta(self) -> float:
        """Kunlun's η: metric improvement per decade of compute (positive = scaling helps)."""
        return self.slope if self.higher_is_better else -self.slope

    @property
    def metric_at_reference(self) -> float:
        """NE_0 / AUC_0: the fitted metric at `reference_flops` (C_0)."""
        return float(self.predict(self.reference_flops))

    def predict(self, flops: float | Sequence[float] | np.ndarray) -> float | np.ndarray:
        value = self.intercept + self.slope * np.log10(np.asarray(flops, dtype=np.float64))
        return float(value) if np.ndim(value) == 0 else value

    def to_dict(self) -> dict[str, float | int | bool]:
        return {
            "slope": self.slope,
            "intercept": self.intercept,
            "r2": self.r2,
            "points": self.points,
            "eta": self.eta,
            "higher_is_better": self.higher_is_better,
            "reference_flops": self.reference_flops,
            "metric_at_reference": self.metric_at_reference,
        }


def fit_scaling(
    flops: Sequence[float] | np.ndarray, metric: Sequence[float] | np.ndarray, higher_is_better: bool = True
) -> ScalingFit:
    """Least squares of `metric` [P] on log10(`flops` [P]) (P >= 2 points, flops > 0, not all equal)."""
    x = np.asarray(flops, dtype=np.float64).ravel()
    y = np.asarray(metric, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ConfigError(f"fit_scaling: {x.size} FLOP values but {y.size} metric values")
    if x.size < 2:
        raise ConfigError(f"fit_scaling: needs at least 2 (flops, metric) points, got {x.size}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()) or (x <= 0).any():
        raise ConfigError("fit_scaling: flops must be finite and > 0 and metrics finite")
    log_x = np.log10(x)
    if np.ptp(log_x) == 0:
        raise ConfigError("fit_scaling: every point has the same FLOPs; a slope needs at least two sizes")
    design = np.stack([np.ones_like(log_x), log_x], axis=1)  # [P, 2]
    (intercept, slope), *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - (intercept + slope * log_x)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / total if total > 0 else 1.0
    return ScalingFit(float(slope), float(intercept), r2, int(x.size), higher_is_better, float(x.min()))


def scaling_efficiency(fit: ScalingFit, baseline: ScalingFit) -> float:
    """Kunlun's scaling efficiency η / η_baseline (both fits of the same metric, same direction)."""
    if fit.higher_is_better != baseline.higher_is_better:
        raise ConfigError("scaling_efficiency: the two fits use metrics of opposite direction")
    if baseline.eta == 0:
        raise ConfigError("scaling_efficiency: the baseline's η is 0 (no scaling), the ratio is undefined")
    return fit.eta / baseline.eta


Series = dict[str, tuple[Sequence[float], Sequence[float], "ScalingFit | None"]]


def plot_scaling(series: Series, metric: str, title: str | None = None) -> bytes:
    """PNG bytes: per model, its (flops, metric) points and fitted line on a log-x axis.
    series: label -> (flops [P], metric [P], fit or None)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not series:
        raise ConfigError("plot_scaling: no series to plot")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, (flops, values, fit) in series.items():
        x = np.asarray(flops, dtype=np.float64)
        line = ax.plot(x, values, "o", label=label)[0]
        if fit is not None:
            grid = np.geomspace(x.min(), x.max(), 50)
            ax.plot(
                grid,
                fit.predict(grid),
                "-",
                color=line.get_color(),
                alpha=0.8,
                label=f"{label}: slope {fit.slope:+.4f}/decade, R² {fit.r2:.2f}",
            )
    ax.set(xscale="log", xlabel="training FLOPs per sample", ylabel=metric, title=title or f"{metric} vs compute")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def write_scaling_plot(path: str | Path, series: Series, metric: str, title: str | None = None) -> Path:
    """Write `plot_scaling`'s PNG to `path` atomically (temp name in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = plot_scaling(series, metric, title)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_bytes(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path
