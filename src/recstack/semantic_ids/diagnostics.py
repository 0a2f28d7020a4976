"""Semantic-ID quality numbers (the ones RQ-GMM §2.10, QARM V2 §2.15 and OneMall §2.16 report).

- utilisation per level: share of the level's codebook that at least one item uses.
- entropy per level: bits of the code distribution, and normalised by log2(codebook size).
- collision rate: share of items whose full tuple (before de-duplication) is shared with another item.
- exclusivity: share of items whose tuple is theirs alone (1 − collision rate); also the largest
  and the mean number of items per tuple, and the number of distinct tuples.
- unique prefixes per depth: distinct (c_1..c_d) for d = 1..L (how fast the tree fans out).
- reconstruction RMSE: sqrt(mean over items and dims of (x − decode(code(x)))²), and relative to
  the RMS of x.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch


def level_stats(codes: torch.Tensor, codebook_sizes: list[int]) -> list[dict[str, float]]:
    """codes [N, L] -> per level: used codes, utilisation, entropy (bits), normalised entropy."""
    out = []
    for level, size in enumerate(codebook_sizes):
        _, counts = torch.unique(codes[:, level], return_counts=True)
        p = counts.double() / codes.shape[0]
        entropy = float(-(p * torch.log2(p)).sum())
        out.append(
            {
                "codebook_size": size,
                "used": int(counts.numel()),
                "utilisation": counts.numel() / size,
                "entropy_bits": entropy,
                "entropy_normalised": entropy / math.log2(size) if size > 1 else 1.0,
            }
        )
    return out


def tuple_stats(codes: torch.Tensor) -> dict[str, Any]:
    """codes [N, L] (before de-duplication) -> collision and exclusivity numbers."""
    n = codes.shape[0]
    _, counts = torch.unique(codes, dim=0, return_counts=True)
    shared = int(counts[counts > 1].sum())
    prefixes = [int(torch.unique(codes[:, :depth], dim=0).shape[0]) for depth in range(1, codes.shape[1] + 1)]
    return {
        "items": n,
        "unique_tuples": int(counts.numel()),
        "collision_rate": shared / n,
        "exclusivity": 1.0 - shared / n,
        "max_items_per_tuple": int(counts.max()),
        "mean_items_per_tuple": n / counts.numel(),
        "unique_prefixes": prefixes,
    }


def reconstruction_error(
    embeddings: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    codes: torch.Tensor,
    chunk_size: int = 65536,
) -> dict[str, float]:
    """RMSE of decode(codes) against embeddings [N, D], computed chunk by chunk (float64 sums)."""
    squared_error = squared_norm = 0.0
    for start in range(0, codes.shape[0], chunk_size):
        x = torch.as_tensor(embeddings[start : start + chunk_size]).double()
        x_hat = decode(codes[start : start + chunk_size]).double()
        squared_error += float(((x - x_hat) ** 2).sum())
        squared_norm += float((x**2).sum())
    count = codes.shape[0] * embeddings.shape[1]
    rmse = math.sqrt(squared_error / count)
    return {"reconstruction_rmse": rmse, "relative_rmse": rmse / max(math.sqrt(squared_norm / count), 1e-30)}


def code_diagnostics(
    codes: torch.Tensor,
    codebook_sizes: list[int],
    embeddings: torch.Tensor | None = None,
    decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Everything above for codes [N, L] (no padding row); RMSE only when embeddings and decode are given."""
    codes = torch.as_tensor(codes).long()
    levels = level_stats(codes, codebook_sizes)
    out: dict[str, Any] = {
        "levels": levels,
        "utilisation": [lv["utilisation"] for lv in levels],
        "entropy_bits": [lv["entropy_bits"] for lv in levels],
        "entropy_normalised": [lv["entropy_normalised"] for lv in levels],
        **tuple_stats(codes),
    }
    if embeddings is not None and decode is not None:
        out.update(reconstruction_error(embeddings, decode, codes))
    return out
