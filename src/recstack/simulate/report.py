"""Write a simulation's results: results.json, report.md, a self-contained report.html and the plots.

The folder is assembled in a temporary sibling and renamed into place, so an interrupted run leaves
either the previous results or the new ones, never a mix.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from recstack.eval.report import _html, _png

PANELS = (
    ("page_value", "page value (expected weighted engagement)"),
    ("expected_clicks", "expected clicks per page"),
    ("clicks", "sampled clicks per page"),
    ("expected_purchases", "expected purchases per page"),
    ("purchases", "sampled purchases per page"),
    ("topics", "distinct topics per page"),
)
TABLE_METRICS = (
    "clicks",
    "likes",
    "long_views",
    "purchases",
    "expected_clicks",
    "expected_purchases",
    "page_value",
    "topics",
)


def plot_arms(summary: dict[str, Any], confidence: float) -> bytes:
    """One panel per metric: every arm's mean per page with its interval."""
    arms = list(summary["arms"])
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (metric, title) in zip(axes.ravel(), PANELS):
        means = [summary["arms"][a][metric]["mean"] for a in arms]
        halves = [summary["arms"][a][metric]["half_width"] for a in arms]
        ax.errorbar(range(len(arms)), means, yerr=halves, fmt="o", capsize=4, color="tab:blue")
        ax.set_xticks(range(len(arms)), arms, rotation=20, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(f"per-page metrics, {confidence:.0%} intervals over users")
    fig.tight_layout()
    return _png(fig)


def plot_sessions(summary: dict[str, Any]) -> bytes:
    """Page value by session index (simulated time advances), one line per arm with its band."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for arm, values in summary["sessions"].items():
        rows = values["page_value"]
        x = range(1, len(rows) + 1)
        ax.plot(x, [r["mean"] for r in rows], marker="o", label=arm)
        ax.fill_between(x, [r["low"] for r in rows], [r["high"] for r in rows], alpha=0.2)
    ax.set_xticks(range(1, len(next(iter(summary["sessions"].values()))["page_value"]) + 1))
    ax.set(xlabel="session (simulated time advances)", ylabel="page value", title="page value per session")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_differences(summary: dict[str, Any], confidence: float) -> bytes | None:
    """Forest plot: each comparison's paired difference in % of the base arm's mean, with its interval."""
    comparisons = summary["comparisons"]
    if not comparisons:
        return None
    metrics = [m for m, _ in PANELS]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(metrics) * len(comparisons) + 1.5))
    y, labels = 0, []
    for c, (name, comparison) in enumerate(comparisons.items()):
        base = summary["arms"][comparison["base"]]
        for metric in metrics:
            d = comparison["metrics"][metric]
            scale = 100.0 / base[metric]["mean"] if base[metric]["mean"] else 0.0
            ax.errorbar(d["difference"] * scale, y, xerr=d["half_width"] * scale, fmt="o", capsize=3, color=f"C{c}")
            labels.append(f"{name}: {metric}")
            y += 1
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="difference, % of the base arm's mean", title=f"paired differences, {confidence:.0%} intervals")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def markdown(title: str, facts: dict[str, Any], summary: dict[str, Any], confidence: float) -> list[str]:
    lines = [f"# {title}", ""] + [f"- **{k}**: {v}" for k, v in facts.items()] + [""]
    level = f"{confidence:.0%}"
    lines += [f"### per page: mean [{level} interval]", ""]
    lines += [
        "| arm | " + " | ".join(TABLE_METRICS) + " | items shown / catalogue |",
        "|---|" + "---|" * (len(TABLE_METRICS) + 1),
    ]
    for arm, values in summary["arms"].items():
        cells = [f"{values[m]['mean']:.4f} [{values[m]['low']:.4f}, {values[m]['high']:.4f}]" for m in TABLE_METRICS]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {summary['coverage'][arm]:.3f} |")
    lines.append("")
    for name, comparison in summary["comparisons"].items():
        lines += [f"### {name} (paired over users)", ""]
        lines += [
            f"| metric | difference | {level} interval | relative | p | unpaired half-width |",
            "|---|---|---|---|---|---|",
        ]
        for metric in TABLE_METRICS:
            d = comparison["metrics"][metric]
            lines.append(
                f"| {metric} | {d['difference']:+.4f} | [{d['low']:+.4f}, {d['high']:+.4f}] | "
                f"{d['relative']:+.2%} | {d['p_value']:.3g} | {d['unpaired_half_width']:.4f} |"
            )
        lines.append("")
    if "oracle_gap_closed" in summary:
        lines += ["### share of the random → oracle page-value gap closed", ""]
        lines += ["| arm | share |", "|---|---|"]
        lines += [f"| {arm} | {share:.3f} |" for arm, share in summary["oracle_gap_closed"].items()] + [""]
    return lines


def write_results(
    out: str | Path, title: str, facts: dict[str, Any], summary: dict[str, Any], confidence: float
) -> Path:
    """Write results.json, report.md, report.html and the PNGs into folder `out` (replaced atomically)."""
    out = Path(out)
    plots = {"arms": plot_arms(summary, confidence), "sessions": plot_sessions(summary)}
    differences = plot_differences(summary, confidence)
    if differences is not None:
        plots["differences"] = differences
    lines = markdown(title, facts, summary, confidence)
    lines += [f"![{name}]({name}.png)" for name in plots] + [""]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        text = json.dumps(_finite({**facts, **summary}), indent=1, default=_plain, allow_nan=False)
        (tmp / "results.json").write_text(text)
        (tmp / "report.md").write_text("\n".join(lines))
        (tmp / "report.html").write_text(_html(title, lines, plots))
        for name, png in plots.items():
            (tmp / f"{name}.png").write_bytes(png)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers for json."""
    return value.item() if hasattr(value, "item") else str(value)


def _finite(value: Any) -> Any:
    """NaN / inf (a relative difference over a zero mean) -> None: results.json stays strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
