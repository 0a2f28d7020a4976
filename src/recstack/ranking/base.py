"""The Ranker protocol and what every ranker shares.

    fit(dataset, candidates: Candidates | None = None) -> self
    score(batch: UserBatch, candidates: Candidates) -> {task: probabilities [B, K]}  (empty slots -> 0)
    save(dir) / Ranker.load(dir);  tasks: list[str]
    evaluate_ranker(ranker, dataset, split) -> {"<task>/auc", "<task>/gauc", "<task>/logloss", ...}

A ranker subclass supplies a config dataclass (extending RankerConfig) and `build_model(schema)`,
a `RankingModel`: an nn.Module with a `FeatureEncoder` at `.features` and
`forward(inputs) -> {task: logits [N]}` over flat inputs (users, items [N], history [N, T], scenario
[N]; when the data has them request_time [N], history_time and history_event [N, T]; with
`aggregate_users` the group inputs: see ranking/samples.py). The base class builds the samples
(ranking/samples.py) and features (ranking/features.py), trains with the shared Trainer (early
stopping on valid AUC), scores candidate grids in chunks of `score_rows` (user, item) pairs, and
saves config.json + model.safetensors (schema, vocabularies and training history inside config.json;
no pickle).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recstack.config import to_dict
from recstack.data.batch import Candidates, UserBatch
from recstack.data.dataset import SPLIT_CODES, TRAIN, Dataset
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError, DataError
from recstack.eval.pointwise import pointwise_metrics
from recstack.ranking.features import FeatureConfig, FeatureEncoder, FeatureSchema, build_schema
from recstack.ranking.heads import multitask_bce, probabilities
from recstack.ranking.samples import SampleBuilder, SampleConfig, Samples
from recstack.registry import add_plugin_modules, load_saved_config
from recstack.train import (
    CallableBatchSource,
    TrainConfig,
    Trainer,
    TrainResult,
    load_weights,
    move_to_device,
    save_weights,
    seed_everything,
)

add_plugin_modules(
    "ranker",
    [
        "recstack.ranking.models.dcn_din_mmoe",
        "recstack.ranking.models.mtfm",
        "recstack.ranking.models.hstu_ranker",
        "recstack.ranking.models.rankmixer",
        "recstack.ranking.models.tokenmixer_large",
        "recstack.ranking.models.kunlun",
        "recstack.ranking.models.onepiece",
    ],
)


def _ranker_train() -> TrainConfig:
    # monitor "auto" = "<like, else the first task>/auc" on the valid samples.
    return TrainConfig(epochs=4, batch_size=1024, lr=3e-3, weight_decay=0.0, patience=1, monitor="auto")


@dataclass
class RankerConfig:
    """What every ranker shares. The default `train` (4 epochs of 1024 rows, lr 3e-3, patience 1,
    monitor "auto") fits ML-100K in about a minute of one CPU core. Note that a YAML `train:` block
    builds a fresh TrainConfig from TrainConfig's own defaults, so list every key you rely on."""

    samples: SampleConfig = field(default_factory=SampleConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    task_weights: dict[str, float] = field(default_factory=dict)  # loss weight per task (default 1)
    device: str = "cpu"
    score_rows: int = 16384  # (user, item) pairs per forward pass in score / evaluation
    train: TrainConfig = field(default_factory=_ranker_train)
    # User-level multi-scenario aggregation (MTFM / MTGR): a training batch holds whole groups = a user's
    # samples whose request times share a window of `aggregate_window` seconds, across scenarios, and the
    # inputs carry the group inputs (one history per group, ranking/samples.py); scoring makes each
    # user's K candidates one group. Only models that read "group" encode the history once per group.
    aggregate_users: bool = False
    aggregate_window: float = 86400.0


class RankingModel(nn.Module):
    """Base of ranker networks: `forward(inputs) -> {task: logits [N]}`; loss = task-weighted BCE."""

    def __init__(self, features: FeatureEncoder, tasks: list[str], task_weights: dict[str, float]) -> None:
        super().__init__()
        self.features, self.tasks, self.task_weights = features, list(tasks), dict(task_weights)

    def loss(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        return multitask_bce(self(inputs), inputs["labels"], self.task_weights)


class Ranker:
    """Base class: subclasses set `name` and `config_class` and implement `build_model`."""

    name: str = "ranker"
    config_class: type = RankerConfig

    def __init__(self, config: RankerConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        self.model: RankingModel | None = None
        self.schema: FeatureSchema | None = None
        self.tasks: list[str] = []
        self.history_label: str | None = None
        self.positive_only = False
        self.event_labels: list[str] = []  # funnel order of history_event codes (ranking/samples.py)
        self.time_scale: float | None = None  # seconds per timestamp unit; None = no time inputs
        self.train_result: TrainResult | None = None

    def build_model(self, schema: FeatureSchema) -> RankingModel:
        raise NotImplementedError

    @property
    def primary_task(self) -> str:
        return "like" if "like" in self.tasks else self.tasks[0]

    # ---- training ---------------------------------------------------------------------------------
    def fit(self, dataset: Dataset, candidates: Candidates | None = None) -> Ranker:
        """candidates: retrieved items for users 1..num_users in order (history before "valid"), or None."""
        cfg = self.config
        builder = SampleBuilder(dataset, cfg.samples)
        self.tasks, self.history_label, self.positive_only = builder.tasks, builder.history_label, builder.positive_only
        self.event_labels, self.time_scale = list(builder.event_labels), builder.time_scale
        if cfg.aggregate_users and not cfg.aggregate_window > 0:
            raise ConfigError(f"aggregate_window must be > 0 seconds, got {cfg.aggregate_window!r}")
        unknown = sorted(set(cfg.task_weights) - set(self.tasks))
        if unknown:
            raise ConfigError(
                f"task_weights: {unknown[0]!r} is not a task of {dataset.name}; tasks: {', '.join(self.tasks)}"
            )
        seed_everything(cfg.train.seed)  # the initial weights depend on the seed only
        self.schema, tables = build_schema(dataset, cfg.features)
        self.model = self.build_model(self.schema)
        self.model.features.set_tables(tables)
        train = builder.train_samples()
        if len(train) == 0:
            raise DataError(f"{dataset.name}: the train split is empty; {self.name} has nothing to learn from")
        has_valid = bool((builder.split == SPLIT_CODES["valid"]).any())
        valid = builder.eval_samples("valid", candidates) if has_valid else None
        evaluate = (lambda model: self.evaluate_samples(valid)) if valid is not None else None
        train_config = cfg.train
        # "auto", or TrainConfig's generic default (a retrieval metric: a YAML `train:` block rebuilds it).
        if train_config.monitor in ("auto", TrainConfig.monitor):
            train_config = dataclasses.replace(train_config, monitor=f"{self.primary_task}/auc")
        trainer = Trainer(
            self.model, train_config, self._train_source(builder, train, candidates), evaluate, device=cfg.device
        )
        self.train_result = trainer.fit()
        return self

    @property
    def group_window(self) -> float | None:
        """Seconds of the user-level aggregation window, or None without aggregation."""
        return self.config.aggregate_window if self.config.aggregate_users else None

    def _train_source(
        self, builder: SampleBuilder, train: Samples, candidates: Candidates | None
    ) -> CallableBatchSource:
        cfg, max_history, window = self.config, self.config.samples.max_history, self.group_window
        n = cfg.samples.negatives_per_positive
        collate: Any = lambda rows: train.inputs(max_history, rows, window)  # noqa: E731
        rows_per_batch = cfg.train.batch_size
        if builder.positive_only and n > 0:
            consumed = builder.consumed_keys(builder.split == TRAIN)
            pool = builder.candidate_pool(candidates, None, consumed)
            rows_per_batch = max(1, cfg.train.batch_size // (1 + n))

            def collate(rows: torch.Tensor) -> dict[str, Any]:  # fresh negatives every batch
                return builder.with_negatives(train.select(rows), n, consumed, pool).inputs(
                    max_history, group_window=window
                )

        if window is None:
            return CallableBatchSource(len(train), collate, rows_per_batch, shuffle=True, seed=cfg.train.seed)
        groups = train.group_rows(window)  # batches of whole groups, about rows_per_batch rows each
        per_batch = max(1, round(rows_per_batch * groups.num_rows / len(train)))
        return CallableBatchSource(
            groups.num_rows, lambda g: collate(groups.select(g).values), per_batch, shuffle=True, seed=cfg.train.seed
        )

    # ---- inference ----------------------------------------------------------------------------------
    def _require_model(self) -> RankingModel:
        if self.model is None:
            raise DataError(f"{self.name}: the ranker is not fitted; call fit() or Ranker.load() first")
        return self.model

    @torch.no_grad()
    def predict(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """{task: probabilities [N]} (on CPU) for flat model inputs."""
        model = self._require_model()
        model.eval()
        device = next(model.parameters()).device
        inputs = move_to_device({k: v for k, v in inputs.items() if k != "labels"}, device)
        return {t: p.cpu() for t, p in probabilities(model(inputs)).items()}

    def evaluate_samples(self, samples: Samples) -> dict[str, float]:
        chunk, max_history = self.config.score_rows, self.config.samples.max_history
        parts = [
            self.predict(samples.inputs(max_history, torch.arange(s, min(s + chunk, len(samples))), self.group_window))
            for s in range(0, len(samples), chunk)
        ]
        probs = {t: torch.cat([p[t] for p in parts]) for t in self.tasks}
        return pointwise_metrics(samples.labels, probs, samples.users)

    def history_grid(self, batch: UserBatch) -> torch.Tensor:
        """[B, max_history] right-aligned history ids; only `history_label` events when the batch carries that label."""
        return self.history_inputs(batch)["history"]

    def history_inputs(self, batch: UserBatch) -> dict[str, torch.Tensor]:
        """Per user: history [B, T] as `history_grid`; when the ranker was fitted with them and the batch
        carries "timestamp": request_time [B] (batch.time, else one unit after the user's latest event) and history_time
        [B, T]; history_event [B, T] from the label features the batch carries (a missing `history_label`
        counts as positive: history events are its positives)."""
        history, label, feats, t = (
            batch.history,
            self.history_label,
            batch.history_features,
            self.config.samples.max_history,
        )
        keep = feats[label].reshape(-1) == 1 if label is not None and label in feats else None
        rows = history.row_ids()
        lengths = history.lengths() if keep is None else torch.bincount(rows[keep], minlength=history.num_rows)

        def padded(values: torch.Tensor) -> torch.Tensor:
            return Jagged.from_lengths(values if keep is None else values[keep], lengths).to_padded(t, align="right")

        valid = torch.arange(t) >= t - lengths.clamp(max=t).unsqueeze(1)
        out = {"history": padded(history.values).long()}
        if self.time_scale is not None and "timestamp" in feats:
            stamps = feats["timestamp"].reshape(-1).long()
            now = (
                batch.time.long()
                if batch.time is not None
                else 1
                + torch.zeros(history.num_rows, dtype=torch.long).scatter_reduce(
                    0, rows, stamps, "amax", include_self=False
                )
            )  # the request follows the events
            age = (now.unsqueeze(1) - padded(stamps)).clamp(min=0).double() * self.time_scale
            out["request_time"] = now.double() * self.time_scale
            out["history_time"] = age.float().masked_fill(~valid, 0.0)
        if self.event_labels:
            codes = torch.ones(history.values.shape[0], dtype=torch.long)
            for j, name in enumerate(self.event_labels):  # a loop over the few labels; deeper ones overwrite
                if name in feats:
                    codes = torch.where(feats[name].reshape(-1) == 1, 2 + j, codes)
                elif name == label:
                    codes.fill_(2 + j)  # the batch has no label column: every event counts as a history event
            out["history_event"] = padded(codes).masked_fill(~valid, 0)
        return out

    def score(self, batch: UserBatch, candidates: Candidates) -> dict[str, torch.Tensor]:
        """{task: probabilities [B, K]} for candidates.items [B, K]; empty slots (item 0) get 0."""
        self._require_model()
        items = candidates.items.long()
        b, k = items.shape
        out = {t: torch.zeros(b, k) for t in self.tasks}
        if b == 0 or k == 0:
            return out
        per_user = self.history_inputs(batch)
        step = max(1, self.config.score_rows // k)
        for start in range(0, b, step):  # chunks of users: each forward pass sees <= score_rows pairs
            stop = min(start + step, b)
            inputs = {
                "users": batch.users[start:stop].long().repeat_interleave(k),
                "items": items[start:stop].reshape(-1),
                **{key: value[start:stop].repeat_interleave(k, dim=0) for key, value in per_user.items()},
            }
            if self.group_window is not None:  # each user's K candidates form one group
                inputs["group"] = torch.arange(stop - start).repeat_interleave(k)
                inputs["group_offset"] = torch.zeros((stop - start) * k)
                inputs.update(
                    {
                        f"group_{key}": per_user[key][start:stop]
                        for key in ("history", "history_time", "history_event")
                        if key in per_user
                    }
                )
                if "group_history_time" not in inputs:  # no timestamps: the age in steps (T - column)
                    grid = inputs["group_history"]
                    steps = torch.arange(grid.shape[1], 0, -1, dtype=torch.float32)
                    inputs["group_history_time"] = steps.expand(grid.shape).masked_fill(grid == 0, 0.0)
            if batch.scenario is not None:
                inputs["scenario"] = (batch.scenario[start:stop].long() + 1).repeat_interleave(k)
            empty = items[start:stop] == 0
            for task, probs in self.predict(inputs).items():
                out[task][start:stop] = probs.view(stop - start, k).masked_fill(empty, 0.0)
        return out

    # ---- persistence --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """config.json (registry name, config, tasks, feature schema with vocabularies, training history)
        + model.safetensors; config.json is written last, so its presence marks a complete save."""
        model, path = self._require_model(), Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_weights(model, path / "model.safetensors")
        meta = {
            "name": self.name,
            "config": to_dict(self.config),
            "tasks": self.tasks,
            "history_label": self.history_label,
            "positive_only": self.positive_only,
            "event_labels": self.event_labels,
            "time_scale": self.time_scale,
            "schema": self.schema.to_json() if self.schema else None,
            "train_result": to_dict(self.train_result) if self.train_result is not None else None,
        }
        tmp = path / "config.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1, default=_json_default))
        tmp.replace(path / "config.json")

    @staticmethod
    def load(path: str | Path) -> Ranker:
        path = Path(path)
        entry, config, meta = load_saved_config(path, "ranker")
        ranker = entry.cls(config)
        ranker.tasks, ranker.history_label = list(meta["tasks"]), meta.get("history_label")
        ranker.positive_only = bool(meta.get("positive_only", False))
        ranker.event_labels, ranker.time_scale = list(meta.get("event_labels", [])), meta.get("time_scale")
        ranker.schema = FeatureSchema.from_json(meta["schema"])
        ranker.model = ranker.build_model(ranker.schema)
        load_weights(ranker.model, path / "model.safetensors")
        if meta.get("train_result"):
            ranker.train_result = TrainResult(**meta["train_result"])
        return ranker


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.item()
    return str(value)


def evaluate_ranker(
    ranker: Ranker,
    dataset: Dataset,
    split: str,
    candidates: Candidates | None = None,
    users: torch.Tensor | None = None,
) -> dict[str, float]:
    """AUC, GAUC, logloss per task on the `split` samples ("<task>/auc", ...) plus "samples".

    For positive-only logs the negatives are popularity-sampled with a fixed seed, and, when
    `candidates` (rows = `users`, default 1..num_users) are given, partly retrieved-but-not-consumed items.
    """
    if split not in SPLIT_CODES:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLIT_CODES)}")
    samples = SampleBuilder(dataset, ranker.config.samples, tasks=ranker.tasks).eval_samples(split, candidates, users)
    if len(samples) == 0:
        raise DataError(f"{dataset.name}: the {split} split has no rows to evaluate the ranker on")
    return {**ranker.evaluate_samples(samples), "samples": float(len(samples))}
