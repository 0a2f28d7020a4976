"""Generative retrieval over semantic IDs: the model interface, the shared config and the retriever.

A generative retriever writes the next item's semantic ID (its code tuple, SemanticIds.codes row:
C = L + 1 codes including the de-duplication level) one code at a time and decodes with a beam
search constrained by the SemanticIds prefix trie (beam_search.py), so every returned tuple is an item.

The batch dict (data.py builds it for training; `GenerativeRetriever.decode_batch` for retrieval).
Rows are right-aligned: the most recent history item sits in column T-1, padding on the left.
    "history_items"  [B, T] long   item ids, 0 = padding.
    "history_codes"  [B, T, C] long codes of those items (SemanticIds.codes rows); padding rows are all
                     0, which is also a real code: always read them together with "history_mask".
    "history_mask"   [B, T] bool   True = a real history item.
    "history_events" [B, T] long   behaviour type per history item: 0 = padding or a plain interaction
                     (no behaviour label), e >= 1 = behaviour e (GenerativeData.event_names[e - 1]);
                     see data.py for how labels map to codes.
    "users"          [B] long      user ids (0 = unknown user).
    "target_items"   [B] long      the item to predict (training only).
    "target_codes"   [B, C] long   its code tuple (training only).

The model interface (one architecture per file, e.g. tiger.py, onemall.py):

    class MyModel(GenerativeModel):
        loss(batch) -> {"loss": scalar, ...extra logged scalars}    # teacher-forced next-code CE
        begin(batch) -> DecodeState            # encode each user's context once; R = B rows
        step(state, prefix [R, l], use_cache) -> (log_probs [R, codebook_sizes[l]], state)
            # prefix: the codes already chosen for levels 0..l-1 (l = 0..C-1); the answer is the
            # log-distribution of the level-l code. use_cache=True: `state` carries the KV cache of the
            # earlier steps and only the newest code (prefix[:, -1]) is run; use_cache=False: the
            # whole prefix is re-run from `begin`'s state (reference path; the two must agree).
        reorder(state, rows [R']) -> DecodeState   # keep / repeat beam rows (default: index every tensor)

Rows are user-major: R = U x b (b = 1 after `begin`, the beam count later) and rows u*b .. u*b+b-1
belong to user u; `reorder` never mixes users. DecodeState is a dict of tensors (or lists / tuples of
tensors) whose first dimension is R, except the entry "per_user" (anything, first dimension U): the
default `reorder` index-selects everything else and leaves "per_user" alone, so per-user context
(encoder memory, cross-attention keys) is stored once and never copied per beam.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from recstack.data.batch import Candidates, UserBatch
from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.retrieval.base import Retriever
from recstack.semantic_ids.semantic_ids import SemanticIds
from recstack.train import Trainer, TrainConfig, load_weights, save_weights, seed_everything

DecodeState = dict[str, Any]


def reorder_state(state: Any, rows: torch.Tensor) -> Any:
    """Index dim 0 of every tensor in a (nested) dict / list / tuple with rows [R']; others unchanged."""
    if isinstance(state, torch.Tensor):
        return state.index_select(0, rows.to(state.device)) if state.dim() else state
    if isinstance(state, dict):
        return {key: reorder_state(value, rows) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(reorder_state(value, rows) for value in state)
    return state


class GenerativeModel(nn.Module):
    """Base of the models over semantic IDs. codebook_sizes: C entries (SemanticIds.codebook_sizes)."""

    def __init__(self, codebook_sizes: list[int]) -> None:
        super().__init__()
        self.codebook_sizes = list(codebook_sizes)

    @property
    def sequence_targets(self) -> bool:
        """True when `loss` accepts train_targets="sequence" batches (a target per history column)."""
        return False

    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def begin(self, batch: dict[str, torch.Tensor]) -> DecodeState:
        raise NotImplementedError

    def step(self, state: DecodeState, prefix: torch.Tensor, use_cache: bool = True
             ) -> tuple[torch.Tensor, DecodeState]:
        raise NotImplementedError

    def reorder(self, state: DecodeState, rows: torch.Tensor) -> DecodeState:
        """Index every row-aligned entry with rows [R'] (user-major); "per_user" is kept as is."""
        out = reorder_state({key: value for key, value in state.items() if key != "per_user"}, rows)
        if "per_user" in state:
            out["per_user"] = state["per_user"]
        return out


@dataclass
class ModelShape:
    """What a model is built from besides its config: the code tuple and the catalogue sizes."""

    codebook_sizes: list[int]
    num_items: int
    num_users: int
    num_events: int  # event codes 0..num_events-1 (0 = plain / padding)


def _train_defaults() -> TrainConfig:
    return TrainConfig(epochs=50, batch_size=256, lr=1e-3, weight_decay=0.01, warmup_ratio=0.02,
                       min_lr_ratio=0.05, patience=5, monitor="recall@10", progress=False)


@dataclass
class GenerativeConfig:
    """Fields every generative retriever shares (each model adds its own).

    semantic_ids:   SemanticIds folder (or `recstack sid fit` run folder with sid/); None = fit in fit().
    sid_encoder / sid_quantizer: registry specs used when semantic_ids is None.
    max_len:        history items read per user (the most recent ones).
    train_targets:  "all" = one sample per train position (every prefix predicts its next item, the
                    sliding-window augmentation of TIGER reproductions); "last" = the last train item only;
                    "sequence" = the same targets as "all", read in one pass per window of max_len items
                    (only models that declare `sequence_targets`, e.g. TIGER with a causal encoder).
    event_labels:   label columns that define history_events (None = every binary label column).
    beam_size:      beams per user while decoding (at least k is used; see beam_search.py).
    use_cache:      KV cache during decoding (same beams, faster).
    constrained:    trie-constrained decoding; False = free decoding (ablation: invalid tuples are
                    dropped and counted in `last_decode["invalid_share"]`).
    eval_users:     valid users sampled (seeded) for early stopping; None = all of them.
    """

    semantic_ids: str | None = None
    sid_encoder: dict[str, Any] = field(default_factory=lambda: {"name": "collab"})
    sid_quantizer: dict[str, Any] = field(default_factory=lambda: {"name": "rq_kmeans", "levels": 3,
                                                                   "codebook_size": 256})
    max_len: int = 20
    train_targets: Literal["all", "last", "sequence"] = "all"
    event_labels: list[str] | None = None
    beam_size: int = 20
    use_cache: bool = True
    constrained: bool = True
    eval_users: int | None = 4096
    eval_batch_size: int = 256
    device: str = "cpu"
    train: TrainConfig = field(default_factory=_train_defaults)

    def __post_init__(self) -> None:
        for key in ("max_len", "beam_size", "eval_batch_size"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)!r}")
        if self.train_targets not in ("all", "last", "sequence"):
            raise ConfigError(f"train_targets must be 'all', 'last' or 'sequence', got {self.train_targets!r}")
        if self.eval_users is not None and self.eval_users <= 0:
            raise ConfigError(f"eval_users must be > 0 or null, got {self.eval_users!r}")
        for key in ("sid_encoder", "sid_quantizer"):
            if "name" not in getattr(self, key):
                raise ConfigError(f"{key} must name a registered component (a 'name' key), got {getattr(self, key)!r}")


def load_semantic_ids(path: str | Path) -> SemanticIds:
    """A SemanticIds folder, or a run folder of `recstack sid fit` (its sid/ subfolder)."""
    path = Path(path).expanduser()
    if not (path / "semantic_ids.json").is_file() and (path / "sid" / "semantic_ids.json").is_file():
        path = path / "sid"
    if not path.is_dir():
        raise ConfigError(f"semantic_ids: {path} does not exist (expected a folder written by SemanticIds.save "
                          "or by `recstack sid fit`)")
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
        self.event_names: list[str] = []    # names of event codes 1..E
        self.event_columns: list[str] = []  # the interaction columns they come from (data.py)
        self.result: Any = None
        self.seconds: dict[str, float] = {}
        self.last_decode: dict[str, float] = {}  # stats of the last retrieve / evaluate (invalid_share, ...)

    def build_model(self, shape: ModelShape) -> GenerativeModel:
        raise NotImplementedError

    # ---- training ------------------------------------------------------------------------------
    def fit(self, dataset: Dataset) -> "GenerativeRetriever":
        from recstack.retrieval.generative.data import GenerativeData

        started = time.perf_counter()
        c = self.config
        self.sids = load_semantic_ids(c.semantic_ids) if c.semantic_ids else \
            fit_semantic_ids(dataset, c.sid_encoder, c.sid_quantizer)
        if self.sids.num_items != dataset.num_items:
            raise DataError(f"semantic_ids cover {self.sids.num_items} items, dataset {dataset.name!r} has "
                            f"{dataset.num_items}; fit them on this dataset")
        sid_seconds = time.perf_counter() - started
        data = GenerativeData(dataset, self.sids, c.max_len, c.train_targets, c.event_labels)
        self.event_names, self.event_columns = data.event_names, data.event_columns
        self.shape = ModelShape(self.sids.codebook_sizes, dataset.num_items, dataset.num_users,
                                len(self.event_names) + 1)
        seed_everything(c.train.seed)
        self.model = self.build_model(self.shape)
        if c.train_targets == "sequence" and not self.model.sequence_targets:
            raise ConfigError(f"{self.name}: train_targets 'sequence' needs a model that reads every prefix in one "
                              "pass (tiger with encoder_attention: causal); use 'all' or 'last'")
        users = data.eval_user_sample("valid", c.eval_users, c.train.seed)
        eval_seconds = [0.0]

        def evaluate(_: nn.Module) -> dict[str, float]:
            t0 = time.perf_counter()
            metrics = self.evaluate(dataset, "valid", (10, 20), users=users)
            eval_seconds[0] += time.perf_counter() - t0
            return {k: v for k, v in metrics.items() if k.split("@")[0] in ("recall", "ndcg")}

        t0 = time.perf_counter()
        self.result = Trainer(self.model, c.train, data.batch_source(c.train.batch_size, c.train.seed),
                              evaluate=evaluate, device=c.device).fit()
        total = time.perf_counter() - t0
        epochs = max(len(self.result.history), 1)
        self.seconds = {"semantic_ids": sid_seconds, "total": total, "eval": eval_seconds[0],
                        "train_per_epoch": (total - eval_seconds[0]) / epochs, "epochs": float(epochs)}
        self.model.eval()
        return self

    @torch.no_grad()
    def evaluate(self, dataset: Dataset, split: str, ks: tuple[int, ...] = (5, 10, 20),
                 users: torch.Tensor | None = None) -> dict[str, float]:
        """Full-ranking top-K metrics of beam-search retrieval on `split` (history masked), optionally
        on a subset of its users. Batches carry the event label columns, so models see behaviours."""
        from recstack.eval.evaluator import TopKAccumulator
        all_users, targets = dataset.eval_users(split)
        if users is not None:
            keep = torch.isin(all_users, users)
            rows = torch.nonzero(keep).flatten()
            all_users, targets = all_users[rows], targets.select(rows)
        history = dataset.user_batch(all_users, before=split,
                                     features=("timestamp", *self.event_columns))
        acc = TopKAccumulator(ks, dataset.num_items)
        step = self.config.eval_batch_size
        decode_stats = torch.zeros(2, dtype=torch.float64)  # user-weighted sums of invalid / filled share
        for start in range(0, all_users.numel(), step):  # batches of users, each decoded in one call
            rows = torch.arange(start, min(start + step, all_users.numel()))
            acc.add(self.retrieve(history.select(rows), max(ks)).items, targets.select(rows))
            decode_stats += rows.numel() * torch.tensor([self.last_decode["invalid_share"],
                                                         self.last_decode["filled_share"]], dtype=torch.float64)
        if all_users.numel():  # the whole evaluation's shares, not the last batch's
            invalid, filled = (decode_stats / all_users.numel()).tolist()
            self.last_decode = {"invalid_share": invalid, "filled_share": filled}
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
        result = beam_search(model, inputs, sids.prefix_trie, k, self.config.beam_size,
                             use_cache=self.config.use_cache, constrained=self.config.constrained,
                             exclude=batch.history if exclude_history else None)
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
