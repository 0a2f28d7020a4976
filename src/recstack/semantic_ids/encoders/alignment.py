"""QARM item alignment: make content embeddings agree with behaviour before they are quantized.

QARM v1 (Kuaishou, arXiv 2411.11739, METHODS.md §1.6) and QARM V2 (arXiv 2602.08559, §2.15) fine-tune
the LLM item embedding with an in-batch contrastive loss on Item2Item pairs mined by Swing, so that
items bought together end up close ("representation unmatch"). We keep the encoder frozen and train
a projection on top of its vectors:

    z = normalize(x + MLP(x))          (residual=True; MLP's last layer starts at zero, so z starts = x)
    L = ½ CE(z_a · z_b^T / τ) + ½ CE(z_b · z_a^T / τ)    over a batch of B Swing pairs (a_i, b_i)
        (in-batch softmax [B, B], positives on the diagonal; a column holding the row's own
         positive or anchor item again is masked out, it is no negative)

Pairs: Swing (recstack.retrieval.swing) on the train split; every item's top `per_item` neighbours
with score >= `min_score`, as unordered pairs, optionally the `max_pairs` best. Our interpretations [I]:
a frozen encoder + residual MLP projection instead of fine-tuning the LLM; no LLM pair filter
(QARM V2's Qwen3 filter) and no User2Item pairs (yet); the symmetric loss. Each is a config key.

`align_embeddings(x [N + 1, D], pairs [P, 2])` -> ([N + 1, D'], report). The "aligned" encoder wraps
any other encoder (default "text") with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recstack.config import from_dict
from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.nn.mlp import MLP
from recstack.registry import build, register
from recstack.retrieval.swing import Swing, SwingConfig
from recstack.semantic_ids.encoders import ItemEncoder, encode_items
from recstack.semantic_ids.encoders.cache import EmbeddingCache, digest, frame_digest
from recstack.train import TrainConfig, Trainer, seed_everything


@dataclass
class SwingPairsConfig:
    per_item: int = 10  # top Swing neighbours taken per item
    min_score: float = 0.0  # keep pairs with Swing score >= this
    max_pairs: int | None = None  # keep only the best-scored pairs; None = all
    swing: dict[str, Any] = field(default_factory=dict)  # SwingConfig options (alpha, beta, ...)

    def __post_init__(self) -> None:
        if self.per_item < 1:
            raise ConfigError(f"pairs.per_item must be >= 1, got {self.per_item}")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ConfigError(f"pairs.max_pairs must be >= 1 or null, got {self.max_pairs}")


def _align_train() -> TrainConfig:
    return TrainConfig(
        epochs=20,
        batch_size=256,
        lr=1e-3,
        weight_decay=0.0,
        warmup_ratio=0.0,
        min_lr_ratio=0.1,
        patience=0,
        progress=False,
        seed=0,
    )


@dataclass
class AlignmentConfig:
    hidden: list[int] = field(default_factory=lambda: [512])
    out_dim: int | None = None  # None = the input dimension (required when residual)
    residual: bool = True  # z = x + MLP(x): starts as the identity, keeps the text meaning
    normalize_input: bool = True  # L2-normalise x first
    temperature: float = 0.1
    symmetric: bool = True  # average the a->b and b->a losses
    dropout: float = 0.0
    uniformity_weight: float = 0.0  # + w · log E exp(-2|z_i - z_j|²) over the batch (Wang & Isola 2020)
    pairs: SwingPairsConfig = field(default_factory=SwingPairsConfig)
    train: TrainConfig = field(default_factory=_align_train)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"alignment.temperature must be > 0, got {self.temperature}")


def swing_pairs(dataset: Dataset, config: SwingPairsConfig | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Unordered co-engagement pairs [P, 2] (a < b, best Swing score first) and their counts."""
    config = config or SwingPairsConfig()
    swing_config = from_dict(SwingConfig, {"neighbours": config.per_item, **config.swing}, "pairs.swing")
    neighbours = Swing(swing_config).fit(dataset).neighbours
    assert neighbours is not None  # set by fit
    table = neighbours.tocoo()
    rows, cols, scores = table.row.astype(np.int64), table.col.astype(np.int64), table.data.astype(np.float64)
    above = scores >= config.min_score
    low, high = np.minimum(rows[above], cols[above]), np.maximum(rows[above], cols[above])
    keys, first = np.unique(low * table.shape[0] + high, return_index=True)  # sim is symmetric: one per pair
    pair_scores = scores[above][first]
    order = np.argsort(-pair_scores, kind="stable")
    if config.max_pairs is not None:
        order = order[: config.max_pairs]
    pairs = np.stack([keys[order] // table.shape[0], keys[order] % table.shape[0]], axis=1)
    report = {
        "swing_entries": int(table.nnz),
        "above_threshold": int(above.sum()),
        "pairs": len(pairs),
        "items_in_pairs": int(np.unique(pairs).size),
        "items": dataset.num_items,
        "min_score": config.min_score,
        "per_item": config.per_item,
        "min_pair_score": float(pair_scores[order].min()) if len(order) else 0.0,
    }
    if len(pairs) == 0:
        raise DataError(
            f"{dataset.name}: Swing found no item pairs with score >= {config.min_score} "
            f"({table.nnz} neighbour entries); lower pairs.min_score, or check that users share items"
        )
    return torch.from_numpy(pairs), report


class AlignmentProjection(nn.Module):
    """inputs [N + 1, D] (a fixed buffer) -> unit vectors [*, D']; `loss` follows the Trainer contract."""

    inputs: torch.Tensor

    def __init__(self, inputs: torch.Tensor, config: AlignmentConfig) -> None:
        super().__init__()
        dim = inputs.shape[1]
        out_dim = config.out_dim or dim
        if config.residual and out_dim != dim:
            raise ConfigError(
                f"alignment.residual needs out_dim = input dim ({dim}), got {out_dim}; "
                "set residual: false to change the dimension"
            )
        self.config = config
        self.register_buffer("inputs", inputs, persistent=False)
        self.mlp = MLP(dim, config.hidden, out_dim, activation="gelu", dropout=config.dropout)
        if config.residual:
            last = cast(nn.Linear, self.mlp.layers[-1])
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mlp(x)
        return F.normalize(x + h if self.config.residual else h, dim=-1, eps=1e-8)

    def project_items(self, items: torch.Tensor) -> torch.Tensor:
        """items [B] ids -> [B, D'] unit vectors."""
        return self(self.inputs[items])

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        anchors, positives = batch["left"], batch["right"]  # [B], [B]
        za, zb = self.project_items(anchors), self.project_items(positives)
        target = torch.arange(len(anchors), device=anchors.device)
        loss = F.cross_entropy(_masked_logits(za @ zb.T, anchors, positives) / self.config.temperature, target)
        if self.config.symmetric:
            back = F.cross_entropy(_masked_logits(zb @ za.T, positives, anchors) / self.config.temperature, target)
            loss = 0.5 * (loss + back)
        if self.config.uniformity_weight > 0:
            z = torch.cat([za, zb])
            uniformity = torch.pdist(z).pow(2).mul(-2).exp().mean().log()
            return {
                "loss": loss + self.config.uniformity_weight * uniformity,
                "contrastive": loss.detach(),
                "uniformity": uniformity.detach(),
            }
        return {"loss": loss}


def _masked_logits(logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """logits [B, B] of row item rows_i vs column item cols_j; off-diagonal columns holding the row's
    positive (cols_i) or the row's own item (rows_i) are no negatives -> -inf."""
    fake = (cols.unsqueeze(0) == cols.unsqueeze(1)) | (cols.unsqueeze(0) == rows.unsqueeze(1))
    fake.fill_diagonal_(False)
    return logits.masked_fill(fake, float("-inf"))


def _mean_cosine(vectors: torch.Tensor, pairs: torch.Tensor) -> float:
    return float(F.cosine_similarity(vectors[pairs[:, 0]], vectors[pairs[:, 1]], dim=1).mean())


def pair_recall(vectors: torch.Tensor, pairs: torch.Tensor, k: int = 10, chunk: int = 1024) -> float:
    """Share of pairs (a, b) whose b is among a's k nearest items by cosine (a itself and padding left out).
    vectors [N + 1, D]; pairs [P, 2]. Unlike mean cosines, blind to a direction shared by all items."""
    unit = F.normalize(vectors.float(), dim=1, eps=1e-8)
    hits = 0
    for start in range(0, len(pairs), chunk):  # blocks of pairs: [chunk, N + 1] scores at a time
        a, b = pairs[start : start + chunk, 0], pairs[start : start + chunk, 1]
        scores = unit[a] @ unit.T
        scores[:, 0] = float("-inf")
        scores[torch.arange(len(a)), a] = float("-inf")
        partner = scores[torch.arange(len(a)), b].unsqueeze(1)
        hits += int(((scores > partner).sum(1) < k).sum())
    return hits / max(len(pairs), 1)


@torch.no_grad()
def _project_all(model: AlignmentProjection, chunk: int = 65536) -> torch.Tensor:
    model.eval()
    ids = torch.arange(model.inputs.shape[0], device=model.inputs.device)
    out = torch.cat([model.project_items(part) for part in ids.split(chunk)]).float().cpu()
    out[0] = 0.0
    return out


def align_embeddings(
    embeddings: torch.Tensor, pairs: torch.Tensor, config: AlignmentConfig | None = None
) -> tuple[torch.Tensor, dict[str, Any]]:
    """embeddings [N + 1, D] (row 0 padding), pairs [P, 2] item ids -> aligned [N + 1, D'] and a report:
    loss per epoch; mean cosine of the pairs and of random pairs, and pair recall@10 (on up to 10k of
    the training pairs, so in-sample), before and after."""
    config = config or AlignmentConfig()
    pairs = pairs.long()
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.numel() == 0:
        raise DataError(f"alignment: pairs must be a non-empty [P, 2] tensor, got {tuple(pairs.shape)}")
    if int(pairs.min()) < 1 or int(pairs.max()) >= embeddings.shape[0]:
        raise DataError(f"alignment: pair item ids must lie in 1..{embeddings.shape[0] - 1}")
    inputs = embeddings.detach().float().cpu().clone()
    if config.normalize_input:
        inputs = F.normalize(inputs, dim=1, eps=1e-8)
    inputs[0] = 0.0
    generator = torch.Generator().manual_seed(config.train.seed)
    random_pairs = torch.randint(1, inputs.shape[0], (min(max(len(pairs), 1000), 100_000), 2), generator=generator)
    eval_pairs = pairs[torch.randperm(len(pairs), generator=generator)[:10_000]]
    seed_everything(config.train.seed)  # the initial weights are part of the seeded run
    model = AlignmentProjection(inputs, config)
    result = Trainer(model, config.train, {"left": pairs[:, 0], "right": pairs[:, 1]}, device=config.device).fit()
    aligned = _project_all(model)
    losses = [float(epoch["train"]["loss"]) for epoch in result.history]
    report = {
        "epochs": len(losses),
        "loss_first_epoch": losses[0] if losses else None,
        "loss_last_epoch": losses[-1] if losses else None,
        "train_pairs": len(pairs),
        "pair_cosine_before": _mean_cosine(inputs, pairs),
        "pair_cosine_after": _mean_cosine(aligned, pairs),
        "random_cosine_before": _mean_cosine(inputs, random_pairs),
        "random_cosine_after": _mean_cosine(aligned, random_pairs),
        "pair_recall@10_before": pair_recall(inputs, eval_pairs),
        "pair_recall@10_after": pair_recall(aligned, eval_pairs),
        "loss_history": losses,
    }
    return aligned, report


@dataclass
class AlignedEncoderConfig:
    base: dict[str, Any] = field(default_factory=lambda: {"name": "text"})  # the encoder whose vectors are aligned
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)


@register("item_encoder", "aligned", config=AlignedEncoderConfig)
class AlignedEncoder(ItemEncoder):
    """Any encoder's vectors, aligned with Swing co-engagement (QARM item alignment)."""

    name = "aligned"
    config: AlignedEncoderConfig

    def __init__(self, config: AlignedEncoderConfig | None = None, base: ItemEncoder | None = None) -> None:
        super().__init__()
        self.config = config or AlignedEncoderConfig()
        self.base = base if base is not None else build("item_encoder", self.config.base, where="aligned.base")

    def model_id(self) -> str:
        return f"aligned-{self.base.model_id()}"

    def fingerprint(self, dataset: Dataset) -> str:
        key = self.base.cache_key(dataset)
        return digest(
            key.encoder, key.model_id, key.digest, frame_digest(dataset.split_frame("train"), ["user", "item"])
        )

    def encode(self, dataset: Dataset, cache: EmbeddingCache | None = None) -> torch.Tensor:
        base = encode_items(self.base, dataset, cache if cache is not None else False)
        pairs, pair_report = swing_pairs(dataset, self.config.alignment.pairs)
        aligned, report = align_embeddings(base, pairs, self.config.alignment)
        self.stats = {"base": dict(self.base.stats), "pairs": pair_report, "alignment": report}
        return aligned
