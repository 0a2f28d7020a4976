"""Behaviour sequences of a generative retriever's context (OneMall, METHODS.md §2.16): which history
items form each sequence, and packing a sequence's items to the right without Python loops.

A behaviour spec maps a sequence name to event names ("*" = every history item). The default is an
"all" sequence (the exposure sequence) plus one sequence per event that some but not all interactions
carry (data.py defines the event codes of history items).
"""

from __future__ import annotations

import torch

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError
from recstack.retrieval.generative.data import event_codes, event_features, event_names


def resolve_behaviours(spec: dict[str, list[str]] | None, event_names: list[str]) -> dict[str, list[int] | None]:
    """{sequence name: event codes (None = every history item)}; unknown event names raise ConfigError."""
    if spec is None:
        return {"all": None, **{name: [code] for code, name in enumerate(event_names, 1)}}
    out: dict[str, list[int] | None] = {}
    for seq, names in spec.items():
        unknown = [n for n in names if n != "*" and n not in event_names]
        if unknown:
            raise ConfigError(f"behaviours.{seq}: unknown events {unknown}; this dataset has {event_names or 'none'}")
        out[seq] = None if "*" in names else [event_names.index(n) + 1 for n in names]
    return out


def default_behaviours(dataset: Dataset, event_labels: list[str] | None) -> dict[str, list[str]]:
    """ "all" + one sequence per event that occurs in the interactions but not in all of them (an event on
    every interaction, e.g. Amazon's constant "view" label, would only repeat the "all" sequence)."""
    columns = event_features(dataset, event_labels)
    names = event_names(dataset, columns)
    frame = dataset.interactions
    codes = event_codes({c: torch.from_numpy(frame[c].to_numpy().copy()) for c in columns}, columns, frame.height)
    counts = torch.bincount(codes, minlength=len(names) + 1).tolist()
    return {"all": ["*"], **{name: [name] for code, name in enumerate(names, 1) if 0 < counts[code] < frame.height}}


def pack(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the masked-in rows of x [B, T, D] right-aligned in order, trimmed to the longest row's count."""
    n = max(int(mask.sum(1).max()), 1)
    index = torch.argsort(mask.to(torch.int8), dim=1, stable=True)[:, -n:]  # False first: real items last
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1])), mask.gather(1, index)
