"""RQ-KMeans (QARM / OneRec, METHODS.md §1.5): residual K-means on frozen item embeddings.

Level l fits K-means on the residual r_l (r_0 = x), assigns each item its nearest centroid c and
passes on r_{l+1} = r_l − c. No encoder or decoder: decode(codes) = Σ_l centroid_l[code_l].

Interpretations ([I], flags):
- `kmeans.balance`: OneRec's balanced K-means (see kmeans.py), off by default.
- `residual_norm`: how each level's residual is normalised before its K-means.
  "none": plain. "standardize": per-dimension z-score of that level's residual (every dimension
  counts equally at every level; centroids are mapped back, so decode is exact). "l2": cluster the
  direction r/||r|| (cosine K-means); the reconstruction centroid is the mean *unnormalised*
  residual of the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from recstack.errors import ConfigError
from recstack.registry import register
from recstack.semantic_ids.base import Quantizer, QuantizerConfig
from recstack.semantic_ids.kmeans import KMeansConfig, assign, cluster_means, fit_kmeans

ResidualNorm = Literal["none", "standardize", "l2"]


class ResidualKMeans:
    """A stack of K-means levels over successive residuals. Tensors per level l:
    shift [D], scale [D] (normalisation), assign_centroids [K_l, D] (in the normalised space),
    bias [K_l] (balancing), centroids [K_l, D] (reconstruction, in the residual's own space)."""

    def __init__(
        self, sizes: list[int], kmeans: KMeansConfig, residual_norm: ResidualNorm, seed: int, chunk_size: int
    ) -> None:
        self.sizes, self.kmeans, self.residual_norm = sizes, kmeans, residual_norm
        self.seed, self.chunk_size = seed, chunk_size
        self.tensors: dict[str, torch.Tensor] = {}

    def _normalise(self, r: torch.Tensor, level: int) -> torch.Tensor:
        if self.residual_norm == "l2":
            return r / r.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if self.residual_norm == "standardize":
            return (r - self.tensors[f"shift.{level}"]) / self.tensors[f"scale.{level}"]
        return r

    def _assign(self, r: torch.Tensor, level: int) -> torch.Tensor:
        t = self.tensors
        return assign(self._normalise(r, level), t[f"assign_centroids.{level}"], t[f"bias.{level}"], self.chunk_size)

    def fit(self, x: torch.Tensor) -> torch.Tensor:
        """Fit every level on x: [N, D]; returns the final residual [N, D]."""
        residual = x.clone()
        for level, size in enumerate(self.sizes):
            dim = residual.shape[1]
            if self.residual_norm == "standardize":
                shift, scale = residual.mean(0), residual.std(0).clamp_min(1e-8)
            else:
                shift, scale = torch.zeros(dim), torch.ones(dim)
            self.tensors[f"shift.{level}"], self.tensors[f"scale.{level}"] = shift, scale
            result = fit_kmeans(self._normalise(residual, level), size, self.kmeans, self.seed + 1000 * level)
            self.tensors[f"assign_centroids.{level}"] = result.centroids
            self.tensors[f"bias.{level}"] = result.bias
            labels = self._assign(residual, level)
            if self.residual_norm == "l2":
                centroids = cluster_means(residual, labels, torch.zeros(size, dim))
            else:
                centroids = result.centroids * scale + shift
            self.tensors[f"centroids.{level}"] = centroids
            residual -= centroids[labels]
        return residual

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[n, D] -> (codes LongTensor[n, levels], final residual [n, D])."""
        residual = x.clone()
        codes = torch.empty(x.shape[0], len(self.sizes), dtype=torch.long)
        for level in range(len(self.sizes)):
            codes[:, level] = self._assign(residual, level)
            residual -= self.tensors[f"centroids.{level}"][codes[:, level]]
        return codes, residual

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """LongTensor[n, levels] -> [n, D] sum of the levels' reconstruction centroids."""
        out = self.tensors["centroids.0"][codes[:, 0]].clone()
        for level in range(1, len(self.sizes)):
            out += self.tensors[f"centroids.{level}"][codes[:, level]]
        return out


@dataclass
class RQKMeansConfig(QuantizerConfig):
    """levels × codebook_size codes (e.g. 3 × 256); kmeans: per-level K-means settings."""

    levels: int = 3
    codebook_size: int = 256
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    residual_norm: ResidualNorm = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.levels <= 0 or self.codebook_size <= 0:
            raise ConfigError(
                f"rq_kmeans: levels and codebook_size must be > 0, got {self.levels} and {self.codebook_size}"
            )


@register("quantizer", "rq_kmeans", config=RQKMeansConfig)
class RQKMeans(Quantizer):
    """Residual K-means quantizer: [N, D] -> codes [N, levels], each in [0, codebook_size)."""

    name = "rq_kmeans"
    config: RQKMeansConfig

    def __init__(self, config: RQKMeansConfig | None = None) -> None:
        super().__init__(config or RQKMeansConfig())
        c = self.config
        self.stack = ResidualKMeans([c.codebook_size] * c.levels, c.kmeans, c.residual_norm, c.seed, c.chunk_size)

    @property
    def codebook_sizes(self) -> list[int]:
        return [self.config.codebook_size] * self.config.levels

    def _fit(self, x: torch.Tensor) -> None:
        self.stack.fit(x)

    def _encode_chunk(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack.encode(x)[0]

    def _decode_chunk(self, codes: torch.Tensor) -> torch.Tensor:
        return self.stack.decode(codes)

    def _state(self) -> tuple[dict[str, torch.Tensor], dict]:
        return dict(self.stack.tensors), {}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        self.stack.tensors = dict(tensors)
