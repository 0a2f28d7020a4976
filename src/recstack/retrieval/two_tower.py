"""Two-tower retrieval (Covington et al., RecSys 2016; Yi et al., RecSys 2019) served with FAISS.

User tower: pool the embeddings of the last `max_history` history items (mean, or attention with a
learned query over item + recency-position embeddings), concatenate the user id embedding
(`user_id`) and the user's categorical features, MLP, L2-normalise. Item tower: item id embedding
+ categorical features, MLP, L2-normalise. Score = dot product / temperature. Each train
interaction is one example: the user's train history before it -> the item.
Losses: in-batch softmax, sampled softmax over `num_negatives` shared negatives, or both in one
softmax ("mixed"); `logq` subtracts log Q(item) from each logit (Q = the item's train frequency
for in-batch columns, the sampler's probability for sampled columns) to undo the sampling bias.
Our interpretation [I]: history items share the item id + feature embeddings (not the item MLP);
categorical features are string / list-of-string / integer columns with at most `max_feature_ratio`
distinct values per row, strings split on `feature_separator`, one bag per feature (mean of its
tokens), summed over features; text fields are only used when named in `item_feature_columns`
(e.g. MovieLens "genres"); in-batch duplicates of the positive and accidental hits of sampled
negatives are masked; negatives are shared across the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recstack.data.batch import Candidates, UserBatch
from recstack.data.dataset import Dataset
from recstack.data.negatives import PopularitySampler, UniformSampler
from recstack.errors import ConfigError, DataError
from recstack.nn.categorical import FeatureBag, TokenTable, categorical_tokens, is_categorical
from recstack.nn.mlp import MLP
from recstack.registry import register
from recstack.retrieval.ann import AnnConfig, AnnIndex, ann_candidates
from recstack.retrieval.base import Retriever
from recstack.train import (
    CallableBatchSource,
    TrainConfig,
    Trainer,
    TrainResult,
    load_weights,
    save_weights,
    seed_everything,
)


@dataclass
class TwoTowerConfig:
    dim: int = 64
    hidden: list[int] = field(default_factory=lambda: [128])  # hidden widths of both tower MLPs
    dropout: float = 0.1
    layer_norm: bool = False
    max_history: int = 50
    pooling: Literal["mean", "attention"] = "attention"
    user_id: bool = False  # add a user id embedding to the user tower
    item_feature_columns: list[str] | None = None  # None = auto: categorical columns that are not text fields
    user_feature_columns: list[str] | None = None  # None = auto; [] = none
    max_feature_ratio: float = 0.5  # auto skips columns with more distinct values per row (ids, free text)
    feature_separator: str = r"\s*[|,]\s*"  # regex: "Action, Comedy" -> two tokens
    temperature: float = 0.05
    loss: Literal["in_batch", "sampled", "mixed"] = "in_batch"
    logq: bool = True
    num_negatives: int = 256
    sampler: Literal["popularity", "uniform"] = "popularity"
    sampler_alpha: float = 0.75
    serving: Literal["exact", "faiss"] = "exact"
    ann: AnnConfig = field(default_factory=AnnConfig)
    device: str = "cpu"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, batch_size=512, patience=5))

    def __post_init__(self) -> None:
        for key in ("dim", "max_history", "num_negatives"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)!r}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature!r}")


def in_batch_logits(
    users: torch.Tensor, items: torch.Tensor, item_ids: torch.Tensor, log_q: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """users, items: [B, D]; item_ids: [B]; log_q: [B] log Q of each column's item (None = no correction).

    Returns [B, B] logits (row i's positive on the diagonal); other columns holding row i's item -> -inf.
    """
    logits = users @ items.T / temperature
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    duplicate = item_ids.unsqueeze(0) == item_ids.unsqueeze(1)
    duplicate.fill_diagonal_(False)
    return logits.masked_fill(duplicate, float("-inf"))


def sampled_logits(
    users: torch.Tensor,
    negatives: torch.Tensor,
    negative_ids: torch.Tensor,
    positive_ids: torch.Tensor,
    log_q: torch.Tensor | None,
    temperature: float,
) -> torch.Tensor:
    """users: [B, D]; negatives: [N, D] shared by all rows; negative_ids: [N]; positive_ids: [B];
    log_q: [N] sampler log-probabilities. Returns [B, N]; a negative equal to the row's positive -> -inf."""
    logits = users @ negatives.T / temperature
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    return logits.masked_fill(negative_ids.unsqueeze(0) == positive_ids.unsqueeze(1), float("-inf"))


class TwoTowerModel(nn.Module):
    log_q: torch.Tensor  # buffer [num_items + 1]

    def __init__(
        self,
        config: TwoTowerConfig,
        num_users: int,
        num_items: int,
        item_bag: tuple[int, int] | None,
        user_bag: tuple[int, int] | None,
    ) -> None:
        """item_bag / user_bag: (vocabulary size, token count) of the feature tables, None = no features."""
        super().__init__()
        self.config, self.num_users, d = config, num_users, config.dim
        self.item_embedding = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.item_features = FeatureBag(*item_bag, num_items + 1, d) if item_bag else None
        self.user_embedding = nn.Embedding(num_users + 1, d, padding_idx=0) if config.user_id else None
        self.user_features = FeatureBag(*user_bag, num_users + 1, d) if user_bag else None
        if config.pooling == "attention":
            self.position = nn.Embedding(config.max_history, d)
            self.query = nn.Parameter(torch.randn(d) * d**-0.5)
        user_in = d * (1 + (self.user_embedding is not None) + (self.user_features is not None))
        mlp: dict[str, Any] = dict(hidden=config.hidden, dropout=config.dropout, layer_norm=config.layer_norm)
        self.user_mlp, self.item_mlp = MLP(user_in, out_dim=d, **mlp), MLP(d, out_dim=d, **mlp)
        self.register_buffer("log_q", torch.zeros(num_items + 1))  # log train frequency, for in-batch logQ
        for embedding in (self.item_embedding, self.user_embedding):
            if embedding is not None:
                nn.init.normal_(embedding.weight, std=d**-0.5)
                embedding.weight.data[0] = 0

    def item_input(self, items: torch.Tensor) -> torch.Tensor:
        """items: [...] ids -> [..., D] id + feature embeddings (shared by the history)."""
        x = self.item_embedding(items)
        return x if self.item_features is None else x + self.item_features(items)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """items: [...] -> [..., D] unit vectors."""
        return F.normalize(self.item_mlp(self.item_input(items)), dim=-1)

    def user_vectors(self, users: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """users: [B] (0 = unknown); history: [B, T] item ids, most recent last, 0 = padding -> [B, D]."""
        h = self.item_input(history)
        mask = (history > 0).unsqueeze(-1)
        if self.config.pooling == "mean":
            pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1)
        else:
            positions = self.position.weight[-history.shape[1] :]  # column T-1 = most recent
            logits = ((h + positions) @ self.query / h.shape[-1] ** 0.5).masked_fill(~mask.squeeze(-1), float("-inf"))
            pooled = (torch.softmax(logits, 1).nan_to_num(0.0).unsqueeze(-1) * h).sum(1)  # empty row -> 0
        users = users.masked_fill(users > self.num_users, 0)
        parts = [pooled] + [m(users) for m in (self.user_embedding, self.user_features) if m is not None]
        return F.normalize(self.user_mlp(torch.cat(parts, -1)), dim=-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """batch: users [B], history [B, T], items [B]; for sampled losses negatives [N], negative_log_q [N],
        positive_log_q [B] (the sampler's log-probabilities)."""
        cfg, items = self.config, batch["items"]
        user, item = self.user_vectors(batch["users"], batch["history"]), self.item_vectors(items)
        parts = []
        if cfg.loss in ("in_batch", "mixed"):
            parts.append(in_batch_logits(user, item, items, self.log_q[items] if cfg.logq else None, cfg.temperature))
        else:  # sampled only: the positive is column 0
            positive = (user * item).sum(-1) / cfg.temperature
            parts.append((positive - batch["positive_log_q"] if cfg.logq else positive).unsqueeze(1))
        if cfg.loss in ("sampled", "mixed"):
            negatives = self.item_vectors(batch["negatives"])
            parts.append(
                sampled_logits(
                    user,
                    negatives,
                    batch["negatives"],
                    items,
                    batch["negative_log_q"] if cfg.logq else None,
                    cfg.temperature,
                )
            )
        logits = torch.cat(parts, 1)
        target = torch.arange(len(items), device=items.device) if cfg.loss != "sampled" else torch.zeros_like(items)
        return {"loss": F.cross_entropy(logits, target)}


def _feature_table(
    frame, key: str, num_rows: int, columns: list[str] | None, skip: set[str], config: TwoTowerConfig
) -> TokenTable | None:
    """Token bags of the chosen (or auto-detected) categorical columns; None when there are none."""
    if columns is None:
        columns = [c for c in frame.columns if c not in skip and is_categorical(frame, c, config.max_feature_ratio)]
    table = categorical_tokens(frame, key, num_rows, columns, config.feature_separator) if columns else None
    return table if table is not None and table.vocab else None


@register("retriever", "two_tower", config=TwoTowerConfig)
class TwoTower(Retriever):
    name = "two_tower"
    config: TwoTowerConfig

    def __init__(self, config: TwoTowerConfig | None = None) -> None:
        self.config = config or TwoTowerConfig()
        self.model: TwoTowerModel | None = None
        self.ann: AnnIndex | None = None
        self.train_result: TrainResult | None = None
        self.feature_columns: dict[str, list[str]] = {"item": [], "user": []}
        self._item_vectors: torch.Tensor | None = None  # [num_items + 1, D] cache, row 0 = zeros
        self._fitting = False

    # ---- training -----------------------------------------------------------------------------
    def fit(self, dataset: Dataset) -> TwoTower:
        cfg = self.config
        train = dataset.split_frame("train")
        if train.height == 0:
            raise DataError(f"{dataset.name}: the train split is empty; two_tower has nothing to learn from")
        tables = {
            "item": _feature_table(
                dataset.items,
                "item",
                dataset.num_items + 1,
                cfg.item_feature_columns,
                {"item", "raw_id", *dataset.text_fields},
                cfg,
            ),
            "user": _feature_table(
                dataset.users, "user", dataset.num_users + 1, cfg.user_feature_columns, {"user", "raw_id"}, cfg
            ),
        }
        self.feature_columns = {k: (t.columns if t else []) for k, t in tables.items()}
        shapes = {k: (len(t.vocab), t.weights.numel()) if t else None for k, t in tables.items()}
        seed_everything(cfg.train.seed)  # the initial weights too are a function of the seed
        model = TwoTowerModel(cfg, dataset.num_users, dataset.num_items, shapes["item"], shapes["user"])
        for bag, table in ((model.item_features, tables["item"]), (model.user_features, tables["user"])):
            if bag is not None:
                assert table is not None  # a bag is built only for a table
                bag.set_tokens(table)
        counts = dataset.item_popularity("train")
        model.log_q.copy_(torch.log(counts.clamp(min=1.0) / counts.sum()))
        model.log_q[0] = 0.0
        self.model, self.ann, self._fitting = model, None, True
        source = CallableBatchSource(
            train.height, self._collate(train, counts), cfg.train.batch_size, shuffle=True, seed=cfg.train.seed
        )
        has_valid = dataset.split_frame("valid").height > 0
        try:
            self.train_result = Trainer(
                model, cfg.train, source, self._evaluator(dataset) if has_valid else None, device=cfg.device
            ).fit()
        finally:
            self._fitting = False
        model.eval()
        self._item_vectors = None
        if cfg.serving == "faiss":
            self.build_index()
        return self

    def _collate(self, train, counts: torch.Tensor):
        """rows of the train frame -> batch for TwoTowerModel.loss (history = the user's earlier train rows)."""
        cfg = self.config
        users_np = train["user"].to_numpy().astype(np.int64)
        users, items = torch.from_numpy(users_np), torch.from_numpy(train["item"].to_numpy().astype(np.int64))
        first_row = torch.from_numpy(np.searchsorted(users_np, users_np, side="left"))  # frame sorted by user
        window = torch.arange(-cfg.max_history, 0)
        sampler = None
        if cfg.loss != "in_batch":
            sampler = (
                PopularitySampler(counts, cfg.sampler_alpha)
                if cfg.sampler == "popularity"
                else UniformSampler(len(counts) - 1)
            )
            sampler.generator = None  # draw from the global RNG, which the Trainer seeds and checkpoints

        def collate(rows: torch.Tensor) -> dict[str, torch.Tensor]:
            positions = rows.unsqueeze(1) + window  # [B, T]: the T rows before each example
            inside = positions >= first_row[rows].unsqueeze(1)
            batch = {
                "users": users[rows],
                "items": items[rows],
                "history": items[positions.clamp(min=0)].masked_fill(~inside, 0),
            }
            if sampler is not None:
                negatives = sampler.sample(1, cfg.num_negatives)[0]
                batch.update(
                    negatives=negatives,
                    negative_log_q=sampler.log_prob(negatives),
                    positive_log_q=sampler.log_prob(batch["items"]),
                )
            return batch

        return collate

    def _evaluator(self, dataset: Dataset):
        from recstack.eval.evaluator import evaluate_retriever

        monitor_k = int(self.config.train.monitor.split("@")[1]) if "@" in self.config.train.monitor else 10
        ks = tuple(sorted({10, 20, monitor_k}))

        def evaluate(_model: nn.Module) -> dict[str, float]:
            self._item_vectors = None  # the weights changed since the last evaluation
            return evaluate_retriever(self, dataset, "valid", ks=ks)

        return evaluate

    # ---- scoring ------------------------------------------------------------------------------
    def _require_model(self) -> TwoTowerModel:
        if self.model is None:
            raise DataError("two_tower: not fitted; call fit(dataset) or Retriever.load(path) first")
        return self.model

    @torch.no_grad()
    def item_vectors(self) -> torch.Tensor:
        """[num_items + 1, D] unit item vectors on the CPU (row 0 = padding = zeros), cached."""
        if self._item_vectors is None:
            model = self._require_model()
            device = model.log_q.device
            ids = torch.arange(model.item_embedding.num_embeddings, device=device)
            vectors = torch.cat([model.item_vectors(chunk) for chunk in ids.split(65536)]).cpu()
            vectors[0] = 0.0
            self._item_vectors = vectors
        return self._item_vectors

    @torch.no_grad()
    def user_vectors(self, batch: UserBatch) -> torch.Tensor:
        """[B, D] unit user vectors on the CPU, from the last `max_history` items of each history."""
        model = self._require_model()
        device = model.log_q.device
        history = batch.history.to_padded(self.config.max_history, align="right").long()
        return model.user_vectors(batch.users.long().to(device), history.to(device)).cpu()

    def score_all(self, batch: UserBatch) -> torch.Tensor:
        """[B, num_items + 1] exact dot products / temperature (column 0 = padding = -inf)."""
        scores = self.user_vectors(batch) @ self.item_vectors().T / self.config.temperature
        scores[:, 0] = float("-inf")
        return scores

    def retrieve(self, batch: UserBatch, k: int, exclude_history: bool = True) -> Candidates:
        if self.config.serving != "faiss" or self._fitting:  # validation during fit ranks exactly
            return super().retrieve(batch, k, exclude_history)
        index = self.ann if self.ann is not None else self.build_index()
        return ann_candidates(
            index, self.user_vectors(batch), batch, k, exclude_history, self.name, 1.0 / self.config.temperature
        )

    def build_index(self) -> AnnIndex:
        vectors = self.item_vectors()
        self.ann = AnnIndex(self.config.ann).build(vectors[1:], torch.arange(1, vectors.shape[0]))
        return self.ann

    # ---- persistence --------------------------------------------------------------------------
    def save_state(self, path: Path) -> dict:
        model = self._require_model()
        save_weights(model, path / "model.safetensors")
        for stale in (path / "ann.faiss", path / "ann.json"):
            stale.unlink(missing_ok=True)
        if self.ann is not None:
            self.ann.save(path, "ann")
        bags = {"item": model.item_features, "user": model.user_features}
        return {
            "num_users": model.num_users,
            "num_items": model.item_embedding.num_embeddings - 1,
            "feature_columns": self.feature_columns,
            "feature_shapes": {
                k: [b.bag.num_embeddings, b.token_ids.numel()] if b is not None else None for k, b in bags.items()
            },
        }

    def load_state(self, path: Path, meta: dict) -> None:
        shapes = meta["feature_shapes"]
        model = TwoTowerModel(self.config, meta["num_users"], meta["num_items"], shapes["item"], shapes["user"])
        load_weights(model, path / "model.safetensors")
        self.model = model.eval()
        self.feature_columns = meta.get("feature_columns", self.feature_columns)
        self._item_vectors = None
        self.ann = AnnIndex.load(path, "ann") if (path / "ann.faiss").is_file() else None
