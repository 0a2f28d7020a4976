"""Compute accounting: traced FLOPs, parameter counts, MFU arithmetic, throughput."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recstack.errors import ConfigError
from recstack.ranking.compute import (
    ComputeConfig,
    ComputeReport,
    forward_flops,
    mfu,
    model_compute,
    parameter_counts,
    ranker_compute,
    score_throughput,
    train_flops,
    train_throughput,
)
from recstack.ranking.samples import SampleBuilder
from recstack.registry import build


class LinearModel(nn.Module):
    """items [N] -> one Linear(in, out) on a fixed feature vector; loss = mean square."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.in_dim = in_dim

    def forward(self, inputs):
        x = inputs["x"]
        return self.linear(x)

    def loss(self, inputs):
        return {"loss": self(inputs).pow(2).mean()}


def linear_inputs(n: int, in_dim: int) -> dict:
    return {"items": torch.arange(n), "x": torch.randn(n, in_dim)}


@pytest.mark.parametrize("in_dim,out_dim,n", [(8, 4, 16), (32, 5, 3)])
def test_linear_flops_are_two_in_out_per_sample(in_dim, out_dim, n):
    model = LinearModel(in_dim, out_dim)
    fwd, by_module = forward_flops(model, linear_inputs(n, in_dim))
    assert fwd == 2 * in_dim * out_dim
    assert by_module == {"linear": 2 * in_dim * out_dim}
    # backward: only the weight gradient (the input needs none) = another 2·in·out
    assert train_flops(model, linear_inputs(n, in_dim)) == 4 * in_dim * out_dim
    assert all(p.grad is None for p in model.parameters())  # traced backward leaves no gradients behind


class Routed(nn.Module):
    """Stands for an MoE block: 4 experts of which one is active per sample."""

    def __init__(self) -> None:
        super().__init__()
        self.experts = nn.ModuleList(nn.Linear(4, 4, bias=False) for _ in range(4))

    def activated_parameters(self) -> int:
        return 16


def test_parameter_counts_split_embedding_dense_activated():
    model = nn.Sequential(nn.Embedding(10, 4), nn.EmbeddingBag(5, 4), nn.Linear(4, 3), Routed())
    counts = parameter_counts(model)
    assert counts == {"total": 40 + 20 + 15 + 64, "embedding": 60, "dense": 79, "activated": 79 - 48}
    assert parameter_counts(nn.Linear(2, 2))["activated"] == 6  # no routing: activated = dense


def test_activated_parameters_out_of_range_is_an_error():
    bad = Routed()
    bad.activated_parameters = lambda: 999
    with pytest.raises(ConfigError, match="activated_parameters"):
        parameter_counts(bad)


def test_mfu_arithmetic():
    assert mfu(2e6, 500.0, 1e10) == pytest.approx(0.1)
    report = ComputeReport(
        batch_size=8,
        forward_flops=1e6,
        train_flops=3e6,
        params={},
        train_samples_per_s=1000.0,
        score_samples_per_s=4000.0,
        peak_flops=6e10,
        peak_source="config",
    )
    assert report.mfu == pytest.approx(0.05)
    assert report.score_mfu == pytest.approx(4e9 / 6e10)
    with pytest.raises(ConfigError):
        mfu(1.0, 1.0, 0.0)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="compute.peak_flops"):
        ComputeConfig(peak_flops=-1.0)
    with pytest.raises(ConfigError, match="compute.steps"):
        ComputeConfig(steps=0)


def test_throughput_is_positive_and_leaves_the_model_untouched():
    model = LinearModel(8, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = linear_inputs(32, 8)
    assert train_throughput(model, inputs, steps=2, warmup=1) > 0
    assert score_throughput(model, inputs, steps=2, warmup=0) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    report = model_compute(model, inputs, ComputeConfig(peak_flops=1e9, steps=1, warmup=0))
    assert report.peak_source == "config" and report.mfu > 0 and report.forward_flops == 64


def test_ranker_compute_on_a_fitted_ranker(tiny_dataset):
    ranker = build(
        "ranker",
        {
            "name": "dcn_din_mmoe",
            "features": {"dim": 4},
            "samples": {"max_history": 4},
            "deep_hidden": [8],
            "expert_hidden": [8],
            "tower_hidden": [4],
            "attention_hidden": [4],
            "num_experts": 2,
            "train": {"epochs": 1, "batch_size": 64, "progress": False},
        },
    )
    ranker.fit(tiny_dataset)
    samples = SampleBuilder(tiny_dataset, ranker.config.samples, tasks=ranker.tasks).eval_samples("test")
    report = ranker_compute(ranker, samples, ComputeConfig(peak_flops=1e10, batch_size=16, steps=1, warmup=0))
    assert report.batch_size == min(16, len(samples))
    assert report.train_flops > report.forward_flops > 0
    assert report.params["embedding"] > 0 and report.params["dense"] > 0
    assert report.train_samples_per_s > 0 and report.score_samples_per_s > 0
    assert set(report.flops_by_module) <= {name for name, _ in ranker.model.named_children()}
    assert sum(report.flops_by_module.values()) <= report.forward_flops + 1e-6


def test_flops_by_module_sums_container_members():
    class Stack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(6, 6), nn.Sequential(nn.Linear(6, 3))])
            self.head = nn.Linear(3, 1)

        def forward(self, inputs):
            x = inputs["x"]
            for block in self.blocks:
                x = block(x)
            return self.head(x)

    fwd, by_module = forward_flops(Stack(), linear_inputs(4, 6))
    assert by_module == {"blocks": 2 * 36 + 2 * 18, "head": 6}
    assert fwd == sum(by_module.values())
