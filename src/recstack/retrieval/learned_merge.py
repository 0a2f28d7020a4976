"""Learned merge: channel quotas and the merged order chosen to maximise recall on held-out targets.

Every channel offers its top `pool` items. An item of the union is described by the rank bucket at
which each channel found it (log-spaced, plus "not found by this channel"), and a logistic regression
on those one-hot buckets, fitted on validation users' candidates with label "is a held-out target",
predicts P(target | ranks). The merged list is the union sorted by that probability and cut to
`k_total`: sorting by a calibrated hit probability maximises the expected hits at every cut-off, so
the quotas are implicit (a channel gets as many slots as its items' probabilities earn; the report
gives the effective quota per channel).

Guarantee (by construction): after fitting, the validation recall@k_total of the learned order is
compared with each channel's own top k_total; when a channel is at least as good, the merge puts that
channel's top k_total first and the learned order after it, so on the data it was tuned on the merged
list never recalls less than the best channel.

The union, its channel tags and per-channel rank evidence come from `merge_candidates` (quotas =
pool), so the output is a Candidates that the ranker and the page read like a rank merge's.
Vectorised over the batch: Python loops run over channels and the optimiser's steps only.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recstack.config import from_dict, to_dict
from recstack.data.batch import Candidates
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError, DataError
from recstack.retrieval.merge import _hit_columns, channel_report, merge_candidates
from recstack.train.checkpoint import load_tensors, save_tensors, write_json

TIE = 1e-12
"""a single channel within this much of the learned order's recall counts as at least as good"""


@dataclass
class LearnedMergeConfig:
    k_total: int = 500
    """length of the merged list"""
    pool: int | None = None
    """items each channel offers (None = k_total); at least k_total, so that any channel's whole top
    k_total is in the union and the fallback can reproduce it"""
    buckets_per_octave: int = 2
    """rank bucket = floor(buckets_per_octave * log2(rank + 1)): fine at the top, coarse deep down"""
    l2: float = 1e-3
    """L2 penalty on the bucket weights (the loss is per unit of target weight)"""
    max_steps: int = 200
    """LBFGS iterations"""

    def __post_init__(self) -> None:
        if self.k_total < 1:
            raise ConfigError(f"merge.k_total must be >= 1, got {self.k_total}")
        if self.pool is not None and self.pool < self.k_total:
            raise ConfigError(
                f"merge.pool ({self.pool}) must be >= k_total ({self.k_total}): the learned merge falls back "
                "to a channel's whole top k_total, which must be in the pool"
            )
        if self.buckets_per_octave < 1:
            raise ConfigError(f"merge buckets_per_octave must be >= 1, got {self.buckets_per_octave}")

    @property
    def offered(self) -> int:
        return self.pool if self.pool is not None else self.k_total

    @property
    def found_buckets(self) -> int:
        """Buckets for ranks 0 .. offered - 1; index found_buckets is "not found"."""
        return math.floor(self.buckets_per_octave * math.log2(self.offered)) + 1


