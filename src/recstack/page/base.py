"""Page arrangers: the cascade's last stage, one registry ("page") behind one call.

    arranger = build_page({"name": "pagellm", "k": 10})   # fused (default) | ranker_topk | mmr | pagellm
    arranger.fit(inputs)                  # PageInputs of the valid split (after the ranker is fitted)
    page = arranger.arrange(inputs, k)    # Page [B, k']: the page first, then the rest of the candidates

An arranger sees, per request, the merged candidates, the ranker's task probabilities for each of them
and the user's history (PageInputs); `arrange` returns every real candidate once, the page's k items
first, so a caller that needs more than k (the simulator refilling a page) can read on. A saved
arranger is `run/page/config.json` (+ its weights); arrangers without learned weights keep their whole
state in the run config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recstack.config import to_dict
from recstack.data.batch import Candidates, Page, UserBatch
from recstack.data.dataset import Dataset
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError
from recstack.registry import add_plugin_modules, build, load_saved_config
from recstack.train.checkpoint import write_json

add_plugin_modules("page", ["recstack.page.fused", "recstack.page.mmr", "recstack.page.pagellm.arranger"])


@dataclass
class PageInputs:
    """What a page is arranged from, for B requests.

    batch:      the users and their histories.
    candidates: merged candidates [B, K] (with channel_scores).
    scores:     the ranker's task probabilities, {task: [B, K]}; empty when the cascade has no ranker.
    targets:    held-out items per row (Jagged, B rows) when fitting; None at serving time.
    dataset:    the retrieval view of the training data (arrangers that learn item representations
                read its train rows); None at serving time.
    """

    batch: UserBatch
    candidates: Candidates
    scores: dict[str, torch.Tensor]
    targets: Jagged | None = None
    dataset: Dataset | None = None


class PageArranger:
    """Base class: subclasses set `name` and keep a dataclass config with a `k` field in `self.config`."""

    name: str = "page"
    config: Any = None
    learned: bool = False
    """True when `fit` learns weights that live in the run's page/ folder (not only in the config)"""

    def fit(self, inputs: PageInputs) -> dict[str, Any]:
        """Learn from held-out targets; returns a JSON report. Default: nothing to learn."""
        return {}

    def arrange(self, inputs: PageInputs, k: int) -> Page:
        raise NotImplementedError

    # ---- persistence (learned arrangers only) ---------------------------------------------------
    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"name": self.name, "config": to_dict(self.config)}
        meta.update(self.save_state(path))
        write_json(path / "config.json", meta)

    def save_state(self, path: Path) -> dict[str, Any]:
        return {}

    def load_state(self, path: Path, meta: dict[str, Any]) -> None:
        return None

    @staticmethod
    def load(path: str | Path) -> PageArranger:
        entry, config, meta = load_saved_config(path, "page")
        arranger: PageArranger = entry.cls(config)
        arranger.load_state(Path(path), meta)
        return arranger


def build_page(spec: dict[str, Any]) -> PageArranger:
    """`page:` of a run config; no `name` means the fused page (configs written before the registry)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"page: expected a mapping like {{name: fused, k: 10}}, got {spec!r}")
    arranger: PageArranger = build("page", {"name": "fused", **spec}, where="page")
    return arranger


def page_order(candidates: Candidates, order_scores: torch.Tensor, first: torch.Tensor | None = None) -> Page:
    """Every candidate ordered by `order_scores` [B, K] (best first, empty slots last); with `first`
    [B, k] (candidate columns, -1 = none) those columns lead, in that order, and the rest follow.
    Page.scores are the order scores (the lead columns get +inf, they are the arranger's choice)."""
    order_scores = order_scores.masked_fill(candidates.items == 0, float("-inf"))
    order = torch.sort(order_scores, dim=1, descending=True, stable=True).indices
    shown = order_scores.gather(1, order)
    if first is not None:
        # Lead columns take slots 0..k-1 in their given order; a stable sort on the lead rank keeps
        # everything else in score order behind them.
        lead_rank = torch.full_like(candidates.items, first.shape[1])
        rows = torch.arange(first.shape[0]).unsqueeze(1).expand_as(first)
        keep = first >= 0
        lead_rank[rows[keep], first[keep]] = torch.arange(first.shape[1]).expand_as(first)[keep]
        then = torch.sort(lead_rank.gather(1, order), dim=1, stable=True).indices
        order = order.gather(1, then)
        shown = torch.where(lead_rank.gather(1, order) < first.shape[1], float("inf"), order_scores.gather(1, order))
    return Page(
        items=candidates.items.gather(1, order),
        scores=shown,
        channels=candidates.channels.gather(1, order),
        channel_names=list(candidates.channel_names),
    )


def minmax_rows(scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """scores [B, K] scaled to [0, 1] within each row over the `real` [B, K] slots (0 elsewhere)."""
    low = scores.masked_fill(~real, float("inf")).min(1, keepdim=True).values
    high = scores.masked_fill(~real, float("-inf")).max(1, keepdim=True).values
    return ((scores - low) / (high - low).clamp(min=1e-12)).masked_fill(~real, 0.0)


def distinct_per_row(values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """[B] number of distinct values [B, k] (>= 0) among the `present` [B, k] slots."""
    ordered = torch.sort(torch.where(present, values, -1), dim=1).values
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    return (new & (ordered >= 0)).sum(1)


def contains(rows: Jagged, items: torch.Tensor) -> torch.Tensor:
    """[B, K] True where items [B, K] (> 0) occurs in row b of `rows` (a Jagged with B rows)."""
    if rows.values.numel() == 0 or items.numel() == 0:
        return torch.zeros_like(items, dtype=torch.bool)
    width = int(max(int(items.max()), int(rows.values.max()))) + 1
    present = torch.unique(rows.row_ids() * width + rows.values.long())
    keys = torch.arange(items.shape[0]).unsqueeze(1) * width + items.long()
    slot = torch.searchsorted(present, keys).clamp(max=present.numel() - 1)
    return (present[slot] == keys) & (items > 0)


def history_mask(batch: UserBatch, items: torch.Tensor) -> torch.Tensor:
    """[B, K] True where items [B, K] is in the row's history (pages never repeat what the user consumed)."""
    return contains(batch.history, items)
