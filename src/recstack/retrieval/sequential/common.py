"""What SASRec and HSTU share: training windows, losses, scoring, fit with early stopping, save/load.

Training data: each user's train items (`dataset.sequences(before="valid")`), cut into right-aligned
windows of max_len + 1 items; the model reads items[:-1] and predicts items[1:] at every position.
Scoring: the hidden state of the last position · the item embedding table (tied input/output).
Losses (`loss`):
- "ce":              full softmax cross-entropy over all items (the strong SASRec reproductions).
- "sampled_softmax": softmax over the target + `num_negatives` shared sampled items, logQ-corrected.
- "bce":             binary cross-entropy with one uniform negative per position (original SASRec).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from recstack.data.batch import Candidates, UserBatch
from recstack.data.dataset import Dataset
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError, DataError
from recstack.nn.sequence_encoder import CausalSequenceEncoder
from recstack.retrieval.ann import AnnConfig, AnnIndex, ann_candidates
from recstack.retrieval.base import Retriever
from recstack.train import CallableBatchSource, TrainConfig, Trainer, load_weights, save_weights, seed_everything
from recstack.train.batches import epoch_permutation

EVAL_KS = (10, 20)


def _train_defaults() -> TrainConfig:
    """A short schedule that converges on Beauty / ML-1M in 20-30 epochs with full softmax (tuned on valid)."""
    return TrainConfig(
        epochs=30,
        batch_size=128,
        lr=2e-3,
        weight_decay=0.0,
        warmup_ratio=0.02,
        min_lr_ratio=0.05,
        patience=5,
        monitor="ndcg@10",
        progress=False,
    )


@dataclass
class SequentialConfig:
    """Fields shared by the sequential retrievers (each model adds its own).

    window_stride: None = one training window per user (the last max_len + 1 train items); k = also
                   windows ending k, 2k, ... items earlier, so long histories are used in full.
    train_on:      "train" (house protocol: early stopping on valid) or "train+valid": a refit for a
                   fixed number of epochs (e.g. the best epoch of a "train" run) whose targets include
                   the valid item, as in protocols without a validation split (Meta's HSTU code).
    """

    dim: int = 64
    max_len: int = 50
    dropout: float = 0.2
    loss: Literal["ce", "sampled_softmax", "bce"] = "ce"
    num_negatives: int = 128
    negative_sampler: Literal["uniform", "popularity"] = "uniform"
    temperature: float = 1.0  # logits are divided by it
    l2_normalize: bool = False  # cosine similarity between user state and item embedding
    scale_embedding: bool = True  # item embedding times sqrt(dim) at the input
    init_std: float = 0.02
    window_stride: int | None = None
    train_on: Literal["train", "train+valid"] = "train"
    bucket_by_length: bool = True  # batches of similar-length windows (less padding); order still seeded
    ce_chunk_rows: int | None = None  # rows per chunk of the fused full-softmax loss; None = ~2**19 / num_items
    ce_bfloat16: bool = False  # bfloat16 matmuls in that loss (AMX CPUs, GPUs); softmax stays float32
    eval_batch_size: int = 1024
    device: str = "cpu"
    serving: Literal["exact", "faiss"] = "exact"
    """retrieve() by exact scores over every item, or by a FAISS index over the item table (`ann`; built
    lazily on first use, not saved: it is rebuilt from the weights in about a second)"""
    ann: AnnConfig = field(default_factory=AnnConfig)
    train: TrainConfig = field(default_factory=_train_defaults)

    def __post_init__(self) -> None:
        for key in ("dim", "max_len", "num_negatives", "eval_batch_size"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be > 0, got {getattr(self, key)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature!r}")
        if self.window_stride is not None and self.window_stride <= 0:
            raise ConfigError(f"window_stride must be > 0 or null, got {self.window_stride!r}")


class TrainingWindows:
    """Windows of at most max_len + 1 consecutive train items per user, batched right-aligned without
    Python loops. A window is (start, end) into the flat item array; `stride` adds earlier windows."""

    def __init__(self, items: Jagged, timestamps: torch.Tensor | None, max_len: int, stride: int | None) -> None:
        self.items, self.timestamps, self.width = items.values.long(), timestamps, max_len + 1
        lengths = items.lengths()
        if stride is None:
            per_user = (lengths >= 2).long()
            stride = 1
        else:
            per_user = torch.div(lengths - 1 + stride - 1, stride, rounding_mode="floor").clamp(min=0)
        user = torch.repeat_interleave(torch.arange(lengths.numel()), per_user)
        first = torch.repeat_interleave(torch.cumsum(per_user, 0) - per_user, per_user)
        back = (torch.arange(user.numel()) - first) * stride  # 0 for the last window, stride, 2 stride, ...
        self.ends = items.offsets[user + 1] - back
        self.starts = torch.maximum(items.offsets[user], self.ends - self.width)
        if self.ends.numel() == 0:
            raise DataError("no user has two or more train items; a sequential model has nothing to learn")
        # Losses are sums over a batch's targets divided by this expectation (not by the batch's own
        # count), so every target weighs the same however batches are composed (length bucketing).
        self.mean_targets = float((self.ends - self.starts - 1).double().mean())

    @property
    def num_rows(self) -> int:
        return self.ends.numel()

    def gather(self, rows: torch.Tensor, values: torch.Tensor, width: int) -> torch.Tensor:
        """[B, width] right-aligned values of windows `rows` (0 on the left where a window is shorter)."""
        starts, ends = self.starts[rows], self.ends[rows]
        lengths = ends - starts
        out = torch.zeros(rows.numel(), width, dtype=values.dtype)
        row = torch.repeat_interleave(torch.arange(rows.numel()), lengths)
        within = torch.arange(int(lengths.sum())) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        out[row, width - lengths[row] + within] = values[starts[row] + within]
        return out

    def collate(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """rows [B] -> {"items": [B, T], "targets": [B, T] (0 = no target), "timestamps": [B, T]?,
        "target_count": the expected number of targets in B windows}.

        T = the longest window in the batch minus one (<= max_len): short-sequence datasets do not pay
        for max_len columns of padding. Outputs do not depend on the amount of left padding.
        """
        width = int((self.ends[rows] - self.starts[rows]).max())
        window = self.gather(rows, self.items, width)
        items = window[:, :-1]
        batch = {
            "items": items,
            "targets": window[:, 1:] * (items > 0),  # the first item is no target
            "target_count": torch.tensor(rows.numel() * self.mean_targets),
        }
        if self.timestamps is not None:
            batch["timestamps"] = self.gather(rows, self.timestamps, width)[:, :-1]
        return batch


class LengthBucketedBatchSource(CallableBatchSource):
    """CallableBatchSource whose batches hold windows of similar length, so little padding is computed.

    The epoch's shuffled shard is cut into groups of `group_batches` batches; each group is sorted by
    window length and cut into batches; then the order of the full batches is shuffled. Every step is
    a pure function of (seed, epoch, rank), like the parent's order.
    """

    def __init__(
        self, lengths: torch.Tensor, collate: Any, batch_size: int, seed: int = 0, group_batches: int = 32
    ) -> None:
        super().__init__(lengths.numel(), collate, batch_size, shuffle=True, seed=seed)
        self.lengths, self.group_batches = lengths, group_batches

    def shard(self, epoch: int, rank: int, world_size: int) -> torch.Tensor:
        rows = super().shard(epoch, rank, world_size)
        group = torch.arange(rows.numel()) // (self.batch_size * self.group_batches)
        rows = rows[torch.argsort(group * (int(self.lengths.max()) + 1) + self.lengths[rows], stable=True)]
        full = rows.numel() // self.batch_size
        order = epoch_permutation(full, self.seed + 1 + rank, epoch) if full else torch.zeros(0, dtype=torch.long)
        head = rows[: full * self.batch_size].view(full, self.batch_size)[order].reshape(-1)
        return torch.cat([head, rows[full * self.batch_size :]])


class _FusedLinearCrossEntropy(torch.autograd.Function):
    """sum_m CE(softmax(scale · states[m] @ tableᵀ), targets[m]) / divisor, computed in row chunks.

    The [M, N] logits never exist at once: each chunk's logits stay in cache and the gradients are
    accumulated in the forward pass (2-3x faster on CPU than logits + F.cross_entropy, far less
    memory). The two matmuls run in `compute_dtype`; softmax and gradient sums stay float32.
    """

    @staticmethod
    def forward(
        ctx,
        states: torch.Tensor,
        table: torch.Tensor,
        targets: torch.Tensor,
        scale: float,
        chunk: int,
        compute_dtype: torch.dtype,
        divisor: float,
    ) -> torch.Tensor:
        m, device = states.shape[0], states.device
        with torch.autocast(device.type, enabled=False):
            low_states, low_table = states.to(compute_dtype), table.to(compute_dtype)
            grad_states = torch.empty(states.shape, dtype=torch.float32, device=device)
            grad_table = torch.zeros(table.shape, dtype=torch.float32, device=device)
            total = torch.zeros((), dtype=torch.float32, device=device)
            for start in range(0, m, chunk):  # chunks of rows; each chunk is one vectorised block
                rows, target = low_states[start : start + chunk], targets[start : start + chunk]
                logits = (rows @ low_table.T).float().mul_(scale)
                lse = torch.logsumexp(logits, 1, keepdim=True)
                total += (lse[:, 0] - logits.gather(1, target[:, None])[:, 0]).sum()
                probs = logits.sub_(lse).exp_()
                probs[torch.arange(probs.shape[0], device=device), target] -= 1.0
                probs = probs.mul_(scale / divisor).to(compute_dtype)  # d loss / d logits
                grad_states[start : start + chunk] = probs @ low_table
                if compute_dtype == torch.float32:
                    grad_table.addmm_(probs.T, rows)
                else:
                    grad_table += (probs.T @ rows).float()
        ctx.save_for_backward(grad_states.to(states.dtype), grad_table.to(table.dtype))
        return total / divisor

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_states, grad_table = ctx.saved_tensors
        return grad_states * grad_output, grad_table * grad_output, None, None, None, None, None


def full_softmax_cross_entropy(
    states: torch.Tensor,
    table: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk: int | None = None,
    compute_dtype: torch.dtype = torch.float32,
    divisor: float | None = None,
) -> torch.Tensor:
    """Cross-entropy of states [M, D] against every row of table [N, D]; targets [M] in 0..N-1.

    Summed over the M rows and divided by `divisor` (default M: the mean).
    """
    chunk = chunk or max(16, min(1024, 2**19 // max(table.shape[0], 1)))
    divisor = float(divisor) if divisor is not None else float(max(states.shape[0], 1))
    return _FusedLinearCrossEntropy.apply(states, table, targets, 1.0 / temperature, chunk, compute_dtype, divisor)


class SequentialModel(nn.Module):
    """Encoder + tied item table + the training losses. `loss(batch)` follows the Trainer contract."""

    def __init__(
        self, encoder: CausalSequenceEncoder, config: SequentialConfig, item_counts: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        self.encoder, self.config = encoder, config
        self.num_items = encoder.item_embedding.num_embeddings - 1
        # Sampling probabilities for sampled softmax (None = uniform). Draws use the global torch RNG,
        # which the Trainer seeds and checkpoints, so a resumed run draws the same negatives.
        self.sample_probs: torch.Tensor | None = None
        if config.negative_sampler == "popularity" and item_counts is not None:
            weights = item_counts.double().clamp(min=0) ** 0.75  # word2vec-style smoothing
            weights[0] = 0.0
            self.sample_probs = (weights / weights.sum()).float()

    def _sample(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """n item ids in 1..num_items and their log-probabilities (None when uniform: logQ is constant)."""
        if self.sample_probs is None:
            return torch.randint(1, self.num_items + 1, (n,)).to(device), None
        items = torch.multinomial(self.sample_probs, n, replacement=True)
        return items.to(device), self.sample_probs.log()

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1, eps=1e-6) if self.config.l2_normalize else x

    def item_table(self) -> torch.Tensor:
        """[num_items + 1, D] output embeddings (row 0 = padding)."""
        return self._norm(self.encoder.item_embedding.weight)

    def user_states(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        """items [B, T] right-aligned -> [B, D], the state after the most recent item."""
        return self._norm(self.encoder(items, timestamps)[:, -1])

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = self._norm(self.encoder(batch["items"], batch.get("timestamps")))  # [B, T, D]
        targets = batch["targets"]
        keep = targets > 0
        states, targets = hidden[keep], targets[keep]  # [M, D], [M]
        table = self.item_table()
        temperature = self.config.temperature
        count = batch.get("target_count")
        divisor = float(count) if count is not None else float(max(targets.numel(), 1))
        if self.config.loss == "ce":
            # Over items 1..num_items: the padding row is no class.
            return {
                "loss": full_softmax_cross_entropy(
                    states,
                    table[1:],
                    targets - 1,
                    temperature,
                    self.config.ce_chunk_rows,
                    torch.bfloat16 if self.config.ce_bfloat16 else torch.float32,
                    divisor,
                )
            }
        if self.config.loss == "sampled_softmax":
            negatives, log_q = self._sample(self.config.num_negatives, states.device)  # [S], shared by rows
            pos = (states * table[targets]).sum(-1, keepdim=True) / temperature  # [M, 1]
            neg = states @ table[negatives].T / temperature  # [M, S]
            if log_q is not None:  # logQ correction: logit - log p(sampled)
                log_q = log_q.to(states.device)
                pos, neg = pos - log_q[targets].unsqueeze(1), neg - log_q[negatives].unsqueeze(0)
            neg = neg.masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))  # accidental hits
            logits = torch.cat([pos, neg], dim=1)
            return {"loss": F.cross_entropy(logits, torch.zeros_like(targets), reduction="sum") / divisor}
        negatives = torch.randint(1, self.num_items + 1, targets.shape).to(states.device)  # one per position
        negatives = torch.where(negatives == targets, negatives % self.num_items + 1, negatives)  # never the target
        pos = (states * table[targets]).sum(-1) / temperature
        neg = (states * table[negatives]).sum(-1) / temperature
        logits = torch.cat([pos, neg])
        labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
        return {"loss": F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / (2 * divisor)}


class SequentialRetriever(Retriever):
    """Base class: subclasses set `name` and implement `build_encoder(num_items, use_time)`."""

    config: SequentialConfig

    def __init__(self, config: SequentialConfig) -> None:
        self.config = config
        self.model: SequentialModel | None = None
        self.use_time = False
        self.result: Any = None  # TrainResult of the last fit
        self.seconds: dict[str, float] = {}
        self.ann: AnnIndex | None = None
        self._fitting = False  # validation during fit always ranks exactly

    def build_encoder(self, num_items: int, use_time: bool) -> CausalSequenceEncoder:
        raise NotImplementedError

    def wants_time(self, dataset: Dataset) -> bool:
        """Whether the model reads timestamps (HSTU's time bias on a dataset with real times)."""
        return False

    def _build(self, num_items: int, use_time: bool, item_counts: torch.Tensor | None = None) -> SequentialModel:
        self.use_time = use_time
        self.model = SequentialModel(self.build_encoder(num_items, use_time), self.config, item_counts)
        return self.model

    # ---- training ------------------------------------------------------------------------------
    def fit(self, dataset: Dataset) -> SequentialRetriever:
        use_time = self.wants_time(dataset)
        seed_everything(self.config.train.seed)  # the initial weights are part of the seeded run
        model = self._build(dataset.num_items, use_time, dataset.item_popularity("train"))
        refit = self.config.train_on == "train+valid"
        before = "test" if refit else "valid"
        items = dataset.sequences(before=before)
        times = dataset.sequences(before=before, column="timestamp").values.long() if use_time else None
        windows = TrainingWindows(items, times, self.config.max_len, self.config.window_stride)
        train = self.config.train
        if self.config.bucket_by_length:
            source: CallableBatchSource = LengthBucketedBatchSource(
                windows.ends - windows.starts, windows.collate, train.batch_size, seed=train.seed
            )
        else:
            source = CallableBatchSource(
                windows.num_rows, windows.collate, train.batch_size, shuffle=True, seed=train.seed
            )
        eval_seconds = [0.0]

        def evaluate(_: nn.Module) -> dict[str, float]:
            started = time.perf_counter()
            metrics = self._evaluate(dataset, "valid")
            eval_seconds[0] += time.perf_counter() - started
            return {k: v for k, v in metrics.items() if "@" in k and k.split("@")[0] in ("recall", "ndcg")}

        started = time.perf_counter()
        # Valid items are training targets in a refit, so nothing is left to stop on: all epochs run.
        self._fitting, self.ann = True, None  # new weights: any index of the old ones is stale
        try:
            self.result = Trainer(
                model, train, source, evaluate=None if refit else evaluate, device=self.config.device
            ).fit()
        finally:
            self._fitting = False
        total = time.perf_counter() - started
        epochs = max(len(self.result.history), 1)
        self.seconds = {
            "total": total,
            "eval": eval_seconds[0],
            "train_per_epoch": (total - eval_seconds[0]) / epochs,
            "epochs": float(epochs),
        }
        model.eval()
        return self

    def _evaluate(self, dataset: Dataset, split: str) -> dict[str, float]:
        from recstack.eval.evaluator import evaluate_retriever  # eval imports no stage; stages may import eval

        return evaluate_retriever(self, dataset, split, EVAL_KS, batch_size=self.config.eval_batch_size)

    # ---- scoring -------------------------------------------------------------------------------
    def _require_model(self) -> SequentialModel:
        if self.model is None:
            raise DataError(f"{self.name}: not fitted; call fit(dataset) or Retriever.load(path) first")
        return self.model

    @torch.no_grad()
    def user_embeddings(self, batch: UserBatch, chunk: int = 256) -> torch.Tensor:
        """[B, D] state after each user's last history item (the query vector for MIPS / FAISS).

        Users are sorted by history length and encoded in chunks trimmed to their own longest history,
        so a batch with a few long histories does not pad everyone to max_len.
        """
        model = self._require_model()
        device = model.encoder.item_embedding.weight.device
        history = batch.history.last(self.config.max_len)
        stamps = None
        if self.use_time:
            raw = batch.history_features.get("timestamp")
            if raw is None:
                raise DataError(f"{self.name}: the model uses time gaps but the batch has no 'timestamp' feature")
            stamps = Jagged(raw.long(), batch.history.offsets).last(self.config.max_len)
        was_training = model.training
        model.eval()
        states = torch.zeros(len(batch), self.config.dim, device=device)
        order = torch.argsort(history.lengths(), stable=True)
        for start in range(0, len(batch), chunk):  # chunks of users, each one vectorised call
            rows = order[start : start + chunk]
            part = history.select(rows)
            width = max(int(part.lengths().max()), 1)
            timestamps = stamps.select(rows).to_padded(width).to(device) if stamps is not None else None
            states[rows.to(device)] = model.user_states(part.to_padded(width).long().to(device), timestamps)
        model.train(was_training)
        return states

    def retrieve(self, batch: UserBatch, k: int, exclude_history: bool = True) -> Candidates:
        if self.config.serving != "faiss" or self._fitting:
            return super().retrieve(batch, k, exclude_history)
        if self.ann is None:
            table = self._require_model().item_table().detach().float().cpu()
            self.ann = AnnIndex(self.config.ann).build(table[1:], torch.arange(1, table.shape[0]))
        queries = self.user_embeddings(batch).float().cpu()
        return ann_candidates(self.ann, queries, batch, k, exclude_history, self.name, 1.0 / self.config.temperature)

    @torch.no_grad()
    def score_all(self, batch: UserBatch) -> torch.Tensor:
        """[B, num_items + 1] = user embedding · item table / temperature; column 0 = -inf."""
        model = self._require_model()
        scores = self.user_embeddings(batch) @ model.item_table().T / self.config.temperature
        scores[:, 0] = float("-inf")
        return scores.float().cpu()

    # ---- persistence ---------------------------------------------------------------------------
    def save_state(self, path: Path) -> dict:
        model = self._require_model()
        save_weights(model, path / "model.safetensors")
        return {"num_items": model.encoder.item_embedding.num_embeddings - 1, "use_time": self.use_time}

    def load_state(self, path: Path, meta: dict) -> None:
        model = self._build(int(meta["num_items"]), bool(meta.get("use_time", False)))
        load_weights(model, path / "model.safetensors")
        model.to(self.config.device).eval()
