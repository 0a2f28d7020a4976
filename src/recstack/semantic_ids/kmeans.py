"""K-means on FAISS, with optional balanced assignment (OneRec's balanced K-means, METHODS.md §1.5).

`fit_kmeans(x [N, D], k)` returns centroids [K, D] and a per-centroid `bias` [K] (distance units).
Every assignment, at fit and at encode time, is `argmin_k ||x - c_k||² + bias_k`, so a balanced
fit stays balanced when new items are encoded chunk by chunk. The bias is zero for plain K-means and
comes from the balancing ([I], our reading of "cluster-size regularisation"):

- "sinkhorn": entropic optimal transport (Sinkhorn-Knopp on -distances, every item mass 1, every
  cluster mass N/K); the column dual potential is exactly a per-cluster bias on the distances, and
  the hard assignment is the argmax of the transport plan.
- "capacity": prices that cap each cluster at ceil(N/K·(1+slack)) items: every round, each
  over-full cluster raises its price just enough to push out its excess (the items with the
  smallest margin to their second choice), an auction-style, vectorised capacity assignment.

Balanced variants alternate (balanced assignment, centroid update) for `balance_iters` rounds
after the FAISS K-means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np
import torch

from recstack.errors import ConfigError


@dataclass
class KMeansConfig:
    """niter: FAISS Lloyd iterations. init: "kmeans++" (seeded on init_sample_per_centroid·K rows)
    or "faiss" (FAISS's random init). max_points_per_centroid: FAISS subsamples the training rows to
    this many per centroid (also used for balancing). balance: see module docstring."""

    niter: int = 20
    nredo: int = 1  # independent runs (different seeds); the lowest-inertia one is kept
    init: Literal["kmeans++", "faiss"] = "kmeans++"
    init_sample_per_centroid: int = 32
    kmeanspp_trials: int = 0  # greedy k-means++ candidates per step; 0 = 2 + ln K
    max_points_per_centroid: int = 256
    balance: Literal["none", "sinkhorn", "capacity"] = "none"
    balance_iters: int = 10
    sinkhorn_epsilon: float = 0.05  # entropic temperature, as a fraction of the mean squared distance
    sinkhorn_iters: int = 50
    capacity_slack: float = 0.0
    capacity_rounds: int = 100

    def __post_init__(self) -> None:
        for key in ("niter", "nredo", "init_sample_per_centroid", "max_points_per_centroid", "sinkhorn_iters"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"kmeans.{key} must be > 0, got {getattr(self, key)!r}")
        for key in ("balance_iters", "capacity_rounds", "capacity_slack", "kmeanspp_trials"):
            if getattr(self, key) < 0:
                raise ConfigError(f"kmeans.{key} must be >= 0, got {getattr(self, key)!r}")
        if self.sinkhorn_epsilon <= 0:
            raise ConfigError(f"kmeans.sinkhorn_epsilon must be > 0, got {self.sinkhorn_epsilon!r}")


@dataclass
class KMeansResult:
    centroids: torch.Tensor  # [K, D] float32
    bias: torch.Tensor  # [K] float32, added to squared distances before the argmin


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """[N, D], [K, D] -> [N, K] squared Euclidean distances (clamped at 0)."""
    dist = (x * x).sum(1, keepdim=True) - 2.0 * x @ centroids.T + (centroids * centroids).sum(1)
    return dist.clamp_min_(0.0)


def assign(
    x: torch.Tensor, centroids: torch.Tensor, bias: torch.Tensor | None = None, chunk_size: int = 65536
) -> torch.Tensor:
    """LongTensor[N]: argmin_k ||x - c_k||² + bias_k, computed chunk_size rows at a time."""
    out = torch.empty(x.shape[0], dtype=torch.long)
    # ||x||² is constant per row, so it is left out of the argmin.
    offset = (centroids * centroids).sum(1) + (bias if bias is not None else 0.0)
    for start in range(0, x.shape[0], chunk_size):
        rows = x[start : start + chunk_size]
        out[start : start + rows.shape[0]] = (offset - 2.0 * rows @ centroids.T).argmin(1)
    return out


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator, trials: int = 0) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; greedy trials as in scikit-learn):
    [N, D] -> [k, D]. Each step draws `trials` candidates ∝ D² (0: 2 + ln k) and keeps the one that
    lowers the potential most; one vectorised [N, trials] step per centroid."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # k sequential small steps: thread start-up costs more than it saves
    try:
        return _kmeans_plus_plus(x, k, generator, trials or 2 + int(math.log(k)))
    finally:
        torch.set_num_threads(previous)


def _kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator, trials: int) -> torch.Tensor:
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    closest = ((x - x[first]) ** 2).sum(1)
    x_sq = (x * x).sum(1, keepdim=True)
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0.0:  # fewer distinct points than k: any row will do
            candidates = torch.randint(n, (trials,), generator=generator)
        else:
            candidates = torch.multinomial(closest.double() / total, trials, replacement=True, generator=generator)
        dist = (x_sq - 2.0 * x @ x[candidates].T + x_sq[candidates].T).clamp_min_(0.0)  # [N, trials]
        updated = torch.minimum(closest[:, None], dist)
        best = int(updated.sum(0).argmin())
        chosen.append(int(candidates[best]))
        closest = updated[:, best].contiguous()
    return x[torch.tensor(chosen)].clone()


def sinkhorn_bias(dist: torch.Tensor, epsilon: float, iters: int, start: torch.Tensor | None = None) -> torch.Tensor:
    """Per-cluster bias [K] from Sinkhorn-Knopp with equal cluster marginals. dist: [N, K];
    start: a previous bias to warm-start from."""
    n, k = dist.shape
    scale = epsilon * float(dist.mean()) + 1e-12
    logits = -dist / scale
    log_col = math.log(n / k)
    v = torch.zeros(k, dtype=dist.dtype) if start is None else -start.to(dist.dtype) / scale
    for step in range(iters):
        row_mass = torch.logsumexp(logits + v, dim=1)
        if step and float(row_mass.abs().max()) < 1e-3:  # rows already carry mass 1: converged
            break
        u = -row_mass  # every row (item) carries mass 1
        v = log_col - torch.logsumexp(logits + u[:, None], dim=0)
    bias = -scale * v
    return (bias - bias.mean()).float()


def capacity_bias(dist: torch.Tensor, capacity: int, rounds: int, start: torch.Tensor | None = None) -> torch.Tensor:
    """Per-cluster prices [K] so that argmin(dist + price) puts at most `capacity` rows in a cluster
    (approximately, when `rounds` runs out first). dist: [N, K]; start: prices to warm-start from."""
    n, k = dist.shape
    price = torch.zeros(k, dtype=dist.dtype) if start is None else start.to(dist.dtype).clone()
    nudge = 1e-6 * float(dist.mean()) + 1e-12
    for _ in range(rounds):
        best = torch.topk(dist + price, 2, dim=1, largest=False)
        choice = best.indices[:, 0]
        margin = best.values[:, 1] - best.values[:, 0]
        counts = torch.bincount(choice, minlength=k)
        excess = counts - capacity
        if int(excess.max()) <= 0:
            break
        # rank each row within its cluster by margin (smallest first): sort by margin, then stably by cluster
        order = torch.argsort(margin, stable=True)
        order = order[torch.argsort(choice[order], stable=True)]
        cluster, sorted_margin = choice[order], margin[order]
        start = torch.cumsum(counts, 0) - counts
        rank = torch.arange(n) - start[cluster]
        hit = (excess[cluster] > 0) & (rank == excess[cluster] - 1)
        raise_by = torch.zeros(k, dtype=dist.dtype)
        raise_by[cluster[hit]] = sorted_margin[hit] + nudge
        price += raise_by
    return (price - price.mean()).float()


def balance_bias(
    x: torch.Tensor, centroids: torch.Tensor, config: KMeansConfig, start: torch.Tensor | None = None
) -> torch.Tensor:
    dist = squared_distances(x, centroids)
    if config.balance == "sinkhorn":
        return sinkhorn_bias(dist, config.sinkhorn_epsilon, config.sinkhorn_iters, start)
    capacity = math.ceil(x.shape[0] / centroids.shape[0] * (1.0 + config.capacity_slack))
    return capacity_bias(dist, capacity, config.capacity_rounds, start)


def cluster_means(x: torch.Tensor, labels: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """[K, D] mean of the rows in each cluster; an empty cluster keeps its previous centroid."""
    k = previous.shape[0]
    sums = torch.zeros(k, x.shape[1], dtype=torch.float64).index_add_(0, labels, x.double())
    counts = torch.bincount(labels, minlength=k).double()[:, None]
    return torch.where(counts > 0, sums / counts.clamp_min(1.0), previous.double()).float()


def fit_kmeans(x: torch.Tensor, k: int, config: KMeansConfig, seed: int) -> KMeansResult:
    """K-means (optionally balanced) of x: [N, D] float32 into k clusters; deterministic given seed."""
    n, d = x.shape
    generator = torch.Generator().manual_seed(seed)
    data = np.ascontiguousarray(x.numpy(), dtype=np.float32)
    best_obj = math.inf
    centroids: torch.Tensor | None = None
    for run in range(config.nredo):
        km = faiss.Kmeans(
            d,
            k,
            niter=config.niter,
            seed=seed + run,
            verbose=False,
            spherical=False,
            max_points_per_centroid=config.max_points_per_centroid,
            min_points_per_centroid=1,
        )
        init = None
        if config.init == "kmeans++":
            sample = torch.randperm(n, generator=generator)[: min(n, config.init_sample_per_centroid * k)]
            init = kmeans_plus_plus(x[sample], k, generator, config.kmeanspp_trials).numpy()
        km.train(data, init_centroids=init)
        objective, trained = km.obj, km.centroids
        assert objective is not None and trained is not None  # set by train
        if float(objective[-1]) < best_obj:
            best_obj, centroids = float(objective[-1]), torch.from_numpy(trained.copy())
    assert centroids is not None, "faiss.Kmeans returned no finite objective"
    bias = torch.zeros(k)
    if config.balance != "none":
        train = x[torch.randperm(n, generator=generator)[: min(n, config.max_points_per_centroid * k)]]
        prices = None  # each round warm-starts from the previous prices: the centroids move little
        for _ in range(config.balance_iters):
            prices = balance_bias(train, centroids, config, prices)
            centroids = cluster_means(train, assign(train, centroids, prices), centroids)
        bias = balance_bias(train, centroids, config, prices)
    return KMeansResult(centroids, bias)
