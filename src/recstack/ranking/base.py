"""The Ranker protocol and what every ranker shares.

    fit(dataset, candidates: Candidates | None = None) -> self
    score(batch: UserBatch, candidates: Candidates) -> {task: probabilities [B, K]}  (empty slots -> 0)
    save(dir) / Ranker.load(dir);  tasks: list[str]
    evaluate_ranker(ranker, dataset, split) -> {"<task>/auc", "<task>/gauc", "<task>/logloss", ...}

A ranker subclass supplies a config dataclass (extending RankerConfig) and `build_model(schema)`,
a `RankingModel`: an nn.Module with a `FeatureEncoder` at `.features` and
`forward(inputs) -> {task: logits [N]}` over flat inputs (users, items [N], history [N, T], scenario
[N]). The base class builds the samples (ranking/samples.py) and features (ranking/features.py),
trains with the shared Trainer (early stopping on valid AUC), scores candidate grids in chunks of
`score_rows` (user, item) pairs, and saves config.json + model.safetensors (schema, vocabularies and
training history inside config.json; no pickle).
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
from recstack.train import (CallableBatchSource, Trainer, TrainConfig, TrainResult, load_weights, move_to_device,
                            save_weights, seed_everything)

add_plugin_modules("ranker", [
    "recstack.ranking.models.dcn_din_mmoe",
])


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
    score_rows: int = 16384            # (user, item) pairs per forward pass in score / evaluation
    train: TrainConfig = field(default_factory=_ranker_train)


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
        self.train_result: TrainResult | None = None

    def build_model(self, schema: FeatureSchema) -> RankingModel:
        raise NotImplementedError

    @property
    def primary_task(self) -> str:
        return "like" if "like" in self.tasks else self.tasks[0]

    # ---- training ---------------------------------------------------------------------------------
    def fit(self, dataset: Dataset, candidates: Candidates | None = None) -> "Ranker":
        """candidates: retrieved items for users 1..num_users in order (history before "valid"), or None."""
        cfg = self.config
        builder = SampleBuilder(dataset, cfg.samples)
        self.tasks, self.history_label, self.positive_only = builder.tasks, builder.history_label, builder.positive_only
        unknown = sorted(set(cfg.task_weights) - set(self.tasks))
        if unknown:
            raise ConfigError(f"task_weights: {unknown[0]!r} is not a task of {dataset.name}; "
                              f"tasks: {', '.join(self.tasks)}")
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
        trainer = Trainer(self.model, train_config, self._train_source(builder, train, candidates), evaluate,
                          device=cfg.device)
        self.train_result = trainer.fit()
        return self

    def _train_source(self, builder: SampleBuilder, train: Samples,
                      candidates: Candidates | None) -> CallableBatchSource:
        cfg, max_history = self.config, self.config.samples.max_history
        n = cfg.samples.negatives_per_positive
        if not (builder.positive_only and n > 0):
            return CallableBatchSource(len(train), lambda rows: train.inputs(max_history, rows),
                                       cfg.train.batch_size, shuffle=True, seed=cfg.train.seed)
        consumed = builder.consumed_keys(builder.split == TRAIN)
        pool = builder.candidate_pool(candidates, None, consumed)

        def collate(rows: torch.Tensor) -> dict[str, Any]:  # fresh negatives every batch
            return builder.with_negatives(train.select(rows), n, consumed, pool).inputs(max_history)

        return CallableBatchSource(len(train), collate, max(1, cfg.train.batch_size // (1 + n)), shuffle=True,
                                   seed=cfg.train.seed)

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
        parts = [self.predict(samples.inputs(max_history, torch.arange(s, min(s + chunk, len(samples)))))
                 for s in range(0, len(samples), chunk)]
        probs = {t: torch.cat([p[t] for p in parts]) for t in self.tasks}
        return pointwise_metrics(samples.labels, probs, samples.users)

    def history_grid(self, batch: UserBatch) -> torch.Tensor:
        """[B, max_history] right-aligned history ids; only `history_label` events when the batch carries that label."""
        history = batch.history
        label = self.history_label
        if label is not None and label in batch.history_features:
            keep = batch.history_features[label].reshape(-1) == 1
            lengths = torch.bincount(history.row_ids()[keep], minlength=history.num_rows)
            history = Jagged.from_lengths(history.values[keep], lengths)
        return history.to_padded(self.config.samples.max_history, align="right").long()

    def score(self, batch: UserBatch, candidates: Candidates) -> dict[str, torch.Tensor]:
        """{task: probabilities [B, K]} for candidates.items [B, K]; empty slots (item 0) get 0."""
        self._require_model()
        items = candidates.items.long()
        b, k = items.shape
        out = {t: torch.zeros(b, k) for t in self.tasks}
        if b == 0 or k == 0:
            return out
        history = self.history_grid(batch)
        step = max(1, self.config.score_rows // k)
        for start in range(0, b, step):  # chunks of users: each forward pass sees <= score_rows pairs
            stop = min(start + step, b)
            inputs = {"users": batch.users[start:stop].long().repeat_interleave(k),
                      "items": items[start:stop].reshape(-1),
                      "history": history[start:stop].repeat_interleave(k, dim=0)}
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
        meta = {"name": self.name, "config": to_dict(self.config), "tasks": self.tasks,
                "history_label": self.history_label, "positive_only": self.positive_only,
                "schema": self.schema.to_json() if self.schema else None,
                "train_result": to_dict(self.train_result) if self.train_result is not None else None}
        tmp = path / "config.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1, default=_json_default))
        tmp.replace(path / "config.json")

    @staticmethod
    def load(path: str | Path) -> "Ranker":
        path = Path(path)
        entry, config, meta = load_saved_config(path, "ranker")
        ranker = entry.cls(config)
        ranker.tasks, ranker.history_label = list(meta["tasks"]), meta.get("history_label")
        ranker.positive_only = bool(meta.get("positive_only", False))
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


def evaluate_ranker(ranker: Ranker, dataset: Dataset, split: str, candidates: Candidates | None = None,
                    users: torch.Tensor | None = None) -> dict[str, float]:
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
