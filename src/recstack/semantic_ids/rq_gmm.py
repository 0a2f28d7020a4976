"""RQ-GMM (Tong et al., arXiv 2602.12593, SIGIR'26; METHODS.md §2.10): residual quantisation where
each level is a diagonal-covariance Gaussian mixture fitted by EM on frozen embeddings.

Per level, on the residual r [N, D]:  p(r) = Σ_k π_k N(r | μ_k, diag σ²_k).
E-step: γ_nk ∝ π_k N(r_n | μ_k, σ²_k) (batched log-sum-exp); M-step: μ_k = Σγr/Σγ,
σ²_k = Σγr²/Σγ − μ_k² (float64 accumulators), π_k = Σγ/N.
Code = argmax_k γ_nk (hard), and the residual passed on is r − μ_{code} at fit and inference alike.

Interpretations ([I], flags): `init` (k-means++ seeds, or a full K-means); variances start at the
within-cluster variance and π = 1/K; `variance_floor` (relative to the level's mean variance when
`floor_relative`), applied by clamping or, like sklearn's reg_covar, by adding (`floor_mode`);
components whose weight falls below `reseed_min_weight`/K are re-seeded at the worst-explained
points (lowest log-likelihood); EM runs on a subsample of `max_points_per_component`·K rows; the
M-step keeps each row's `resp_topk` largest responsibilities (0 = exact EM; in high dimensions the
rest are ~0, and this halves the cost of an iteration); `tol` is relative to the log-likelihood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from recstack.errors import ConfigError
from recstack.registry import register
from recstack.semantic_ids.base import Quantizer, QuantizerConfig
from recstack.semantic_ids.kmeans import KMeansConfig, assign, fit_kmeans, kmeans_plus_plus

LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class DiagGMM:
    """log_weights [K], means [K, D], variances [K, D] (float64 master copies)."""

    log_weights: torch.Tensor
    means: torch.Tensor
    variances: torch.Tensor

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """[n, D] -> [n, K]: log π_k + log N(x | μ_k, diag σ²_k), in x's dtype (one fused matmul)."""
        dtype = x.dtype
        precision = (1.0 / self.variances).to(dtype)
        means = self.means.to(dtype)
        weights = torch.cat([precision, -2.0 * means * precision], 1)  # [K, 2D]
        quad = torch.cat([x * x, x], 1) @ weights.T + (means * means * precision).sum(1)
        const = self.log_weights - 0.5 * (x.shape[1] * LOG_2PI + torch.log(self.variances).sum(1))
        return const.to(dtype) - 0.5 * quad

    def predict(self, x: torch.Tensor, chunk_size: int) -> torch.Tensor:
        out = torch.empty(x.shape[0], dtype=torch.long)
        for start in range(0, x.shape[0], chunk_size):
            out[start : start + chunk_size] = self.log_joint(x[start : start + chunk_size]).argmax(1)
        return out


