"""The generative retriever: semantic IDs, training, beam-search retrieval, persistence.

GenerativeRetriever owns the SemanticIds: loaded from `semantic_ids: PATH` (a SemanticIds folder or
a `recstack sid fit` run folder holding sid/), or fitted in `fit()` from `sid_encoder` (a registered
item encoder, default collaborative SASRec embeddings: works on datasets without text) and
`sid_quantizer` (default rq_kmeans 3 x 256). Subclasses set `name` and implement `build_model`.
Training: the shared Trainer on GenerativeData, early stopping on valid recall@10 computed by beam
search over (a fixed sample of) the valid users. Retrieval: `retrieve(batch, k)` -> top-k items by
summed code log-probability; slots without a valid item are item 0 with score -inf (never padding or
duplicates as real items).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from recstack.data.batch import Candidates, UserBatch
from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.retrieval.base import Retriever
from recstack.retrieval.generative.base import GenerativeConfig, GenerativeModel, ModelShape
from recstack.semantic_ids.semantic_ids import SemanticIds
from recstack.train import Trainer, load_weights, save_weights, seed_everything


def load_semantic_ids(path: str | Path) -> SemanticIds:
    """A SemanticIds folder, or a run folder of `recstack sid fit` (its sid/ subfolder)."""
    path = Path(path).expanduser()
    if not (path / "semantic_ids.json").is_file() and (path / "sid" / "semantic_ids.json").is_file():
        path = path / "sid"
    if not path.is_dir():
        raise ConfigError(
            f"semantic_ids: {path} does not exist (expected a folder written by SemanticIds.save "
            "or by `recstack sid fit`)"
        )
    return SemanticIds.load(path)


def fit_semantic_ids(dataset: Dataset, encoder_spec: dict[str, Any], quantizer_spec: dict[str, Any]) -> SemanticIds:
    """Encode every item with a registered item encoder, fit a quantizer on rows 1..N, build SemanticIds."""
    import recstack.semantic_ids.encoders  # noqa: F401  (declares the item_encoder plugins)
    from recstack.registry import build
    from recstack.semantic_ids.encoders import encode_items

    encoder = build("item_encoder", dict(encoder_spec), where="sid_encoder")
    embeddings = encode_items(encoder, dataset)
    quantizer = build("quantizer", dict(quantizer_spec), where="sid_quantizer").fit(embeddings[1:])
    return SemanticIds.from_quantizer(quantizer, embeddings)


class GenerativeRetriever(Retriever):
    """Base class: subclasses set `name` and implement `build_model(shape) -> GenerativeModel`."""

    config: GenerativeConfig

    def __init__(self, config: GenerativeConfig) -> None:
        self.config = config
        self.sids: SemanticIds | None = None
        self.model: GenerativeModel | None = None
        self.shape: ModelShape | None = None
        self.event_names: list[str] = []  # names of event codes 1..E
        self.event_columns: list[str] = []  # the interaction columns they come from (data.py)
        self.result: Any = None
        self.seconds: dict[str, float] = {}
        self.last_decode: dict[str, float] = {}  # stats of the last retrieve / evaluate (invalid_share, ...)

    def build_model(self, shape: ModelShape) -> GenerativeModel:
        raise NotImplementedError

    # ---- training ------------------------------------------------------------------------------
    def fit(self, dataset: Dataset) -> GenerativeRetriever:
        from recstack.retrieval.generative.data import GenerativeData

        started = time.perf_counter()
        c = self.config
        self.sids = (
            load_semantic_ids(c.semantic_ids)
            if c.semantic_ids
            else fit_semantic_ids(dataset, c.sid_encoder, c.sid_quantizer)
        )
        if self.sids.num_items != dataset.num_items:
            raise DataError(
                f"semantic_ids cover {self.sids.num_items} items, dataset {dataset.name!r} has "
                f"{dataset.num_items}; fit them on this dataset"
            )
        sid_seconds = time.perf_counter() - started
        data = GenerativeData(dataset, self.sids, c.max_len, c.train_targets, c.event_labels)
        self.event_names, self.event_columns = data.event_names, data.event_columns
        self.shape = ModelShape(
            self.sids.codebook_sizes, dataset.num_items, dataset.num_users, len(self.event_names) + 1
        )
        seed_everything(c.train.seed)
        self.model = self.build_model(self.shape)
        if c.train_targets == "sequence" and not self.model.sequence_targets:
            raise ConfigError(
                f"{self.name}: train_targets 'sequence' needs a model that reads every prefix in one "
                "pass (tiger with encoder_attention: causal); use 'all' or 'last'"
            )
        users = data.eval_user_sample("valid", c.eval_users, c.train.seed)
        eval_seconds = [0.0]

        def evaluate(_: nn.Module) -> dict[str, float]:
            t0 = time.perf_counter()
            metrics = self.evaluate(dataset, "valid", (10, 20), users=users)
            eval_seconds[0] += time.perf_counter() - t0
            return {k: v for k, v in metrics.items() if k.split("@")[0] in ("recall", "ndcg")}

        t0 = time.perf_counter()
        self.result = Trainer(
            self.model, c.train, data.batch_source(c.train.batch_size, c.train.seed), evaluate=evaluate, device=c.device
        ).fit()
        total = time.perf_counter() - t0
        epochs = max(len(self.result.history), 1)
        self.seconds = {
            "semantic_ids": sid_seconds,
            "total": total,
            "eval": eval_seconds[0],
            "train_per_epoch": (total - eval_seconds[0]) / epochs,
            "epochs": float(epochs),
        }
        self.model.eval()
        return self

    @torch.no_grad()
    def evaluate(
        self, dataset: Dataset, split: str, ks: tuple[int, ...] = (5, 10, 20), users: torch.Tensor | None = None
    ) -> dict[str, float]:
        """Full-ranking top-K metrics of beam-search retrieval on `split` (history masked), optionally
        on a subset of its users. Batches carry the event label columns, so models see behaviours."""
        from recstack.eval.evaluator import TopKAccumulator

        all_users, targets = dataset.eval_users(split)
        if users is not None:
            keep = torch.isin(all_users, users)
            rows = torch.nonzero(keep).flatten()
            all_users, targets = all_users[rows], targets.select(rows)
        history = dataset.user_batch(all_users, before=split, features=("timestamp", *self.event_columns))
        acc = TopKAccumulator(ks, dataset.num_items)
        step = self.config.eval_batch_size
        shares = {"invalid_share": 0.0, "filled_share": 0.0}  # user-weighted sums over the batches
        for start in range(0, all_users.numel(), step):  # batches of users, each decoded in one call
            rows = torch.arange(start, min(start + step, all_users.numel()))
            acc.add(self.retrieve(history.select(rows), max(ks)).items, targets.select(rows))
            for key in shares:
                shares[key] += rows.numel() * self.last_decode[key]
        if all_users.numel():  # the whole evaluation's shares, not the last batch's
            self.last_decode = {key: total / all_users.numel() for key, total in shares.items()}
        return acc.result()

    # ---- retrieval -----------------------------------------------------------------------------
    def _require(self) -> tuple[GenerativeModel, SemanticIds]:
        if self.model is None or self.sids is None:
            raise DataError(f"{self.name}: not fitted; call fit(dataset) or Retriever.load(path) first")
        return self.model, self.sids

    def decode_batch(self, batch: UserBatch) -> dict[str, torch.Tensor]:
        """UserBatch -> the model's batch dict (no targets)."""
        from recstack.retrieval.generative.data import history_tensors

        _, sids = self._require()
        return history_tensors(batch, sids, self.config.max_len, self.event_columns)

    @torch.no_grad()
    def retrieve(self, batch: UserBatch, k: int, exclude_history: bool = True) -> Candidates:
        from recstack.retrieval.generative.beam_search import beam_search

        model, sids = self._require()
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        inputs = {key: value.to(device) for key, value in self.decode_batch(batch).items()}
        result = beam_search(
            model,
            inputs,
            sids.prefix_trie,
            k,
            self.config.beam_size,
            use_cache=self.config.use_cache,
            constrained=self.config.constrained,
            exclude=batch.history if exclude_history else None,
        )
        model.train(was_training)
        self.last_decode = {"invalid_share": result.invalid_share, "filled_share": result.filled_share}
        return Candidates.from_topk(result.items, result.scores, self.name)

    # ---- persistence ---------------------------------------------------------------------------
    def save_state(self, path: Path) -> dict:
        model, sids = self._require()
        sids.save(path / "sid")
        save_weights(model, path / "model.safetensors")
        assert self.shape is not None
        return {"shape": vars(self.shape), "event_names": self.event_names, "event_columns": self.event_columns}

    def load_state(self, path: Path, meta: dict) -> None:
        self.sids = SemanticIds.load(path / "sid")
        self.shape = ModelShape(**meta["shape"])
        self.event_names = list(meta.get("event_names", []))
        self.event_columns = list(meta.get("event_columns", []))
        self.model = self.build_model(self.shape)
        load_weights(self.model, path / "model.safetensors")
        self.model.to(self.config.device).eval()
