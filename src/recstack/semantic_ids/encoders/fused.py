"""Fused item encoder: content and behaviour in one vector (e.g. text ⊕ collaborative).

mode="concat":      z = normalize([w_1 · x_1/|x_1|, ..., w_P · x_P/|x_P|])  ([N + 1, Σ D_p])
                    Each part is L2-normalised first, so no part dominates through its scale; then
                    cos(z_i, z_j) = Σ_p w_p² cos_p(i, j) / Σ_p w_p²: the weights set how much each
                    part's similarity counts (`normalize_output`=False drops the outer normalize).
mode="projection":  the concatenation above through a learned projection (alignment.py's residual
                    MLP or, with residual: false, a plain MLP to `projection.out_dim`), trained with
                    InfoNCE on Swing co-engagement pairs, the QARM alignment objective (METHODS.md §1.6).
                    [I] our choice of training signal for "learned fusion".

Parts are any registered item encoders, each read through the embedding cache on its own, so a
cached text part is not recomputed when only the collaborative part changes.
Output: Tensor[num_items + 1, D] float32, row 0 = zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError
from recstack.registry import build, register
from recstack.semantic_ids.encoders import ItemEncoder, encode_items
from recstack.semantic_ids.encoders.alignment import AlignmentConfig, align_embeddings, swing_pairs
from recstack.semantic_ids.encoders.cache import EmbeddingCache, digest, frame_digest


@dataclass
class FusedEncoderConfig:
    parts: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "text"}, {"name": "collab"}])
    weights: list[float] | None = None  # one per part; None = all 1
    mode: Literal["concat", "projection"] = "concat"
    normalize_output: bool = True
    projection: AlignmentConfig = field(default_factory=AlignmentConfig)  # mode="projection" only

    def __post_init__(self) -> None:
        if not self.parts:
            raise ConfigError("fused.parts: name at least one encoder")
        if self.weights is not None:
            if len(self.weights) != len(self.parts):
                raise ConfigError(f"fused.weights has {len(self.weights)} entries for {len(self.parts)} parts")
            if any(w < 0 for w in self.weights) or not any(w > 0 for w in self.weights):
                raise ConfigError(f"fused.weights must be >= 0 with one > 0, got {self.weights}")


def concat_normalized(
    parts: list[torch.Tensor], weights: list[float] | None = None, normalize_output: bool = True
) -> torch.Tensor:
    """parts: [N + 1, D_p] each -> [N + 1, Σ D_p], each part L2-normalised and scaled by its weight."""
    weights = weights or [1.0] * len(parts)
    fused = torch.cat([w * F.normalize(p.float(), dim=1, eps=1e-8) for w, p in zip(weights, parts)], dim=1)
    return F.normalize(fused, dim=1, eps=1e-8) if normalize_output else fused


@register("item_encoder", "fused", config=FusedEncoderConfig)
class FusedEncoder(ItemEncoder):
    name = "fused"
    config: FusedEncoderConfig

    def __init__(self, config: FusedEncoderConfig | None = None, parts: list[ItemEncoder] | None = None) -> None:
        super().__init__()
        self.config = config or FusedEncoderConfig()
        self.parts = (
            parts
            if parts is not None
            else [build("item_encoder", spec, where=f"fused.parts[{i}]") for i, spec in enumerate(self.config.parts)]
        )
        if self.config.weights is not None and len(self.config.weights) != len(self.parts):
            raise ConfigError(f"fused: {len(self.parts)} part encoders for {len(self.config.weights)} weights")

    def model_id(self) -> str:
        return "+".join(part.model_id() for part in self.parts)

    def fingerprint(self, dataset: Dataset) -> str:
        keys = [part.cache_key(dataset) for part in self.parts]
        behaviour = (
            frame_digest(dataset.split_frame("train"), ["user", "item"]) if self.config.mode == "projection" else ""
        )
        return digest([[k.encoder, k.model_id, k.digest] for k in keys], behaviour)

    def encode(self, dataset: Dataset, cache: EmbeddingCache | None = None) -> torch.Tensor:
        vectors = [encode_items(part, dataset, cache if cache is not None else False) for part in self.parts]
        fused = concat_normalized(vectors, self.config.weights, self.config.normalize_output)
        self.stats = {
            "parts": {f"{i}:{p.name}": dict(p.stats) for i, p in enumerate(self.parts)},
            "part_dims": [int(v.shape[1]) for v in vectors],
            "mode": self.config.mode,
        }
        if self.config.mode == "projection":
            pairs, pair_report = swing_pairs(dataset, self.config.projection.pairs)
            fused, report = align_embeddings(fused, pairs, self.config.projection)
            self.stats.update(pairs=pair_report, alignment=report)
        return fused
