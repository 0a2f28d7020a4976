"""Run reports: Markdown + a self-contained HTML page with matplotlib plots.

Plots: training curves of every neural component, recall@K vs K per retrieval channel, and the
channel-overlap matrix of the merged candidates.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def plot_training_curves(histories: dict[str, list[dict]]) -> bytes | None:
    """histories: component -> TrainResult.history ({"epoch", "train": {"loss"}, "metrics": {...}} per epoch)."""
    histories = {k: v for k, v in histories.items() if v}
    if not histories:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, rows in histories.items():
        epochs = [r.get("epoch", i) + 1 for i, r in enumerate(rows)]
        losses = [(r.get("train") or {}).get("loss") for r in rows]
        if any(v is not None for v in losses):
            axes[0].plot(epochs, losses, marker=".", label=name)
        metric_keys = [k for r in rows for k in (r.get("metrics") or {})]
        for key in list(dict.fromkeys(metric_keys))[:2]:
            points = [(e, (r.get("metrics") or {}).get(key)) for e, r in zip(epochs, rows)]
            points = [(e, v) for e, v in points if v is not None]
            if points:
                axes[1].plot(*zip(*points), marker=".", label=f"{name} {key}")
    axes[0].set(title="training loss", xlabel="epoch")
    axes[1].set(title="validation metric", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _png(fig)


def plot_recall_vs_k(retrieval: dict[str, Any]) -> bytes | None:
    ks = sorted(int(key.split("@")[1]) for key in retrieval if key.startswith("recall@"))
    if not ks:
        return None
    channels = list(retrieval[f"recall@{ks[0]}"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for channel in channels:
        style: dict[str, Any] = dict(linewidth=2.5, color="black") if channel == "merged" else {}
        ax.plot(ks, [retrieval[f"recall@{k}"][channel] for k in ks], marker="o", label=channel, **style)
    ax.set(xscale="log", xlabel="K", ylabel="recall@K", title="retrieval recall vs K")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_overlap(overlap: dict[str, dict[str, float]]) -> bytes | None:
    names = list(overlap)
    if len(names) < 2:
        return None
    matrix = [[overlap[a][b] for b in names] for a in names]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.0 * len(names) + 1.5))
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{matrix[i][j]:.2f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_title("share of row channel's candidates also found by column channel")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _png(fig)


def metrics_markdown(split: str, metrics: dict[str, Any]) -> list[str]:
    lines = [f"### {split} ({metrics['users']:,} users)", ""]
    page = metrics.get("page", {})
    if page:
        lines += ["| page metric | value |", "|---|---|"] + [f"| {k} | {v:.4f} |" for k, v in page.items()] + [""]
    retrieval = metrics.get("retrieval", {})
    ks = sorted(int(key.split("@")[1]) for key in retrieval if key.startswith("recall@"))
    if ks:
        channels = list(retrieval[f"recall@{ks[0]}"])
        lines += [
            "| channel | " + " | ".join(f"recall@{k}" for k in ks) + f" | exclusive@{ks[-1]} |",
            "|---|" + "---|" * (len(ks) + 1),
        ]
        for channel in channels:
            exclusive = retrieval[f"exclusive@{ks[-1]}"].get(channel)
            lines.append(
                f"| {channel} | "
                + " | ".join(f"{retrieval[f'recall@{k}'][channel]:.4f}" for k in ks)
                + f" | {'' if exclusive is None else f'{exclusive:.4f}'} |"
            )
        lines.append("")
    ranker = metrics.get("ranker", {})
    if ranker:
        lines += ["| ranker metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in ranker.items() if isinstance(v, (int, float))] + [""]
    return lines


def write_report(
    run_dir: str | Path,
    title: str,
    summary: dict[str, Any],
    metrics: dict[str, dict[str, Any]],
    histories: dict[str, list[dict]],
) -> tuple[Path, Path]:
    """Write report.md (+ PNGs) and a self-contained report.html into run_dir."""
    run_dir = Path(run_dir)
    plots: dict[str, bytes] = {}
    last_split = list(metrics)[-1]
    for name, png in (
        ("training_curves", plot_training_curves(histories)),
        ("recall_vs_k", plot_recall_vs_k(metrics[last_split].get("retrieval", {}))),
        ("channel_overlap", plot_overlap(metrics[last_split].get("channel_overlap", {}))),
    ):
        if png is not None:
            plots[name] = png
    md = [f"# {title}", ""] + [f"- **{k}**: {v}" for k, v in summary.items()] + [""]
    for split, values in metrics.items():
        md += metrics_markdown(split, values)
    for name in plots:
        md += [f"![{name}]({name}.png)", ""]
    body = "\n".join(md)
    plots_dir = run_dir
    plots_dir.mkdir(parents=True, exist_ok=True)
    for name, png in plots.items():
        _atomic_write(plots_dir / f"{name}.png", png)
    _atomic_write(run_dir / "report.md", body.encode())
    _atomic_write(run_dir / "report.html", _html(title, md, plots).encode())
    return run_dir / "report.md", run_dir / "report.html"


def _html(title: str, md_lines: list[str], plots: dict[str, bytes]) -> str:
    """Tiny Markdown-table-aware renderer: headings, bullets, tables, images inlined as base64."""
    out = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}td:first-child{text-align:left}img{max-width:100%}</style></head><body>",
    ]
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, rows = table[0], table[2:]
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>")
            out.extend(["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows])
            out.append("</table>")
            table.clear()

    for line in md_lines:
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip("|").split("|")])
            continue
        flush()
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("### "):
            out.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.startswith("- "):
            out.append(f"<div>• {html.escape(line[2:].replace('**', ''))}</div>")
        elif line.startswith("!["):
            name = line[2 : line.index("]")]
            data = base64.b64encode(plots[name]).decode()
            out.append(f"<h3>{name.replace('_', ' ')}</h3><img src='data:image/png;base64,{data}'>")
    flush()
    out.append("</body></html>")
    return "\n".join(out)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
