"""ROTE: rotary temporal encoding (Kunlun, METHODS.md §2.9).

RoPE (Su et al. 2021) rotates each pair of channels (x_2i, x_2i+1) of a query / key by the angle
phase · base^(-2i/D). ROTE keeps the rotation but takes the phase from time instead of the position
index: tau = log(1 + gap / time_scale). Because rotations compose, q_i · k_j after rotation depends on
phase_i − phase_j only, and a rotation never changes a vector's norm.

Phases (`rote_phases`), from the optional input "history_time" [B, T] = seconds between each history
event and the request (0 at padding):
- mode "age" [I]: phase_t = log(1 + age_t / time_scale); q·k then depends on log((s + age_i)/(s + age_j)),
  a logarithmic time axis (recent gaps resolved finely, old ones coarsely).
- mode "gap" [I]: Δt = gap to the previous event (age_{t-1} − age_t, 0 for the first real event),
  phase_t = Σ_{s<=t} log(1 + Δt_s / time_scale); shifting every event time (a later request) leaves
  every phase, hence every score, unchanged.
Without "history_time" the phase is the position index (plain RoPE), counted from the oldest slot.
"""

from __future__ import annotations

from typing import Literal

import torch

RotePhase = Literal["age", "gap"]


def rote_phases(
    valid: torch.Tensor, history_time: torch.Tensor | None, time_scale: float = 3600.0, mode: RotePhase = "age"
) -> torch.Tensor:
    """valid [B, T] bool, history_time [B, T] seconds before the request (or None) -> phases [B, T] float.

    Padding slots get phase 0 (their outputs are ignored). Negative times are clamped to 0.
    """
    t = valid.shape[1]
    if history_time is None:
        return torch.arange(t, device=valid.device, dtype=torch.float32).expand(valid.shape) * valid
    age = history_time.float().clamp(min=0) * valid
    if mode == "age":
        return torch.log1p(age / time_scale) * valid
    # gap to the previous real event; right-aligned histories put earlier events to the left
    previous = torch.cat([age[:, :1], age[:, :-1]], dim=1)
    has_previous = torch.cat([torch.zeros_like(valid[:, :1]), valid[:, :-1]], dim=1) & valid
    gap = torch.where(has_previous, (previous - age).clamp(min=0), torch.zeros_like(age))
    return torch.cumsum(torch.log1p(gap / time_scale), dim=1) * valid


def rotate(x: torch.Tensor, phases: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary encoding: x [B, H, T, D] (D even), phases [B, T] -> [B, H, T, D], norms unchanged.

    Channel pairs are (i, i + D/2) (the "rotate half" layout of common RoPE code): the same rotation
    group as interleaved pairs, but two contiguous slices instead of strided ones.
    """
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"rotary encoding needs an even head width, got {d}")
    freqs = base ** (-torch.arange(0, d // 2, device=x.device, dtype=torch.float32) * 2 / d)  # [D/2]
    angles = phases.float().unsqueeze(-1) * freqs  # [B, T, D/2]
    cos, sin = angles.cos().unsqueeze(1).to(x.dtype), angles.sin().unsqueeze(1).to(x.dtype)  # [B, 1, T, D/2]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
