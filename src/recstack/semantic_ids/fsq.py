"""Res-KMeans + FSQ semantic IDs (QARM V2 §2.15, OneMall §2.16; FSQ: arXiv 2309.15505).

`kmeans_levels` residual K-means levels (as rq_kmeans), then one finite-scalar-quantisation level
on the final residual r [N, D]:

    digits = round(L · sigmoid(r W + b))      W: [D, fsq_dims], digits in {0, …, L}
    code   = Σ_j digits_j · (L+1)^(fsq_dims−1−j)   (mixed radix, first dim most significant)

so the last level has (L+1)^fsq_dims implicit codes (3^13 ≈ 1.6M for the paper's L=2, 13 dims), no
dead codes and no lookup table. decode maps digits back with a linear decoder r̂ = (digits/L) V + c.

Interpretations ([I], flags):
- `fsq_projection`: "pca" — W = top principal directions of r, scaled per dimension so the lowest
  and highest digit each take ≈ 1/(L+1) of the items; "learned" — start from "pca", then
  `fsq_steps` Adam steps on the reconstruction ||r − r̂||² with straight-through rounding.
- the decoder (V, c) is refitted by least squares on the hard digits at the end, in both modes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from recstack.errors import ConfigError
from recstack.registry import register
from recstack.semantic_ids.base import Quantizer, QuantizerConfig
from recstack.semantic_ids.kmeans import KMeansConfig
from recstack.semantic_ids.rq_kmeans import ResidualKMeans, ResidualNorm


class FSQLevel:
    """One FSQ level over residuals [n, D]. Tensors: W [D, m], b [m], V [m, D], c [D]."""

    def __init__(self, dims: int, levels: int) -> None:
        self.dims, self.levels = dims, levels
        self.radix = torch.tensor([(levels + 1) ** (dims - 1 - j) for j in range(dims)], dtype=torch.long)
        self.tensors: dict[str, torch.Tensor] = {}

    @property
    def size(self) -> int:
        return (self.levels + 1) ** self.dims

    def _scaled(self, r: torch.Tensor) -> torch.Tensor:
        return self.levels * torch.sigmoid(r @ self.tensors["W"] + self.tensors["b"])

    def digits(self, r: torch.Tensor) -> torch.Tensor:
        return torch.round(self._scaled(r)).long()

    def encode(self, r: torch.Tensor) -> torch.Tensor:
        """[n, D] -> LongTensor[n] mixed-radix code."""
        return self.digits(r) @ self.radix

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """LongTensor[n] -> [n, D] reconstructed residual."""
        digits = torch.div(codes[:, None], self.radix, rounding_mode="floor") % (self.levels + 1)
        return (digits.float() / self.levels) @ self.tensors["V"] + self.tensors["c"]

    def fit(self, r: torch.Tensor, projection: str, steps: int, lr: float, batch_size: int, seed: int) -> None:
        self._fit_pca(r)
        if projection == "learned" and steps > 0:
            self._fit_learned(r, steps, lr, batch_size, seed)
        self._fit_decoder(r)

    def _fit_pca(self, r: torch.Tensor) -> None:
        mean = r.double().mean(0)
        centred = r.double() - mean
        cov = centred.T @ centred / max(r.shape[0] - 1, 1)
        _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
        directions = vectors[:, -self.dims :].flip(1)
        if directions.shape[1] < self.dims:  # fewer input dims than fsq_dims: repeat directions
            directions = directions.repeat(1, math.ceil(self.dims / directions.shape[1]))[:, : self.dims]
        projected = centred @ directions
        # put the top digit's threshold (sigmoid = (L − ½)/L) at the 1 − 1/(L+1) quantile of |projection|
        threshold = math.log((self.levels - 0.5) / 0.5) if self.levels > 1 else 1.0  # L=1: only the sign counts
        q = 1.0 - 2.0 / (self.levels + 1) if self.levels > 1 else 0.5
        spread = torch.quantile(projected.abs()[:100_000], q, dim=0).clamp_min(1e-8)
        weight = directions * (threshold / spread)
        self.tensors["W"] = weight.float()
        self.tensors["b"] = (-(mean @ weight)).float()

    def _fit_learned(self, r: torch.Tensor, steps: int, lr: float, batch_size: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self._fit_decoder(r)
        params = {k: self.tensors[k].clone().requires_grad_(True) for k in ("W", "b", "V", "c")}
        optimiser = torch.optim.Adam(params.values(), lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                batch = r[torch.randint(r.shape[0], (min(batch_size, r.shape[0]),), generator=generator)]
                z = self.levels * torch.sigmoid(batch @ params["W"] + params["b"])
                z = z + (torch.round(z) - z).detach()  # straight-through rounding
                loss = ((z / self.levels) @ params["V"] + params["c"] - batch).pow(2).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
        self.tensors.update({k: v.detach() for k, v in params.items()})

    def _fit_decoder(self, r: torch.Tensor) -> None:
        digits = self.digits(r).double() / self.levels
        design = torch.cat([digits, torch.ones(r.shape[0], 1, dtype=torch.float64)], 1)
        gram = design.T @ design + 1e-6 * torch.eye(design.shape[1], dtype=torch.float64)
        solution = torch.linalg.solve(gram, design.T @ r.double())
        self.tensors["V"], self.tensors["c"] = solution[:-1].float(), solution[-1].float()


@dataclass
class ResKMeansFSQConfig(QuantizerConfig):
    """kmeans_levels × codebook_size K-means codes, then one FSQ level of (fsq_levels+1)^fsq_dims codes."""

    kmeans_levels: int = 2
    codebook_size: int = 256
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    residual_norm: ResidualNorm = "none"
    fsq_dims: int = 13
    fsq_levels: int = 2  # L: each FSQ dimension takes L+1 values
    fsq_projection: Literal["learned", "pca"] = "pca"
    fsq_steps: int = 200
    fsq_lr: float = 1e-2
    fsq_batch_size: int = 4096

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kmeans_levels < 0 or self.codebook_size <= 0 or self.fsq_dims <= 0 or self.fsq_levels <= 0:
            raise ConfigError(
                "res_kmeans_fsq: kmeans_levels must be >= 0; codebook_size, fsq_dims and fsq_levels must be > 0"
            )
        if self.fsq_projection not in ("learned", "pca"):
            raise ConfigError(f"res_kmeans_fsq.fsq_projection: {self.fsq_projection!r} is not one of 'learned', 'pca'")
        if self.fsq_dims * math.log2(self.fsq_levels + 1) > 62:
            raise ConfigError(
                f"res_kmeans_fsq: (fsq_levels+1)^fsq_dims = {self.fsq_levels + 1}^{self.fsq_dims} does not fit in int64"
            )


@register("quantizer", "res_kmeans_fsq", config=ResKMeansFSQConfig)
class ResKMeansFSQ(Quantizer):
    """[N, D] -> codes [N, kmeans_levels + 1]; the last column is the FSQ code."""

    name = "res_kmeans_fsq"
    config: ResKMeansFSQConfig

    def __init__(self, config: ResKMeansFSQConfig | None = None) -> None:
        super().__init__(config or ResKMeansFSQConfig())
        c = self.config
        self.stack = ResidualKMeans(
            [c.codebook_size] * c.kmeans_levels, c.kmeans, c.residual_norm, c.seed, c.chunk_size
        )
        self.fsq = FSQLevel(c.fsq_dims, c.fsq_levels)

    @property
    def codebook_sizes(self) -> list[int]:
        return [self.config.codebook_size] * self.config.kmeans_levels + [self.fsq.size]

    def _min_rows(self) -> int:
        return self.config.codebook_size if self.config.kmeans_levels else 1

    def _fit(self, x: torch.Tensor) -> None:
        c = self.config
        residual = self.stack.fit(x) if c.kmeans_levels else x
        self.fsq.fit(residual, c.fsq_projection, c.fsq_steps, c.fsq_lr, c.fsq_batch_size, c.seed + 7)

    def _encode_chunk(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.kmeans_levels:
            codes, residual = self.stack.encode(x)
        else:
            codes, residual = torch.empty(x.shape[0], 0, dtype=torch.long), x
        return torch.cat([codes, self.fsq.encode(residual)[:, None]], 1)

    def _decode_chunk(self, codes: torch.Tensor) -> torch.Tensor:
        out = self.fsq.decode(codes[:, -1])
        return out + self.stack.decode(codes[:, :-1]) if self.config.kmeans_levels else out

    def _state(self) -> tuple[dict[str, torch.Tensor], dict]:
        return {**self.stack.tensors, **{f"fsq.{k}": v for k, v in self.fsq.tensors.items()}}, {}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        self.fsq.tensors = {k[4:]: v for k, v in tensors.items() if k.startswith("fsq.")}
        self.stack.tensors = {k: v for k, v in tensors.items() if not k.startswith("fsq.")}
