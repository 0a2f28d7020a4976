"""Compute accounting for rankers: FLOPs per sample, parameter counts, throughput and MFU.

    report = ranker_compute(ranker, inputs, ComputeConfig(peak_flops=None))
    report.forward_flops, report.train_flops     # per sample, traced on the real batch `inputs`
    report.params                                # {"total", "embedding", "dense", "activated"}
    report.train_samples_per_s, report.score_samples_per_s, report.mfu

FLOPs are traced with `torch.utils.flop_counter.FlopCounterMode` on a real batch, so they follow
the code that actually runs (history length, distinct-id encoding, MoE dispatch): forward = one
scoring pass (eval mode, no grad); train = forward + task-weighted BCE + backward. The counter
counts matmul-family ops (mm, addmm, bmm, baddbmm, einsum through them, convolutions, SDPA) at
2 FLOPs per multiply-add and ignores element-wise ops and embedding lookups, the usual convention of
the scaling papers (RankMixer "FLOPs ≈ 4kLTD²", TokenMixer-Large, Kunlun).

Parameters: `embedding` = weights of nn.Embedding / nn.EmbeddingBag modules (sparse lookups; id
tables dominate the total but cost no FLOPs); `dense` = everything else; `activated` = the dense
parameters one sample passes through. A module with sparse routing (MoE) says how many of its
parameters are active by defining `activated_parameters() -> int`; the outermost such module replaces
its full count by that number (without one, activated = dense).

Throughput: steady-state samples/s of a training step (forward, loss, backward, AdamW step on a
copy of the model, so the ranker's weights are untouched) and of scoring (eval, no grad), on the
same batch, after `warmup` untimed steps. Model-only: data collation is not in it (the benchmark
also reports the end-to-end rate of the real training run).

MFU = train FLOPs per sample × training samples/s ÷ peak FLOP/s. The peak is `peak_flops` when set,
else measured: the best of `peak_repeats` float32 square matmuls of size `peak_matmul_size` on the
current torch thread count. (For reference, a spec-sheet fp32 peak for one Zen 4 / AVX-512 core at
2.6 GHz is 2 FMA pipes × 8 lanes × 2 FLOPs × 2.6e9 ≈ 83 GFLOP/s; a measured matmul peak is usually
60-90% of it, and recsys models reach a few percent of it on CPU.)
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from recstack.errors import ConfigError
from recstack.train import move_to_device


@dataclass
class ComputeConfig:
    peak_flops: float | None = None  # FLOP/s of the hardware for MFU; None = measure with a matmul
    peak_matmul_size: int = 1024  # n of the n×n×n float32 matmul that measures the peak
    peak_repeats: int = 5  # best of this many matmuls
    batch_size: int = 512  # rows of the batch traced and timed
    warmup: int = 1  # untimed steps before timing (allocator, lazy init)
    steps: int = 3  # timed steps per throughput measurement
    lr: float = 1e-3  # AdamW lr of the timed training steps (value irrelevant to speed)

    def __post_init__(self) -> None:
        if self.peak_flops is not None and self.peak_flops <= 0:
            raise ConfigError(f"compute.peak_flops must be > 0 FLOP/s (or null to measure), got {self.peak_flops!r}")
        for key in ("peak_matmul_size", "peak_repeats", "batch_size", "steps"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"compute.{key} must be > 0, got {getattr(self, key)!r}")
        if self.warmup < 0:
            raise ConfigError(f"compute.warmup must be >= 0, got {self.warmup!r}")


@dataclass
class ComputeReport:
    """Per-sample FLOPs, parameter counts, model-step throughput and MFU of one model on one batch."""

    batch_size: int
    forward_flops: float  # per sample, scoring pass
    train_flops: float  # per sample, forward + loss + backward
    params: dict[str, int]
    train_samples_per_s: float
    score_samples_per_s: float
    peak_flops: float
    peak_source: str  # "config" or "measured (n=1024, 1 threads)"
    flops_by_module: dict[str, float] = field(default_factory=dict)  # forward FLOPs per sample, top-level children

    @property
    def mfu(self) -> float:
        """Training MFU at the model-step throughput."""
        return mfu(self.train_flops, self.train_samples_per_s, self.peak_flops)

    @property
    def score_mfu(self) -> float:
        return mfu(self.forward_flops, self.score_samples_per_s, self.peak_flops)

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "forward_flops": self.forward_flops,
            "train_flops": self.train_flops,
            "params": dict(self.params),
            "train_samples_per_s": round(self.train_samples_per_s, 1),
            "score_samples_per_s": round(self.score_samples_per_s, 1),
            "peak_flops": self.peak_flops,
            "peak_source": self.peak_source,
            "mfu": self.mfu,
            "score_mfu": self.score_mfu,
            "flops_by_module": dict(self.flops_by_module),
        }


# ---- FLOPs ------------------------------------------------------------------------------------------
def count_flops(fn: Callable[[], Any]) -> tuple[float, dict[str, float]]:
    """(total FLOPs, FLOPs per module path) of running `fn()` (forward and any backward inside it)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    by_module = {name: float(sum(ops.values())) for name, ops in counter.get_flop_counts().items()}
    return float(counter.get_total_flops()), by_module