class LearnedMerge:
    """Fit with `fit(channel_candidates, targets)`, then `merge(channel_candidates)` -> Candidates [B, k_total]."""

    def __init__(self, config: LearnedMergeConfig) -> None:
        self.config = config
        self.inputs: list[str] = []
        """the channel keys it was fitted on, in order"""
        self.channel_names: list[str] = []
        """the evidence columns (channel names) the weight rows belong to"""
        self.weights: torch.Tensor | None = None
        """[C, found_buckets + 1] float64 logit contribution of channel c's rank bucket (last: not found)"""
        self.bias = 0.0
        self.lead: str | None = None
        """the channel whose top k_total leads the merged list (the guarantee's fallback), or None"""
        self.report: dict[str, Any] = {}

    # ---- fitting ----------------------------------------------------------------------------------
    def fit(
        self, channel_candidates: dict[str, Candidates], targets: Jagged, ks: list[int] | tuple[int, ...] = ()
    ) -> dict[str, Any]:
        """Learn the bucket weights on candidates of held-out users (targets: one Jagged row per batch row),
        choose learned order or fallback, and return the fit report (also kept in `self.report`)."""
        started = time.perf_counter()
        if targets.num_rows != next(iter(channel_candidates.values())).items.shape[0]:
            raise DataError("learned merge: targets and candidates have different numbers of rows")
        self.inputs, self.lead = list(channel_candidates), None
        union = self._union(channel_candidates)
        self.channel_names = list(union.channel_names)
        buckets = self._buckets(union)  # [B, U, C]
        columns = _hit_columns(union.items, targets)
        hit = torch.zeros(union.items.shape, dtype=torch.float64)
        found = columns >= 0
        hit[targets.row_ids()[found], columns[found]] = 1.0
        # Each user weighs 1 / (its number of targets), as in recall; users without targets weigh nothing.
        lengths = targets.lengths().double()
        row_weight = torch.where(lengths > 0, 1.0 / lengths.clamp(min=1), 0.0).unsqueeze(1).expand_as(hit)
        real = union.items > 0
        # Pairs with one bucket pattern share one logit: fitting on weighted pattern counts (ML-100K:
        # 17K patterns for 0.5M pairs) keeps LBFGS fast and its result independent of the row order.
        patterns, inverse = torch.unique(buckets[real], dim=0, return_inverse=True)
        positives = torch.zeros(patterns.shape[0], dtype=torch.float64).index_add_(0, inverse, (hit * row_weight)[real])
        totals = torch.zeros(patterns.shape[0], dtype=torch.float64).index_add_(0, inverse, row_weight[real])
        self._fit_logistic(patterns, positives, totals)

        ks = sorted({k for k in ks if k <= self.config.k_total} | {self.config.k_total})
        learned = self.merge(channel_candidates)
        scores = channel_report(channel_candidates, learned, targets, ks)
        k_total = f"recall@{self.config.k_total}"
        best = max(self.inputs, key=lambda name: scores[k_total][name])  # the first one on ties
        if scores[k_total][best] >= scores[k_total]["merged"] - TIE:
            self.lead = best
        merged = self.merge(channel_candidates) if self.lead is not None else learned
        final = channel_report({}, merged, targets, ks)
        rank_merge = channel_report({}, merge_candidates(channel_candidates, None, self.config.k_total), targets, ks)
        in_top = merged.items > 0
        self.report = {
            "method": "learned",
            "order": f"{self.lead} first, then learned" if self.lead is not None else "learned",
            "fallback": self.lead,
            "k_total": self.config.k_total,
            "pool": self.config.offered,
            "users": scores["users"],
            "patterns": int(patterns.shape[0]),
            "effective_quota": {
                name: float((((merged.channels >> bit) & 1).bool() & in_top).sum(1).double().mean())
                for bit, name in enumerate(merged.channel_names)
            },
            **{
                f"valid_recall@{k}": {
                    "merged": final[f"recall@{k}"]["merged"],
                    "learned": scores[f"recall@{k}"]["merged"],
                    "rank_merge": rank_merge[f"recall@{k}"]["merged"],
                    **{name: scores[f"recall@{k}"][name] for name in self.inputs},
                }
                for k in ks
            },
            "fit_seconds": round(time.perf_counter() - started, 3),
        }
        return self.report

    def _fit_logistic(self, patterns: torch.Tensor, positives: torch.Tensor, totals: torch.Tensor) -> None:
        """Binomial logistic regression on bucket patterns [P, C]: positives / totals [P] (weighted counts)."""
        channels, width = patterns.shape[1], self.config.found_buckets + 1
        weights = torch.zeros(channels, width, dtype=torch.float64, requires_grad=True)
        base_rate = float(positives.sum() / totals.sum().clamp(min=1e-12))
        # Start at the base rate so that a channel set with no hits at all stays at zero weights.
        bias_start = math.log(max(base_rate, 1e-9) / max(1 - base_rate, 1e-9))
        bias = torch.tensor(bias_start, dtype=torch.float64, requires_grad=True)
        scale = float(positives.sum())
        if scale > 0:
            picks = torch.arange(channels).unsqueeze(0)
            optimiser = torch.optim.LBFGS(
                [weights, bias],
                lr=1.0,
                max_iter=self.config.max_steps,
                tolerance_grad=1e-10,
                tolerance_change=1e-14,
                history_size=20,
                line_search_fn="strong_wolfe",
            )

            def closure() -> torch.Tensor:
                optimiser.zero_grad()
                logits = bias + weights[picks, patterns].sum(1)
                nll = positives * torch.nn.functional.softplus(-logits) + (totals - positives) * (
                    torch.nn.functional.softplus(logits)
                )
                loss = nll.sum() / scale + self.config.l2 * weights.square().sum()
                loss.backward()
                return loss

            optimiser.step(closure)
        self.weights = weights.detach()
        self.bias = float(bias.detach()) if scale > 0 else bias_start

    # ---- merging ----------------------------------------------------------------------------------
    def merge(self, channel_candidates: dict[str, Candidates]) -> Candidates:
        """Per-channel Candidates (each [B, >= pool] best first) -> merged Candidates [B, k_total].

        scores: P(target) from the fitted model; with a fallback channel, its top k_total items come
        first with scores 1 + 1 / (rank + 1) (above any probability, so rows stay sorted best first).
        channels / channel_names / channel_scores as `merge_candidates` gives them.
        """
        if self.weights is None:
            raise DataError("learned merge: fit it (or load a fitted one) before merging")
        if list(channel_candidates) != self.inputs:
            raise DataError(f"learned merge: fitted on channels {self.inputs}, given {list(channel_candidates)}")
        union = self._union(channel_candidates)
        assert union.channel_scores is not None  # merge_candidates always sets the evidence
        unknown = [name for name in union.channel_names if name not in self.channel_names]
        if unknown:
            raise DataError(f"learned merge: channel {unknown[0]!r} was not seen when it was fitted")
        rows = self.weights[[self.channel_names.index(name) for name in union.channel_names]]  # [C, width]
        buckets = self._buckets(union)
        logits = self.bias + rows[torch.arange(rows.shape[0]), buckets].sum(-1)  # [B, U]
        scores = torch.sigmoid(logits).float()
        if self.lead is not None:
            lead = channel_candidates[self.lead].items[:, : self.config.k_total]
            batch, width = union.items.shape
            flat = Jagged(union.items.flatten(), torch.arange(batch + 1) * width)
            position = _hit_columns(lead, flat).view(batch, width)  # column in the lead's list, -1 = absent
            scores = torch.where(position >= 0, 1.0 + 1.0 / (position + 1).float(), scores)
        scores = scores.masked_fill(union.items == 0, float("-inf"))
        # Stable: equal scores keep the union's order (the rank merge's), so ties are deterministic.
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, : self.config.k_total]
        items, channels = union.items.gather(1, order), union.channels.gather(1, order)
        evidence = union.channel_scores.gather(1, order.unsqueeze(-1).expand(-1, -1, union.channel_scores.shape[-1]))
        short = self.config.k_total - order.shape[1]  # a union smaller than k_total (tiny catalogue)
        if short > 0:
            items = torch.nn.functional.pad(items, (0, short))
            channels = torch.nn.functional.pad(channels, (0, short))
            evidence = torch.nn.functional.pad(evidence, (0, 0, 0, short))
        merged_scores = torch.nn.functional.pad(scores.gather(1, order), (0, max(short, 0)), value=float("-inf"))
        return Candidates(items, merged_scores, channels, list(union.channel_names), evidence)

    def _union(self, channel_candidates: dict[str, Candidates]) -> Candidates:
        """Every channel's top `pool` (clipped to what it returned, with a warning), de-duplicated, in
        rank-merge order, with tags and rank evidence: Candidates [B, sum of offers]."""
        offers = {}
        for key, cands in channel_candidates.items():
            offers[key] = self.config.offered
            if offers[key] > cands.k:
                warnings.warn(
                    f"merge.pool: channel {key!r} returned {cands.k} candidates, fewer than the pool of "
                    f"{offers[key]} (a smaller catalogue?); it offers {cands.k}",
                    stacklevel=3,
                )
                offers[key] = cands.k
        return merge_candidates(channel_candidates, offers, max(sum(offers.values()), 1))

    def _buckets(self, union: Candidates) -> torch.Tensor:
        """[B, U, C] long: each channel's rank bucket of each union item (found_buckets = not found)."""
        assert union.channel_scores is not None
        evidence = union.channel_scores.double()  # 1 / (rank + 1), 0 = not found
        rank = (1.0 / evidence.clamp(min=1e-12)).round() - 1.0
        bucket = (self.config.buckets_per_octave * torch.log2(rank + 1.0)).floor().long()
        not_found = self.config.found_buckets
        # A nested merged input may carry ranks deeper than the pool: they share the deepest bucket.
        return torch.where(evidence > 0, bucket.clamp(max=not_found - 1), not_found)

    # ---- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """weights.safetensors then config.json (each written atomically; config.json last, so a folder
        with a config.json always holds the weights it describes)."""
        if self.weights is None:
            raise DataError("learned merge: nothing to save before fit")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_tensors(
            {"weights": self.weights, "bias": torch.tensor(self.bias, dtype=torch.float64)},
            path / "weights.safetensors",
        )
        meta = {
            "name": "learned_merge",
            "config": to_dict(self.config),
            "inputs": self.inputs,
            "channel_names": self.channel_names,
            "lead": self.lead,
            "report": self.report,
        }
        write_json(path / "config.json", meta, sort_keys=False)

    @staticmethod
    def load(path: str | Path) -> LearnedMerge:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise DataError(f"{path}: no learned merge here (config.json missing)")
        meta = json.loads((path / "config.json").read_text())
        merger = LearnedMerge(from_dict(LearnedMergeConfig, meta["config"]))
        tensors = load_tensors(path / "weights.safetensors")
        merger.weights, merger.bias = tensors["weights"], float(tensors["bias"])
        merger.inputs, merger.channel_names = list(meta["inputs"]), list(meta["channel_names"])
        merger.lead, merger.report = meta["lead"], dict(meta["report"])
        return merger
