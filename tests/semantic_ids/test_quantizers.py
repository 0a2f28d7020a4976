"""Quantizers on planted residual structure: x = A[i] + B[j] + C[k] + noise, i, j, k in 0..7 (512 items,
one per (i, j, k)), scales 1, 0.3, 0.1, so a 3 × 8 residual quantizer can recover every level exactly.

The centres of every level are orthonormal directions times the level's scale (and the three levels use
disjoint directions): every two centres of a level are exactly √2·scale apart, whatever the seed. Random
centres could land close together, and K-means then merges two planted clusters and splits another."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from recstack.errors import ConfigError, DataError
from recstack.registry import build, names
from recstack.semantic_ids import Quantizer, SemanticIds
from recstack.semantic_ids.base import limited_threads
from recstack.semantic_ids.kmeans import KMeansConfig, assign, fit_kmeans
from tests.helpers import check_at_least, check_at_most, seeded


def planted(
    dim: int = 32, seed: int = 0, per_leaf: int = 1, noise: float = 0.01, scales: tuple[float, ...] = (1.0, 0.3, 0.1)
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seeded(seed))
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=g)).Q  # a random orthonormal basis (columns)
    centres = [s * basis[:, 8 * level : 8 * level + 8].T for level, s in enumerate(scales)]
    grid = torch.cartesian_prod(*[torch.arange(8)] * len(scales)).repeat(per_leaf, 1)
    x = sum(c[grid[:, level]] for level, c in enumerate(centres))
    return x + noise * torch.randn(x.shape, generator=g) / math.sqrt(dim), grid


FAST = {"threads": 1, "seed": seeded()}
# Even on well-separated clusters one k-means++ seeding now and then puts two seeds in one planted cluster
# (≈3% of fits per level here), and Lloyd cannot undo that: K-means keeps the lowest-inertia of 3 runs, and
# RQ-GMM's own k-means++ seeding (no restarts) draws 16 greedy candidates per centre instead of 2 + ln K.
RESTARTS = {"nredo": 3}
SPECS = {
    "rq_kmeans": {"name": "rq_kmeans", "levels": 3, "codebook_size": 8, "kmeans": RESTARTS},
    "rq_kmeans_sinkhorn": {
        "name": "rq_kmeans",
        "levels": 3,
        "codebook_size": 8,
        "kmeans": {**RESTARTS, "balance": "sinkhorn"},
    },
    "rq_kmeans_capacity": {
        "name": "rq_kmeans",
        "levels": 3,
        "codebook_size": 8,
        "kmeans": {**RESTARTS, "balance": "capacity"},
    },
    "rq_kmeans_standardize": {
        "name": "rq_kmeans",
        "levels": 3,
        "codebook_size": 8,
        "residual_norm": "standardize",
        "kmeans": RESTARTS,
    },
    "rq_kmeans_l2": {"name": "rq_kmeans", "levels": 3, "codebook_size": 8, "residual_norm": "l2", "kmeans": RESTARTS},
    "rq_gmm": {"name": "rq_gmm", "levels": 3, "codebook_size": 8, "kmeans": {"kmeanspp_trials": 16}},
    "rq_gmm_kmeans_init": {"name": "rq_gmm", "levels": 3, "codebook_size": 8, "init": "kmeans", "kmeans": RESTARTS},
    # the last level's 8 centres span 7 dimensions: FSQ needs as many digits to tell them apart (with 3, the
    # top 3 principal directions of a 7-D simplex are arbitrary, and whether 8 points fall in distinct cells
    # of a 3 × 3 × 3 grid is luck)
    "res_kmeans_fsq": {
        "name": "res_kmeans_fsq",
        "kmeans_levels": 2,
        "codebook_size": 8,
        "fsq_dims": 7,
        "kmeans": RESTARTS,
    },
    "res_kmeans_fsq_learned": {
        "name": "res_kmeans_fsq",
        "kmeans_levels": 2,
        "codebook_size": 8,
        "fsq_dims": 7,
        "kmeans": RESTARTS,
        "fsq_projection": "learned",
        "fsq_steps": 30,
        "fsq_batch_size": 256,
    },
    "rq_vae": {
        "name": "rq_vae",
        "levels": 3,
        "codebook_size": 8,
        "hidden_dims": [],
        "latent_dim": 32,  # ≥ the 21 dimensions the planted centres span (at 16, 6 of seeds 0-39 fail)
        # the last level forms only once the cosine-decayed lr is below its codeword spacing; 150 epochs give it
        # time to: over seeds 0-119 at most one of its 8 centres is merged (collision rate 0.25), while at 50
        # epochs 11 of seeds 0-39 fail
        "epochs": 150,
        "kmeans": RESTARTS,
        "batch_size": 64,
        "lr": 1e-2,
    },
}
# collision-rate ceilings (before de-duplication): exact recovery gives 0. RQ-VAE learns its codebooks by
# gradient steps and can end with two last-level centres in one code (0.25); 0.5 allows one such merge.
MAX_COLLISIONS = {"rq_vae": 0.5, "res_kmeans_fsq": 0.1, "res_kmeans_fsq_learned": 0.1}


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return planted()


@pytest.fixture(scope="module")
def fitted(data) -> dict[str, Quantizer]:
    return {key: build("quantizer", {**spec, **FAST}).fit(data[0]) for key, spec in SPECS.items()}


def test_registry_lists_every_quantizer():
    assert {"rq_kmeans", "res_kmeans_fsq", "rq_vae", "rq_gmm"} <= set(names("quantizer"))
    with pytest.raises(ConfigError, match="levls"):
        build("quantizer", {"name": "rq_kmeans", "levls": 3})
    with pytest.raises(ConfigError, match="balance"):
        build("quantizer", {"name": "rq_kmeans", "kmeans": {"balance": "weird"}})


@pytest.mark.learns
@pytest.mark.parametrize("key", sorted(SPECS))
def test_recovers_planted_structure(key, data, fitted):
    x, labels = data
    quantizer = fitted[key]
    codes = quantizer.encode(x)
    assert codes.shape == (512, 3) and codes.dtype == torch.long
    report = SemanticIds.from_codes(codes, quantizer.codebook_sizes, quantizer).diagnostics(x)
    kmeans_levels = 2 if key.startswith("res_kmeans_fsq") else 3
    assert report["utilisation"][:kmeans_levels] == [1.0] * kmeans_levels
    check_at_least(normalized_mutual_info_score(labels[:, 0], codes[:, 0]), 0.99, "NMI of level 0 with the plant")
    check_at_most(report["collision_rate"], MAX_COLLISIONS.get(key, 0.0), "collision rate")
    check_at_most(report["relative_rmse"], 0.25 if key == "rq_vae" else 0.1, "relative reconstruction RMSE")


@pytest.mark.parametrize(
    "key", ["rq_kmeans", "rq_kmeans_sinkhorn", "rq_kmeans_l2", "rq_gmm", "res_kmeans_fsq_learned", "rq_vae"]
)
def test_save_load_encode_identical(key, data, fitted, tmp_path):
    x = data[0]
    quantizer = fitted[key]
    quantizer.save(tmp_path / key)
    loaded = Quantizer.load(tmp_path / key)
    assert type(loaded) is type(quantizer) and loaded.codebook_sizes == quantizer.codebook_sizes
    codes = quantizer.encode(x)
    assert torch.equal(loaded.encode(x), codes)
    assert torch.allclose(loaded.decode(codes), quantizer.decode(codes))


@pytest.mark.parametrize("key", ["rq_kmeans_capacity", "rq_gmm", "res_kmeans_fsq_learned", "rq_vae"])
def test_deterministic_under_seed(key, data, fitted):
    x = data[0]
    again = build("quantizer", {**SPECS[key], **FAST}).fit(x)
    assert torch.equal(again.encode(x), fitted[key].encode(x))


def test_streamed_encoding_matches(data, fitted):
    x = data[0]
    quantizer = fitted["rq_gmm"]
    whole = quantizer.encode(x)
    chunked = torch.cat(list(quantizer.encode_stream(x[i : i + 100] for i in range(0, 512, 100))))
    assert torch.equal(chunked, whole)
    assert torch.equal(quantizer.encode(x.numpy().astype(np.float64)), whole)  # numpy input


@pytest.mark.parametrize("name", ["rq_kmeans", "rq_gmm", "res_kmeans_fsq", "rq_vae"])
def test_bad_embeddings_name_the_row(name, data, fitted):
    x = data[0].clone()
    x[17, 3] = float("nan")
    x[40, 0] = float("inf")
    spec = {"name": name, "codebook_size": 8, **FAST}
    with pytest.raises(DataError, match="row 17"):
        build("quantizer", spec).fit(x)
    quantizer = fitted[name]
    with pytest.raises(DataError, match="row 17"):
        quantizer.encode(x)
    with pytest.raises(DataError, match="row 117"):  # rows are counted across a stream
        list(quantizer.encode_stream([data[0][:100], x]))
    with pytest.raises(DataError, match="dimension 31"):
        quantizer.encode(data[0][:, :31])
    with pytest.raises(DataError, match="2-D"):
        quantizer.encode(data[0][0])


@pytest.mark.parametrize("name", ["rq_kmeans", "rq_gmm", "res_kmeans_fsq", "rq_vae"])
def test_codebook_larger_than_items(name):
    with pytest.raises(DataError, match="codebook size 64 is larger than the number of items"):
        build("quantizer", {"name": name, "codebook_size": 64, **FAST}).fit(torch.randn(20, 4))


def test_decode_rejects_bad_codes_and_unfitted(fitted):
    quantizer = fitted["rq_kmeans"]
    with pytest.raises(DataError, match="row 1, level 2"):
        quantizer.decode(torch.tensor([[0, 0, 0], [1, 2, 8]]))
    with pytest.raises(DataError, match=r"\[N, 3\]"):
        quantizer.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(DataError, match="not fitted"):
        build("quantizer", "rq_kmeans").encode(torch.zeros(3, 4))


@pytest.mark.learns
def test_balanced_assignment_caps_cluster_sizes():
    g = torch.Generator().manual_seed(seeded(1))
    # one dense blob holding 70% of the points and seven small ones: plain K-means gives a big cluster. The
    # blobs (unit variance per dimension) are orthonormal directions × 20, all 28 apart: with centres drawn at
    # random two small blobs could lie close, and K-means would merge them and split the dense blob instead.
    # Even so, a k-means++ seeding misses a small blob now and then (they hold little of the D² mass), hence
    # the lowest-inertia of 3 runs.
    centres = torch.linalg.qr(torch.randn(8, 8, generator=g)).Q * 20
    which = torch.cat([torch.zeros(700, dtype=torch.long), torch.arange(1, 8).repeat_interleave(43)])
    x = centres[which] + torch.randn(which.numel(), 8, generator=g)
    largest = {}
    for balance in ("none", "sinkhorn", "capacity"):
        with limited_threads(1):
            result = fit_kmeans(x, 8, KMeansConfig(nredo=3, balance=balance, balance_iters=5), seed=seeded())
            largest[balance] = int(torch.bincount(assign(x, result.centroids, result.bias), minlength=8).max())
    assert largest["none"] == 700
    # Prices converge to the cap from above, but not all the way: capacity_bias is an auction whose price
    # steps shrink to its tie-break nudge (1e-6 × the mean distance) once the clusters that share the dense
    # blob trade their last boundary items, so when its 100 rounds run out a few items (≤ 5 of 126 over 200
    # seeds) can remain over the cap, and still up to 4 with 1000 rounds. 1.1 allows 12 items over, while a
    # capacity step that did nothing would leave the dense blob whole (700 / 126 ≈ 5.6).
    check_at_most(largest["capacity"] / math.ceil(x.shape[0] / 8), 1.1, "largest capacity cluster / cap")
    check_at_most(largest["sinkhorn"] / largest["none"], 0.6, "largest sinkhorn / plain cluster")


@pytest.mark.learns
def test_fsq_last_level_cuts_collisions():
    # 4 items per leaf with item-level noise: 3 × 8 K-means codes cannot separate them, an FSQ last level can
    x, _ = planted(per_leaf=4, noise=0.05)
    plain = build("quantizer", {"name": "rq_kmeans", "levels": 3, "codebook_size": 8, **FAST}).fit(x)
    fsq = build(
        "quantizer", {"name": "res_kmeans_fsq", "kmeans_levels": 2, "codebook_size": 8, "fsq_dims": 8, **FAST}
    ).fit(x)
    assert fsq.codebook_sizes == [8, 8, 3**8]
    rate = {
        q.name: SemanticIds.from_codes(q.encode(x), q.codebook_sizes).diagnostics()["collision_rate"]
        for q in (plain, fsq)
    }
    check_at_most(rate["res_kmeans_fsq"] / rate["rq_kmeans"], 0.5, "FSQ / K-means collision rate")
