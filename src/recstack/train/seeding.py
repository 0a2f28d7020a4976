"""Seeded determinism: seed every RNG, and capture / restore RNG state as plain tensors.

The state tensors go into `rng.safetensors` so a resumed run draws the same dropout masks and
negatives as an uninterrupted one.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's global RNG and torch (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def capture_rng_state(device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Every RNG state we use, as tensors (safetensors-ready, no pickle)."""
    _kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, py_state, gauss_next = random.getstate()
    state = {
        "torch_cpu": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": torch.tensor(int(pos), dtype=torch.int64),
        "numpy_has_gauss": torch.tensor(int(has_gauss), dtype=torch.int64),
        "numpy_cached_gaussian": torch.tensor(float(cached_gaussian), dtype=torch.float64),
        "python_state": torch.tensor(py_state, dtype=torch.int64),
        # NaN stands for "no cached gaussian" (None); random.gauss never returns NaN.
        "python_gauss_next": torch.tensor(math.nan if gauss_next is None else gauss_next, dtype=torch.float64),
        "python_version": torch.tensor(version, dtype=torch.int64),
    }
    device = torch.device(device)
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> None:
    """Inverse of `capture_rng_state`."""
    torch.set_rng_state(state["torch_cpu"].to(torch.uint8))
    np.random.set_state(
        (
            "MT19937",
            state["numpy_keys"].numpy().astype(np.uint32),
            int(state["numpy_pos"]),
            int(state["numpy_has_gauss"]),
            float(state["numpy_cached_gaussian"]),
        )
    )
    gauss_next = float(state["python_gauss_next"])
    random.setstate(
        (
            int(state["python_version"]),
            tuple(int(v) for v in state["python_state"].tolist()),
            None if math.isnan(gauss_next) else gauss_next,
        )
    )
    device = torch.device(device)
    if device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state(state["torch_cuda"].to(torch.uint8), device)
