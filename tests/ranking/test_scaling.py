"""Scaling-law fit, Kunlun's scaling efficiency and the plot."""

from __future__ import annotations

import numpy as np
import pytest

from recstack.errors import ConfigError
from recstack.ranking.scaling import fit_scaling, plot_scaling, scaling_efficiency, write_scaling_plot


def test_fit_recovers_a_known_slope():
    flops = np.geomspace(1e5, 1e9, 5)
    auc = 0.70 + 0.012 * np.log10(flops)
    fit = fit_scaling(flops, auc)
    assert fit.slope == pytest.approx(0.012)
    assert fit.intercept == pytest.approx(0.70)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.eta == pytest.approx(0.012)
    assert fit.reference_flops == pytest.approx(1e5)
    assert fit.metric_at_reference == pytest.approx(0.76)
    assert fit.predict([1e10]) == pytest.approx([0.82])


def test_fit_with_noise_is_close_and_r2_below_one():
    rng = np.random.default_rng(0)
    flops = np.geomspace(1e4, 1e8, 40)
    loss = 0.5 - 0.02 * np.log10(flops) + rng.normal(0, 0.002, flops.size)
    fit = fit_scaling(flops, loss, higher_is_better=False)
    assert fit.slope == pytest.approx(-0.02, abs=1e-3)
    assert 0.9 < fit.r2 < 1.0
    assert fit.eta == pytest.approx(0.02, abs=1e-3)  # lower is better: η = -slope > 0


def test_scaling_efficiency_is_the_ratio_of_etas():
    flops = [1e5, 1e6, 1e7, 1e8]
    model = fit_scaling(flops, [0.70, 0.72, 0.74, 0.76])
    base = fit_scaling(flops, [0.70, 0.71, 0.72, 0.73])
    assert scaling_efficiency(model, base) == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="opposite"):
        scaling_efficiency(model, fit_scaling(flops, [0.5, 0.4, 0.3, 0.2], higher_is_better=False))


@pytest.mark.parametrize(
    "flops,metric,match",
    [
        ([1e6], [0.7], "at least 2"),
        ([1e6, 1e6], [0.7, 0.8], "same FLOPs"),
        ([0.0, 1e6], [0.7, 0.8], "> 0"),
        ([1e6, 1e7], [0.7], "metric"),
    ],
)
def test_fit_rejects_bad_input(flops, metric, match):
    with pytest.raises(ConfigError, match=match):
        fit_scaling(flops, metric)


def test_plot_file_is_written(tmp_path):
    flops = [1e5, 1e6, 1e7, 1e8]
    a = [0.70, 0.72, 0.73, 0.75]
    series = {"a": (flops, a, fit_scaling(flops, a)), "b": (flops, [0.69, 0.70, 0.71, 0.71], None)}
    path = write_scaling_plot(tmp_path / "plots" / "scaling.png", series, "like/auc")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert [p.name for p in path.parent.iterdir()] == ["scaling.png"]  # no temp file left
    assert plot_scaling(series, "like/auc")[:4] == b"\x89PNG"
    with pytest.raises(ConfigError):
        plot_scaling({}, "like/auc")