def sufficient_stats(
    rows: torch.Tensor, joint: torch.Tensor, norm: torch.Tensor, topk: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Σγ [K], Σγx [K, D], Σγx² [K, D] (float64) of one chunk. topk > 0 keeps each row's `topk`
    largest responsibilities (a sparse M-step: in high dimensions the rest are ~0)."""
    k = joint.shape[1]
    features = torch.cat([rows, rows * rows], 1)  # [n, 2D]
    if 0 < topk < k:
        top = torch.topk(joint, topk, dim=1)
        resp = torch.exp(top.values - norm[:, None])
        index = torch.stack([top.indices.flatten(), torch.arange(rows.shape[0]).repeat_interleave(topk)])
        sparse = torch.sparse_coo_tensor(index, resp.flatten(), (k, rows.shape[0]), check_invariants=False).coalesce()
        s0 = torch.zeros(k, dtype=resp.dtype).index_add_(0, top.indices.flatten(), resp.flatten())
        weighted = torch.sparse.mm(sparse, features)
    else:
        resp = torch.exp(joint - norm[:, None])
        s0 = resp.sum(0)
        weighted = resp.T @ features
    d = rows.shape[1]
    return s0.double(), weighted[:, :d].double(), weighted[:, d:].double()


def em(
    x: torch.Tensor,
    gmm: DiagGMM,
    iters: int,
    tol: float,
    floor: float,
    floor_mode: str = "clamp",
    reseed_min_weight: float = 0.0,
    chunk_size: int = 65536,
    resp_topk: int = 0,
) -> tuple[DiagGMM, list[float]]:
    """Run EM on x [N, D] (its dtype is the compute dtype) from `gmm`; returns the fitted mixture and
    the mean log-likelihood per row at each E-step. Stops when the mean log-likelihood changes by
    less than `tol` relative to its size."""
    n, k = x.shape[0], gmm.means.shape[0]
    history: list[float] = []
    global_var = x.double().var(0)
    for _ in range(iters):
        s0 = torch.zeros(k, dtype=torch.float64)
        s1 = torch.zeros(k, x.shape[1], dtype=torch.float64)
        s2 = torch.zeros_like(s1)
        point_ll = torch.empty(n, dtype=torch.float64)
        for start in range(0, n, chunk_size):
            rows = x[start : start + chunk_size]
            joint = gmm.log_joint(rows)
            norm = torch.logsumexp(joint, 1)
            chunk_s0, chunk_s1, chunk_s2 = sufficient_stats(rows, joint, norm, resp_topk)
            s0 += chunk_s0
            s1 += chunk_s1
            s2 += chunk_s2
            point_ll[start : start + rows.shape[0]] = norm.double()
        # M-step (an empty component keeps its previous parameters)
        alive = s0 > 1e-10
        nk = s0.clamp_min(1e-10)[:, None]
        means = torch.where(alive[:, None], s1 / nk, gmm.means)
        variances = torch.where(alive[:, None], (s2 / nk - means * means).clamp_min(0.0), gmm.variances)
        variances = variances + floor if floor_mode == "add" else variances.clamp_min(floor)
        weights = (s0 + 10 * torch.finfo(torch.float64).eps) / n
        if reseed_min_weight > 0:
            collapsed = torch.nonzero(weights < reseed_min_weight / k).flatten()
            if collapsed.numel():
                worst = torch.topk(-point_ll, collapsed.numel()).indices  # the worst-explained rows
                means[collapsed] = x[worst].double()
                variances[collapsed] = global_var.clamp_min(floor)
                weights[collapsed] = 1.0 / k
        gmm = DiagGMM(torch.log(weights / weights.sum()), means, variances)
        history.append(float(point_ll.mean()))
        if len(history) > 1 and abs(history[-1] - history[-2]) < tol * max(abs(history[-2]), 1.0):
            break
    return gmm, history


@dataclass
class RQGMMConfig(QuantizerConfig):
    """levels × codebook_size codes; EM settings per level (see module docstring)."""

    levels: int = 3
    codebook_size: int = 256
    em_iters: int = 20
    tol: float = 1e-4
    init: Literal["kmeans++", "kmeans"] = "kmeans++"
    kmeans: KMeansConfig = field(default_factory=lambda: KMeansConfig(niter=10))
    variance_floor: float = 1e-3
    floor_relative: bool = True
    floor_mode: Literal["clamp", "add"] = "clamp"
    reseed_min_weight: float = 0.01
    max_points_per_component: int = 128  # an EM iteration costs ~4 K-means iterations
    resp_topk: int = 16
    compute_dtype: Literal["float32", "float64"] = "float32"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.levels <= 0 or self.codebook_size <= 0 or self.em_iters <= 0:
            raise ConfigError("rq_gmm: levels, codebook_size and em_iters must be > 0")
        if (
            self.variance_floor <= 0
            or min(self.tol, self.reseed_min_weight, self.max_points_per_component, self.resp_topk) < 0
        ):
            raise ConfigError(
                "rq_gmm: variance_floor must be > 0; tol, reseed_min_weight, "
                "max_points_per_component and resp_topk must be >= 0"
            )


@register("quantizer", "rq_gmm", config=RQGMMConfig)
class RQGMM(Quantizer):
    """Residual GMM quantizer: [N, D] -> codes [N, levels], each in [0, codebook_size).
    Tensors per level l: center.l [D] (the level's data mean; the mixture is fitted on r − center),
    log_weights.l [K], means.l [K, D], variances.l [K, D]."""

    name = "rq_gmm"
    config: RQGMMConfig

    def __init__(self, config: RQGMMConfig | None = None) -> None:
        super().__init__(config or RQGMMConfig())
        self.tensors: dict[str, torch.Tensor] = {}
        self.history: list[list[float]] = []  # mean log-likelihood per EM iteration, per level

    @property
    def codebook_sizes(self) -> list[int]:
        return [self.config.codebook_size] * self.config.levels

    @property
    def _dtype(self) -> torch.dtype:
        return torch.float64 if self.config.compute_dtype == "float64" else torch.float32

    def _gmm(self, level: int) -> DiagGMM:
        t = self.tensors
        return DiagGMM(t[f"log_weights.{level}"], t[f"means.{level}"], t[f"variances.{level}"])

    def _init_level(self, x: torch.Tensor, floor: float, seed: int) -> DiagGMM:
        c, k = self.config, self.config.codebook_size
        generator = torch.Generator().manual_seed(seed)
        if c.init == "kmeans":
            means = fit_kmeans(x.float(), k, c.kmeans, seed).centroids.to(x.dtype)
        else:
            sample = torch.randperm(x.shape[0], generator=generator)[: c.kmeans.init_sample_per_centroid * k]
            means = kmeans_plus_plus(x[sample], k, generator, c.kmeans.kmeanspp_trials)
        labels = assign(x, means, chunk_size=c.chunk_size)
        counts = torch.bincount(labels, minlength=k).double()[:, None]
        xd = x.double()
        sq = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(0, labels, (xd - means.double()[labels]) ** 2)
        variances = torch.where(counts > 1, sq / counts.clamp_min(1.0), xd.var(0)).clamp_min(floor)
        return DiagGMM(torch.full((k,), -math.log(k), dtype=torch.float64), means.double(), variances)

    def _fit(self, x: torch.Tensor) -> None:
        c = self.config
        generator = torch.Generator().manual_seed(c.seed)
        residual = x.to(self._dtype)
        self.history = []
        for level in range(c.levels):
            center = residual.double().mean(0)
            centred = residual - center.to(self._dtype)
            limit = c.max_points_per_component * c.codebook_size
            train = centred
            if 0 < limit < centred.shape[0]:
                train = centred[torch.randperm(centred.shape[0], generator=generator)[:limit]]
            floor = c.variance_floor * (float(train.double().var(0).mean()) if c.floor_relative else 1.0)
            gmm = self._init_level(train, floor, c.seed + 1000 * level)
            gmm, history = em(
                train, gmm, c.em_iters, c.tol, floor, c.floor_mode, c.reseed_min_weight, c.chunk_size, c.resp_topk
            )
            self.history.append(history)
            self.tensors.update(
                {
                    f"center.{level}": center.float(),
                    f"log_weights.{level}": gmm.log_weights,
                    f"means.{level}": gmm.means,
                    f"variances.{level}": gmm.variances,
                }
            )
            labels = gmm.predict(centred, c.chunk_size)
            residual = centred - gmm.means.to(self._dtype)[labels]

    def _encode_chunk(self, x: torch.Tensor) -> torch.Tensor:
        residual = x.to(self._dtype)
        codes = torch.empty(x.shape[0], self.levels, dtype=torch.long)
        for level in range(self.levels):
            centred = residual - self.tensors[f"center.{level}"].to(self._dtype)
            gmm = self._gmm(level)
            codes[:, level] = gmm.log_joint(centred).argmax(1)
            residual = centred - gmm.means.to(self._dtype)[codes[:, level]]
        return codes

    def _decode_chunk(self, codes: torch.Tensor) -> torch.Tensor:
        assert self.dim is not None  # decode checks the quantizer is fitted
        out = torch.zeros(codes.shape[0], self.dim, dtype=torch.float64)
        for level in range(self.levels):
            out += self.tensors[f"center.{level}"].double() + self.tensors[f"means.{level}"][codes[:, level]]
        return out.float()

    def _state(self) -> tuple[dict[str, torch.Tensor], dict]:
        return dict(self.tensors), {"em_history": self.history}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        self.tensors = dict(tensors)
        self.history = meta.get("em_history", [])