def batch_size_of(inputs: dict[str, Any]) -> int:
    """N of flat ranker inputs (the length of `items`, else of the first tensor)."""
    if isinstance(inputs.get("items"), torch.Tensor):
        return int(inputs["items"].shape[0])
    for value in inputs.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ConfigError("compute: the inputs hold no tensor to take the batch size from")


def _scalar_loss(model: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
    out = cast(Callable[[dict[str, Any]], Any], model.loss)(inputs)
    return out["loss"] if isinstance(out, dict) else out


@contextlib.contextmanager
def _scoring(model: nn.Module):
    """Eval mode and no grad for a scoring pass; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def forward_flops(model: nn.Module, inputs: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """(forward FLOPs per sample, per top-level child module) of a scoring pass over `inputs` [N, ...]."""
    n = batch_size_of(inputs)
    features = {k: v for k, v in inputs.items() if k != "labels"}
    with _scoring(model):
        total, by_module = count_flops(lambda: model(features))
    return total / n, _per_child(model, by_module, n)


def _per_child(model: nn.Module, by_module: dict[str, float], n: int) -> dict[str, float]:
    """FLOPs per sample of each top-level child. get_flop_counts keys are "Global" and dotted module
    paths under the root's class name; containers (ModuleList / ModuleDict) have no forward of their
    own, so theirs is the sum over their direct members."""
    root = type(model).__name__ + "."
    out: dict[str, float] = {}
    for name, _ in model.named_children():
        own = by_module.get(root + name)
        if own is None:
            prefix = root + name + "."
            own = sum(v for k, v in by_module.items() if k.startswith(prefix) and "." not in k[len(prefix) :])
        if own:
            out[name] = own / n
    return out


def train_flops(model: nn.Module, inputs: dict[str, Any]) -> float:
    """FLOPs per sample of forward + loss + backward on `inputs` (labels included); gradients are cleared."""
    n = batch_size_of(inputs)
    was_training = model.training
    model.train()
    try:
        total, _ = count_flops(lambda: _scalar_loss(model, inputs).backward())
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return total / n


# ---- parameters ---------------------------------------------------------------------------------------
_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """{"total", "embedding", "dense", "activated"} parameter counts (see the module docstring)."""
    total = sum(p.numel() for p in model.parameters())
    embedding = sum(p.numel() for m in model.modules() if isinstance(m, _EMBEDDINGS) for p in m.parameters())
    dense = total - embedding
    inactive = 0
    for module in _outermost_with_activated(model):
        own = sum(p.numel() for p in module.parameters())
        active = int(cast(Callable[[], int], module.activated_parameters)())
        if not 0 <= active <= own:
            raise ConfigError(
                f"{type(module).__name__}.activated_parameters() = {active} is outside [0, {own}] (its parameter count)"
            )
        inactive += own - active
    return {"total": total, "embedding": embedding, "dense": dense, "activated": dense - inactive}


def _outermost_with_activated(model: nn.Module) -> list[nn.Module]:
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        if callable(getattr(module, "activated_parameters", None)):
            found.append(module)
            return  # an outer module's count already covers its children
        for child in module.children():
            visit(child)

    visit(model)
    return found


# ---- throughput, peak, MFU ----------------------------------------------------------------------------
def _timed(step: Callable[[], None], warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - started


def train_throughput(
    model: nn.Module, inputs: dict[str, Any], steps: int = 3, warmup: int = 1, lr: float = 1e-3
) -> float:
    """Samples/s of full training steps (forward, loss, backward, AdamW step) on a copy of `model`."""
    n = batch_size_of(inputs)
    work = copy.deepcopy(model)
    work.train()
    optimizer = torch.optim.AdamW([p for p in work.parameters() if p.requires_grad], lr=lr)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        _scalar_loss(work, inputs).backward()
        optimizer.step()

    seconds = _timed(step, warmup, steps)
    return n * steps / max(seconds, 1e-9)


def score_throughput(model: nn.Module, inputs: dict[str, Any], steps: int = 3, warmup: int = 1) -> float:
    """Samples/s of scoring passes (eval mode, no grad)."""
    n = batch_size_of(inputs)
    features = {k: v for k, v in inputs.items() if k != "labels"}
    with _scoring(model):
        seconds = _timed(lambda: model(features), warmup, steps)
    return n * steps / max(seconds, 1e-9)


def measured_peak_flops(size: int = 1024, repeats: int = 5) -> float:
    """Best FLOP/s of float32 `size`³ matmuls (2·size³ FLOPs each) on the current torch thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up: thread pool and caches
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / max(best, 1e-12)


def mfu(flops_per_sample: float, samples_per_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s (flops_per_sample × samples_per_s) over the peak FLOP/s."""
    if peak_flops <= 0:
        raise ConfigError(f"peak_flops must be > 0, got {peak_flops!r}")
    return flops_per_sample * samples_per_s / peak_flops


def resolve_peak(config: ComputeConfig) -> tuple[float, str]:
    if config.peak_flops is not None:
        return float(config.peak_flops), "config"
    peak = measured_peak_flops(config.peak_matmul_size, config.peak_repeats)
    return peak, f"measured (fp32 matmul n={config.peak_matmul_size}, {torch.get_num_threads()} threads)"


def model_compute(
    model: nn.Module, inputs: dict[str, Any], config: ComputeConfig | None = None, peak: tuple[float, str] | None = None
) -> ComputeReport:
    """Everything above for one model on one batch of flat inputs (with labels). `peak`: a
    (FLOP/s, source) already resolved, so a sweep measures the hardware once."""
    config = config or ComputeConfig()
    device = next(model.parameters()).device
    inputs = move_to_device(inputs, device)
    fwd, by_module = forward_flops(model, inputs)
    trn = train_flops(model, inputs)
    train_rate = train_throughput(model, inputs, config.steps, config.warmup, config.lr)
    score_rate = score_throughput(model, inputs, config.steps, config.warmup)
    peak_flops, source = peak if peak is not None else resolve_peak(config)
    return ComputeReport(
        batch_size_of(inputs), fwd, trn, parameter_counts(model), train_rate, score_rate, peak_flops, source, by_module
    )


def ranker_compute(
    ranker: Any, samples: Any, config: ComputeConfig | None = None, peak: tuple[float, str] | None = None
) -> ComputeReport:
    """`model_compute` for a fitted ranker (any registered one) on the first `config.batch_size` of
    `samples` (a ranking `Samples`, e.g. the test samples of evaluate_ranker's protocol)."""
    config = config or ComputeConfig()
    model = ranker._require_model()
    rows = torch.arange(min(config.batch_size, len(samples)))
    if rows.numel() == 0:
        raise ConfigError("compute: no samples to trace")
    # The same inputs evaluate_samples gives the model (group inputs when the ranker aggregates users).
    inputs = samples.inputs(ranker.config.samples.max_history, rows, getattr(ranker, "group_window", None))
    return model_compute(model, inputs, config, peak)
