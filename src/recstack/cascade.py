"""Cascade = retrieval channels -> merge -> ranker -> page, fitted from one RunConfig.

The merge is the rank merge (merge_candidates) or, with `merge.learned`, a LearnedMerge fitted on the
valid split after the channels and before the ranker (the ranker trains on merged candidates).

cascade = Cascade(config).fit(dataset, run_dir)     # resumes from whatever run_dir already holds
page = cascade.recommend(dataset.user_batch(users), k=10)
metrics = cascade.evaluate(dataset, "test")
Cascade.load(run_dir)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from recstack.config import from_dict, to_dict
from recstack.data.batch import Candidates, Page, UserBatch
from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.page.base import PageArranger, PageInputs, build_page
from recstack.ranking import base as _ranking_base  # noqa: F401  (declares the ranker plugins for build)
from recstack.registry import build
from recstack.retrieval.base import Retriever
from recstack.retrieval.learned_merge import LearnedMerge, LearnedMergeConfig
from recstack.retrieval.merge import MergeConfig, channel_report, merge_candidates
from recstack.train.checkpoint import write_json
from recstack.train.config import TrainConfig

Progress = Callable[[str], None]


def _default_channels() -> dict[str, dict[str, Any]]:
    """The default cascade (ML-100K, < 10 min on 2 CPU cores): three classic channels and SASRec."""
    return {
        "popular": {"name": "popular"},
        "itemcf": {"name": "itemcf"},
        "swing": {"name": "swing"},
        "sasrec": {"name": "sasrec", "train": {"epochs": 40, "patience": 5, "progress": True}},
    }


def _default_ranker() -> dict[str, Any]:
    return {"name": "dcn_din_mmoe", "train": {"epochs": 2}}


@dataclass
class DatasetSpec:
    name: str = "ml-100k"
    path: str | None = None
    """folder with the raw files (default: the catalogue's fetch location)"""
    prepare: dict[str, Any] = field(default_factory=dict)
    """PrepareConfig overrides"""


@dataclass
class EvalSpec:
    ks: list[int] = field(default_factory=lambda: [10, 20, 50, 100, 200])
    page_ks: list[int] = field(default_factory=lambda: [5, 10])
    splits: list[str] = field(default_factory=lambda: ["valid", "test"])
    batch_size: int = 1024


@dataclass
class ExpectSpec:
    """A metric a config promises: `min`/`max` bounds, or `value` within `tolerance`."""

    min: float | None = None
    max: float | None = None
    value: float | None = None
    tolerance: float = 0.0

    def check(self, got: float) -> bool:
        if self.min is not None and got < self.min:
            return False
        if self.max is not None and got > self.max:
            return False
        return self.value is None or abs(got - self.value) <= self.tolerance


@dataclass
class EnhancerSpec:
    """Extra user features for the ranker from an LLM enhancer (Taiji, METHODS.md §2.1): a Parquet written by
    `recstack llm features` (raw_id + feature columns), joined into the users table the ranker is fitted
    on. Retrieval, the ranker's samples, items and histories are unchanged; the ranker gains user fields."""

    features: str = ""
    """the features Parquet file"""
    columns: list[str] | None = None
    """feature columns to use (None = every column of the file but raw_id and user)"""

    def __post_init__(self) -> None:
        if not self.features:
            raise ConfigError("enhancer.features: the path of a features Parquet (`recstack llm features`) is required")


@dataclass
class RunConfig:
    name: str = "ml-100k-cascade"
    seed: int = 42
    """seeds every stage: the default of each component's `train.seed` and sampling `seed` (a seed in the
    component's own spec wins); `recstack run --seed N` sets it"""
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    channels: dict[str, dict[str, Any]] = field(default_factory=_default_channels)
    """alias -> {name: <registered retriever>, **its config}"""
    merge: MergeConfig = field(default_factory=lambda: MergeConfig(k_total=200))
    ranker: dict[str, Any] | None = field(default_factory=_default_ranker)
    enhancer: EnhancerSpec | None = None
    """LLM enhancer features fed to the ranker (see EnhancerSpec); null = none"""
    page: dict[str, Any] = field(default_factory=lambda: {"name": "fused", "k": 10})
    """the page arranger: {name: fused | ranker_topk | mmr | pagellm, **its config} (page/base.py)"""
    retrieval_label: str | None = "auto"
    """label whose positive rows are the history and targets of retrieval and the page; "auto": the
    first label of an impression log (the world's click), every row of a positive-only log; null: every row"""
    eval: EvalSpec = field(default_factory=EvalSpec)
    expect: dict[str, ExpectSpec] = field(default_factory=dict)
    """metric key in metrics.json (e.g. "test/page/ndcg@10") -> bound"""

    def __post_init__(self) -> None:
        if not self.channels:
            raise ConfigError("channels: a cascade needs at least one retrieval channel")
        for alias, spec in self.channels.items():
            if not isinstance(spec, dict) or "name" not in spec:
                raise ConfigError(f"channels.{alias}: expected a mapping with a 'name' key")


class Cascade:
    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.channels: dict[str, Retriever] = {
            alias: _seeded(build("retriever", spec, where=f"channels.{alias}"), spec, config.seed)
            for alias, spec in config.channels.items()
        }
        self.ranker = (
            _seeded(build("ranker", config.ranker, where="ranker"), config.ranker, config.seed)
            if config.ranker
            else None
        )
        merge = config.merge
        self.merger: LearnedMerge | None = (
            LearnedMerge(LearnedMergeConfig(k_total=merge.k_total, pool=merge.pool)) if merge.learned else None
        )
        self.page: PageArranger = build_page(config.page)
        if config.ranker is None and self.page.name != "fused":
            raise ConfigError(f"page {self.page.name!r} arranges the ranker's scores; this run has no ranker")
        self.train_seconds: dict[str, float] = {}
        self.page_tuning: dict[str, Any] | None = None
        """the page arranger's fit report (fused: the channel-weight tuning)"""

    def retrieval_view(self, dataset: Dataset) -> Dataset:
        """The rows retrieval sees (see RunConfig.retrieval_label); the ranker keeps the whole log."""
        label = self.config.retrieval_label
        if label == "auto":
            label = dataset.binary_labels()[0] if dataset.is_impression_log() else None
        return dataset.positives(label) if label else dataset

    # ---- training -------------------------------------------------------------------------------
    def fit(self, dataset: Dataset, run_dir: str | Path | None = None, progress: Progress = print) -> Cascade:
        """Fit every stage; stages already saved in `run_dir` are loaded instead (resume)."""
        run_dir = Path(run_dir) if run_dir else None
        view = self.retrieval_view(dataset)
        for alias, channel in list(self.channels.items()):
            saved = run_dir / "channels" / alias if run_dir else None
            if saved is not None and (saved / "config.json").is_file():
                progress(f"channel {alias}: loaded from {saved} (resume)")
                self.channels[alias] = Retriever.load(saved)
                continue
            self._checkpoint_into(channel, run_dir, alias)
            progress(f"channel {alias}: fitting {channel.name}")
            started = time.perf_counter()
            torch.manual_seed(self.config.seed)
            channel.fit(view)
            self.train_seconds[alias] = time.perf_counter() - started
            if saved is not None:
                channel.save(saved)
        self._fit_merge(view, run_dir, progress)  # before the ranker: it trains on merged candidates
        if self.ranker is not None:
            saved = run_dir / "ranker" if run_dir else None
            if saved is not None and (saved / "config.json").is_file():
                from recstack.ranking.base import Ranker

                progress(f"ranker: loaded from {saved} (resume)")
                self.ranker = Ranker.load(saved)
            else:
                progress("ranker: retrieving training candidates")
                users = torch.arange(1, dataset.num_users + 1)
                _, merged = self.retrieve(view.user_batch(users, before="valid", features=history_features(view)))
                self._checkpoint_into(self.ranker, run_dir, "ranker")
                assert self.config.ranker is not None  # self.ranker is built from it
                progress(f"ranker: fitting {self.config.ranker['name']}")
                started = time.perf_counter()
                torch.manual_seed(self.config.seed)
                self.ranker.fit(self.enhanced(dataset, progress), merged)
                self.train_seconds["ranker"] = time.perf_counter() - started
                if saved is not None:
                    self.ranker.save(saved)
            self._fit_page(dataset, run_dir, progress)  # after the ranker: pages are arranged from its scores
        return self

    def _fit_merge(self, view: Dataset, run_dir: Path | None, progress: Progress) -> None:
        """Fit the learned merge (if any) on the valid users of the retrieval view, history before valid."""
        if self.merger is None:
            return
        saved = run_dir / "merge" if run_dir else None
        if saved is not None and (saved / "config.json").is_file():
            loaded = LearnedMerge.load(saved)
            if to_dict(loaded.config) == to_dict(self.merger.config) and loaded.inputs == list(self.channels):
                progress(f"merge: loaded from {saved} (resume)")
                self.merger = loaded
                return
            progress(f"merge: {saved} holds a learned merge for other settings or channels; refitting")
        users, targets = view.eval_users("valid")
        if users.numel() == 0:
            raise DataError(f"{view.name}: the learned merge is fitted on the valid split, which has no users")
        progress(f"merge: fitting the learned merge on {users.numel()} valid users")
        started = time.perf_counter()
        full = view.user_batch(users, before="valid", features=history_features(view))
        parts: dict[str, list[Candidates]] = {alias: [] for alias in self.channels}
        for start in range(0, users.numel(), self.config.eval.batch_size):
            batch = full.select(torch.arange(start, min(start + self.config.eval.batch_size, users.numel())))
            for alias, channel in self.channels.items():
                parts[alias].append(channel.retrieve(batch, self.quota(alias)))
        report = self.merger.fit({alias: _concat(p) for alias, p in parts.items()}, targets, self.config.eval.ks)
        self.train_seconds["merge"] = time.perf_counter() - started
        valid = report[f"valid_recall@{self.config.merge.k_total}"]
        progress(f"merge: {report['order']}; valid recall@{self.config.merge.k_total} {valid['merged']:.4f}")
        if saved is not None:
            self.merger.save(saved)

    def _fit_page(self, dataset: Dataset, run_dir: Path | None, progress: Progress) -> None:
        saved = run_dir / "page" if run_dir else None
        if self.page.learned and saved is not None and (saved / "config.json").is_file():
            progress(f"page: loaded from {saved} (resume)")
            self.page = PageArranger.load(saved)
            self.config.page = self._page_spec()
            return
        progress(f"page: fitting {self.page.name} on valid")
        started = time.perf_counter()
        self.page_tuning = self.page.fit(self.page_inputs(dataset, "valid"))
        self.train_seconds["page"] = time.perf_counter() - started
        if self.page_tuning:
            self.page_tuning["seconds"] = round(self.train_seconds["page"], 2)
        self.config.page = self._page_spec()  # fitted settings (e.g. tuned channel weights) go into config.json
        if self.page.learned and saved is not None:
            self.page.save(saved)

    def _page_spec(self) -> dict[str, Any]:
        return {"name": self.page.name, **to_dict(self.page.config)}

    def enhanced(self, dataset: Dataset, progress: Progress = print) -> Dataset:
        """The dataset the ranker is fitted on: `dataset` with the enhancer's user features joined (if any)."""
        spec = self.config.enhancer
        if spec is None:
            return dataset
        from recstack.llm.taiji.enhancer import join_user_features

        enhanced, report = join_user_features(dataset, spec.features, spec.columns)
        features: Any = getattr(getattr(self.ranker, "config", None), "features", None)
        chosen = getattr(features, "user_columns", None)
        if features is not None and chosen is not None:  # an explicit column list: the enhancer's columns join it
            features.user_columns = list(chosen) + [c for c in report["columns"] if c not in chosen]
        progress(
            f"ranker: enhancer features {', '.join(report['columns'])} from {spec.features} "
            f"({report['users_with_features']} users; {report['users_without']} without)"
        )
        return enhanced

    def page_inputs(self, dataset: Dataset, split: str) -> PageInputs:
        """The `split` users' merged candidates, ranker scores and held-out targets (history before `split`)."""
        dataset = self.retrieval_view(dataset)
        users, targets = dataset.eval_users(split)
        if users.numel() == 0:
            raise DataError(f"{dataset.name}: fitting the page needs a {split} split with users")
        if self.ranker is None:
            raise ConfigError("the page stage arranges the ranker's scores; this run has no ranker")
        full = dataset.user_batch(users, before=split, features=history_features(dataset))
        merged_parts, score_parts = [], []
        for start in range(0, users.numel(), self.config.eval.batch_size):
            batch = full.select(torch.arange(start, min(start + self.config.eval.batch_size, users.numel())))
            _, merged = self.retrieve(batch)
            merged_parts.append(merged)
            score_parts.append(self.ranker.score(batch, merged))
        merged = _concat(merged_parts)
        scores = {
            t: torch.cat([torch.nn.functional.pad(p[t], (0, merged.k - p[t].shape[1])) for p in score_parts])
            for t in score_parts[0]
        }
        return PageInputs(full, merged, scores, targets, dataset)

    @staticmethod
    def _checkpoint_into(component: Any, run_dir: Path | None, alias: str) -> None:
        """Point a neural component's Trainer checkpoints into the run folder, so a killed run resumes mid-training."""
        train = getattr(getattr(component, "config", None), "train", None)
        if run_dir is not None and train is not None and getattr(train, "checkpoint_dir", "x") is None:
            train.checkpoint_dir = str(run_dir / "checkpoints" / alias)
            train.resume = True

    # ---- inference ------------------------------------------------------------------------------
    def quota(self, alias: str) -> int:
        """Items channel `alias` retrieves for the merge (a learned merge: its pool)."""
        if self.merger is not None:
            return self.merger.config.offered
        quotas = self.config.merge.quotas or {}
        return quotas.get(alias, self.config.merge.k_total)

    def merge(self, per_channel: dict[str, Candidates]) -> Candidates:
        """Per-channel Candidates (each [B, >= quota]) -> merged Candidates [B, k_total]: learned or rank merge."""
        if self.merger is not None:
            return self.merger.merge(per_channel)
        merge = self.config.merge
        return merge_candidates(per_channel, merge.quotas, merge.k_total, merge.normalise)

    def retrieve(self, batch: UserBatch, k: int | None = None) -> tuple[dict[str, Candidates], Candidates]:
        """Per-channel candidates (each at least its quota, or `k`) and the merged list."""
        per_channel = {
            alias: channel.retrieve(batch, max(k or 0, self.quota(alias))) for alias, channel in self.channels.items()
        }
        return per_channel, self.merge(per_channel)

    def merge_report(self) -> dict[str, Any]:
        """Which merge this cascade uses; for a learned one, its fit report (valid recall, effective quotas)."""
        if self.merger is not None:
            return dict(self.merger.report)
        merge = self.config.merge
        return {"method": "rank", "k_total": merge.k_total, "normalise": merge.normalise, "quotas": merge.quotas}

    def rank(self, batch: UserBatch, merged: Candidates, k: int) -> Page:
        if self.ranker is None:
            return Page(merged.items[:, :k], merged.scores[:, :k], merged.channels[:, :k], merged.channel_names)
        return self.page.arrange(PageInputs(batch, merged, self.ranker.score(batch, merged)), k).first(k)

    def recommend(self, batch: UserBatch, k: int | None = None) -> Page:
        _, merged = self.retrieve(batch)
        return self.rank(batch, merged, k or self.page.config.k)

    # ---- evaluation -----------------------------------------------------------------------------
    def evaluate(self, dataset: Dataset, split: str) -> dict[str, Any]:
        """Channel recall@K, merged recall@K, exclusive contributions, ranker AUC/GAUC, page metrics."""
        from recstack.eval.topk import topk_metrics

        logged, dataset = dataset, self.retrieval_view(dataset)
        users, targets = dataset.eval_users(split)
        if users.numel() == 0:
            raise DataError(f"{dataset.name}: the {split} split has no users to evaluate")
        full = dataset.user_batch(users, before=split, features=history_features(dataset))
        k_eval = max(self.config.eval.ks)
        per_channel_parts: dict[str, list[Candidates]] = {a: [] for a in self.channels}
        merged_parts, page_parts = [], []
        for start in range(0, users.numel(), self.config.eval.batch_size):
            rows = torch.arange(start, min(start + self.config.eval.batch_size, users.numel()))
            batch = full.select(rows)
            per_channel, merged = self.retrieve(batch, k_eval)
            for alias, cands in per_channel.items():
                per_channel_parts[alias].append(cands)
            merged_parts.append(merged)
            page_parts.append(self.rank(batch, merged, max(self.config.eval.page_ks)))
        per_channel = {a: _concat(parts) for a, parts in per_channel_parts.items()}
        merged = _concat(merged_parts)
        report = channel_report(per_channel, merged, targets, [k for k in self.config.eval.ks if k <= merged.k])
        page_items = torch.cat([p.items for p in page_parts])
        metrics: dict[str, Any] = {
            "users": int(users.numel()),
            "retrieval": report,
            "page": topk_metrics(page_items, targets, self.config.eval.page_ks, ("recall", "ndcg", "hr", "mrr")),
        }
        metrics["channel_overlap"] = channel_overlap(merged)
        metrics["merge"] = self.merge_report()
        if self.ranker is not None:
            from recstack.ranking.base import evaluate_ranker

            # Same protocol as training: negatives partly from the merged candidates of these users.
            metrics["ranker"] = evaluate_ranker(self.ranker, logged, split, candidates=merged, users=users)
        return metrics

    # ---- persistence ----------------------------------------------------------------------------
    def save(self, run_dir: str | Path) -> None:
        run_dir = Path(run_dir)
        for alias, channel in self.channels.items():
            channel.save(run_dir / "channels" / alias)
        if self.merger is not None:
            self.merger.save(run_dir / "merge")
        if self.ranker is not None:
            self.ranker.save(run_dir / "ranker")
        if self.page.learned:
            self.page.save(run_dir / "page")
        write_json(run_dir / "config.json", to_dict(self.config), sort_keys=False)  # channel order matters

    @staticmethod
    def load(run_dir: str | Path) -> Cascade:
        run_dir = Path(run_dir)
        if not (run_dir / "config.json").is_file():
            raise DataError(f"{run_dir} is not a recstack run folder (no config.json); run `recstack run` first")
        config = from_dict(RunConfig, json.loads((run_dir / "config.json").read_text()))
        cascade = Cascade.__new__(Cascade)
        cascade.config, cascade.train_seconds, cascade.page_tuning = config, {}, None
        cascade.channels = {}
        for alias in config.channels:
            path = run_dir / "channels" / alias
            if not (path / "config.json").is_file():
                raise DataError(f"{run_dir}: checkpoint of channel {alias!r} is missing ({path})")
            cascade.channels[alias] = Retriever.load(path)
        cascade.merger = None
        if config.merge.learned:
            if not (run_dir / "merge" / "config.json").is_file():
                raise DataError(f"{run_dir}: the learned merge's checkpoint is missing ({run_dir / 'merge'})")
            cascade.merger = LearnedMerge.load(run_dir / "merge")
        cascade.ranker = None
        if config.ranker:
            from recstack.ranking.base import Ranker

            if not (run_dir / "ranker" / "config.json").is_file():
                raise DataError(f"{run_dir}: ranker checkpoint is missing ({run_dir / 'ranker'})")
            cascade.ranker = Ranker.load(run_dir / "ranker")
        cascade.page = build_page(config.page)
        if cascade.page.learned:
            if not (run_dir / "page" / "config.json").is_file():
                raise DataError(f"{run_dir}: the {cascade.page.name} page's checkpoint is missing ({run_dir / 'page'})")
            cascade.page = PageArranger.load(run_dir / "page")
        return cascade


def _seeded(component: Any, spec: dict[str, Any], seed: int) -> Any:
    """Give `component` the run's seed: its `train.seed` (neural components) and its own `seed` (sampled
    ones, e.g. Swing's users per item), unless `spec` sets them. Not the ranker's `samples.seed`: the
    fixed valid/test negatives are part of the evaluation, the same for every run seed."""
    config: Any = getattr(component, "config", None)
    train = getattr(config, "train", None)
    if isinstance(train, TrainConfig) and "seed" not in (spec.get("train") or {}):
        train.seed = seed
    if isinstance(getattr(config, "seed", None), int) and "seed" not in spec:
        config.seed = seed
    return component


def history_features(dataset: Dataset) -> tuple[str, ...]:
    """Per-event features a UserBatch carries: time and the labels (rankers keep e.g. only clicked events)."""
    return ("timestamp", *dataset.labels)


def channel_overlap(merged: Candidates) -> dict[str, dict[str, float]]:
    """overlap[a][b] = share of channel a's merged candidates that channel b also found."""
    names = merged.channel_names
    bits = torch.stack([(merged.channels >> c) & 1 for c in range(len(names))]).flatten(1).float()  # [C, B*K]
    both = bits @ bits.T
    own = both.diagonal().clamp(min=1)
    return {a: {b: float(both[i, j] / own[i]) for j, b in enumerate(names)} for i, a in enumerate(names)}


def _concat(parts: list[Candidates]) -> Candidates:
    k = max(p.k for p in parts)

    def pad(t: torch.Tensor, value: float) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, k - t.shape[1]), value=value)

    evidence = None
    if all(p.channel_scores is not None for p in parts):
        evidence = torch.cat(
            [torch.nn.functional.pad(cast(torch.Tensor, p.channel_scores), (0, 0, 0, k - p.k)) for p in parts]
        )
    return Candidates(
        torch.cat([pad(p.items, 0) for p in parts]),
        torch.cat([pad(p.scores, float("-inf")) for p in parts]),
        torch.cat([pad(p.channels, 0) for p in parts]),
        parts[0].channel_names,
        evidence,
    )
