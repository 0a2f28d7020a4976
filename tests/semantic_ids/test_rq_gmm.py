"""RQ-GMM against scikit-learn's GaussianMixture(covariance_type="diag") as the reference EM."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from recstack.registry import build
from recstack.semantic_ids.rq_gmm import DiagGMM, em
from tests.helpers import check_at_least, seeded


def blobs(n_per: int = 150, k: int = 4, dim: int = 5, spread: float = 6.0, seed: int = 0, min_gap: float = 0.0):
    """Well-separated anisotropic diagonal Gaussians, float64 [n_per·k, dim] and their labels. The means are
    redrawn until every two are at least min_gap apart."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(k, dim, generator=g, dtype=torch.float64) * spread
    while k > 1 and float(torch.pdist(means).min()) < min_gap:
        means = torch.randn(k, dim, generator=g, dtype=torch.float64) * spread
    scales = 0.3 + torch.rand(k, dim, generator=g, dtype=torch.float64)
    labels = torch.arange(k).repeat_interleave(n_per)
    x = means[labels] + scales[labels] * torch.randn(labels.numel(), dim, generator=g, dtype=torch.float64)
    return x, labels


def test_em_matches_sklearn_step_for_step():
    x, _ = blobs()
    k = 4
    g = torch.Generator().manual_seed(3)
    init = DiagGMM(
        torch.full((k,), -math.log(k), dtype=torch.float64),
        x[torch.randperm(x.shape[0], generator=g)[:k]].clone(),
        torch.ones(k, x.shape[1], dtype=torch.float64),
    )
    floor = 1e-6
    ours, history = em(x, init, iters=7, tol=0.0, floor=floor, floor_mode="add", reseed_min_weight=0.0, chunk_size=128)
    reference = GaussianMixture(
        k,
        covariance_type="diag",
        max_iter=7,
        tol=0.0,
        reg_covar=floor,
        weights_init=np.full(k, 1.0 / k),
        means_init=init.means.numpy(),
        precisions_init=1.0 / init.variances.numpy(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference.fit(x.numpy())
    assert len(history) == 7
    np.testing.assert_allclose(ours.means.numpy(), reference.means_, atol=1e-7)
    np.testing.assert_allclose(ours.variances.numpy(), reference.covariances_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ours.log_weights.exp().numpy(), reference.weights_, atol=1e-9)
    final_ll = float(torch.logsumexp(ours.log_joint(x), 1).mean())
    assert final_ll == pytest.approx(reference.score(x.numpy()), abs=1e-7)


@pytest.mark.learns
def test_rq_gmm_level_matches_sklearn_fit():
    # per-dimension scales are at most 1.3: means ≥ 12 apart leave ≥ 4.6 σ to the midpoint, so the planted
    # labels are what the best mixture predicts. Random means can come 5 apart (RECSTACK_TEST_SEED=41), and then
    # a few points of the overlap belong to the other blob for any fit.
    x, labels = blobs(seed=seeded(1), min_gap=12.0)
    quantizer = build(
        "quantizer",
        {
            "name": "rq_gmm",
            "levels": 1,
            "codebook_size": 4,
            "em_iters": 100,
            "tol": 1e-9,
            "compute_dtype": "float64",
            "floor_relative": False,
            "variance_floor": 1e-6,
            "floor_mode": "add",
            "max_points_per_component": 0,
            "threads": 1,
            "seed": seeded(),
        },
    )
    quantizer.fit(x)
    codes = quantizer.encode(x)[:, 0]
    reference = GaussianMixture(4, covariance_type="diag", reg_covar=1e-6, n_init=3, random_state=0).fit(x.numpy())
    check_at_least(adjusted_rand_score(labels, codes), 1.0, "ARI with the planted blobs")
    assert adjusted_rand_score(reference.predict(x.numpy()), codes) == 1.0
    ours = quantizer._gmm(0)
    ll = float(torch.logsumexp(ours.log_joint(x - quantizer.tensors["center.0"].double()), 1).mean())
    assert ll == pytest.approx(reference.score(x.numpy()), abs=1e-4)
    # EM never lowers the likelihood, up to float64 rounding of the mean log-likelihood: once EM has converged
    # (2-4 iterations here), the last step can read ~1e-14 lower
    history = quantizer.history[0]
    assert (np.diff(history) >= -1e-10).all(), history


def test_collapsed_component_is_reseeded_at_worst_points():
    x, _ = blobs(k=3, seed=2)
    k = 4
    means = torch.cat([x[[0, 150, 300]], torch.full((1, x.shape[1]), 1e3, dtype=torch.float64)])  # 4th: far away
    init = DiagGMM(
        torch.full((k,), -math.log(k), dtype=torch.float64), means, torch.ones(k, x.shape[1], dtype=torch.float64)
    )
    kept, _ = em(x, init, iters=1, tol=0.0, floor=1e-4, reseed_min_weight=0.0)
    assert float(kept.log_weights[3].exp()) < 1e-10  # without re-seeding the far component stays empty
    reseeded, _ = em(x, init, iters=1, tol=0.0, floor=1e-4, reseed_min_weight=0.01)
    assert float(reseeded.log_weights[3].exp()) == pytest.approx((1 / k) / (1 + 1 / k), rel=1e-6)
    assert bool((reseeded.means[3].abs() < 100).all())  # moved onto a data point
    lowest = torch.logsumexp(init.log_joint(x), 1).argmin()
    assert torch.equal(reseeded.means[3], x[lowest])


def test_variance_floor_clamps_degenerate_dimensions():
    x, _ = blobs(k=2, seed=4)
    x[:, 2] = 1.5  # a constant dimension: zero variance in every component
    quantizer = build(
        "quantizer",
        {
            "name": "rq_gmm",
            "levels": 2,
            "codebook_size": 2,
            "threads": 1,
            "variance_floor": 1e-3,
            "max_points_per_component": 0,
        },
    )
    codes = quantizer.fit(x).encode(x)
    floor = 1e-3 * float(x.var(0).mean())  # relative floor: a share of the level's mean variance
    torch.testing.assert_close(
        quantizer.tensors["variances.0"][:, 2], torch.full((2,), floor, dtype=torch.float64), rtol=1e-4, atol=0.0
    )
    for level in range(2):
        assert bool((quantizer.tensors[f"variances.{level}"] > 0).all())
    assert torch.isfinite(quantizer.decode(codes)).all()


def test_hard_residuals_decode_to_component_means():
    x, _ = blobs(k=4, seed=5)
    quantizer = build("quantizer", {"name": "rq_gmm", "levels": 2, "codebook_size": 4, "threads": 1}).fit(x)
    codes = quantizer.encode(x)
    t = quantizer.tensors
    level0 = t["center.0"].double() + t["means.0"][codes[:, 0]]
    level1 = t["center.1"].double() + t["means.1"][codes[:, 1]]
    torch.testing.assert_close(quantizer.decode(codes), (level0 + level1).float())
    # level 2 was fitted on x − μ_{code_1}: its assignment equals argmax on that residual
    residual = (x.float() - t["center.0"]) - t["means.0"].float()[codes[:, 0]] - t["center.1"]
    assert torch.equal(quantizer._gmm(1).log_joint(residual).argmax(1), codes[:, 1])


def test_sparse_m_step_matches_exact_when_responsibilities_are_hard():
    x, _ = blobs(k=6, seed=6)
    k = 6
    init = DiagGMM(
        torch.full((k,), -math.log(k), dtype=torch.float64),
        x[::150][:k].clone(),
        torch.ones(k, x.shape[1], dtype=torch.float64),
    )
    exact, exact_history = em(x, init, iters=5, tol=0.0, floor=1e-6, resp_topk=0)
    sparse, sparse_history = em(x, init, iters=5, tol=0.0, floor=1e-6, resp_topk=2)
    torch.testing.assert_close(sparse.means, exact.means, rtol=1e-5, atol=1e-6)
    assert sparse_history == pytest.approx(exact_history, rel=1e-6)
