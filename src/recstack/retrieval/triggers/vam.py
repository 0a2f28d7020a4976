"""VAM — look-ahead value attribution of CAPTS (METHODS.md §2.5, arXiv 2602.12564).

The paper's fix for biased attribution: a trigger is worth what its *expansion* produced, not the
feedback on the trigger itself. Replay: for each episode's candidate trigger t and I2I channel c,
re-run c's expansion (the top `expansion` neighbours of t in c's table) and credit t with the
engagement the user produced on those items in the future window:

    value[t, c]  = sum_{i in I2I_c(t) ∩ future} weight(i)          (continuous label, [I] flag)
    label[t, c]  = 1[value[t, c] >= threshold]                       (binary label, [I] threshold)
    unique[t, c] = number of future items in I2I_c(t) that no other channel's expansion of t holds

`unique` supervises CATR's uniqueness head (the diversity loss, [I]: METHODS.md gives no formula).
`channel_overlap` measures how much two channels' expansions of the same trigger coincide, the
overlap the router penalises. Everything is sparse matrix algebra over blocks of episodes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from recstack.errors import ConfigError
from recstack.retrieval.i2i import top_n_per_row
from recstack.retrieval.triggers.episodes import TriggerEpisodes

# Episodes per block: bounds the [pairs, items] expansion matrices held at once.
_EPISODES_PER_BLOCK = 2048


@dataclass
class VAMLabels:
    """value / unique: [E, M, C] float (0 on padding candidates); label: [E, M, C] float in {0, 1}."""

    value: torch.Tensor
    label: torch.Tensor
    unique: torch.Tensor
    stats: dict = field(default_factory=dict)


def truncate_neighbours(table: sp.csr_matrix, expansion: int) -> sp.csr_matrix:
    """Each row's `expansion` most similar items (a channel's per-trigger top-N), binary [R, R] CSR."""
    coo = table.tocoo()
    top = top_n_per_row(coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data, expansion, table.shape)
    top.data[:] = 1.0
    return top


def _future_matrix(episodes: TriggerEpisodes, width: int) -> sp.csr_matrix:
    """[E, width] summed future engagement weight per (episode, item)."""
    rows = episodes.future.row_ids().numpy()
    matrix = sp.csr_matrix(
        (episodes.future_weight.numpy().astype(np.float32), (rows, episodes.future.values.numpy())),
        shape=(len(episodes), width),
    )
    matrix.sum_duplicates()
    return matrix


def vam_labels(
    episodes: TriggerEpisodes,
    expansions: dict[str, sp.csr_matrix],
    threshold: float = 1.0,
) -> VAMLabels:
    """Look-ahead labels of every (episode, candidate trigger, channel).

    expansions: channel -> binary top-N table [num_items + 1]^2 (truncate_neighbours). threshold: the
    binary label is value >= threshold (1.0 with unit weights = "the expansion found a future item")."""
    if threshold <= 0:
        raise ConfigError(f"vam threshold must be > 0, got {threshold}")
    started = time.perf_counter()
    names = list(expansions)
    size, width = episodes.candidates.shape
    value = torch.zeros(size, width, len(names))
    unique = torch.zeros(size, width, len(names))
    peak_nonzeros = 0
    for start in range(0, size, _EPISODES_PER_BLOCK):  # blocks of episodes, vectorised inside
        stop = min(size, start + _EPISODES_PER_BLOCK)
        block = episodes.select(torch.arange(start, stop))
        triggers = block.candidates.reshape(-1).numpy()  # [P] pairs (episode, column); 0 = padding
        pair_episode = np.repeat(np.arange(stop - start), width)
        future = _future_matrix(block, next(iter(expansions.values())).shape[1])[pair_episode]  # [P, items]
        hits = {}
        for name in names:
            expanded = expansions[name][triggers]  # [P, items] binary, padding row 0 is empty
            hits[name] = expanded.multiply(future).tocsr()  # weight of each future item the expansion holds
            peak_nonzeros = max(peak_nonzeros, expanded.nnz)
        found_by = sum((h > 0).astype(np.float32) for h in hits.values())  # [P, items] channels per hit
        for c, name in enumerate(names):
            found = hits[name]
            value[start:stop, :, c] = torch.from_numpy(np.asarray(found.sum(1)).ravel().reshape(stop - start, width))
            alone = (found > 0).multiply(found_by == 1)
            unique[start:stop, :, c] = torch.from_numpy(np.asarray(alone.sum(1)).ravel().reshape(stop - start, width))
    label = (value >= threshold).float()
    stats = {
        "episodes": size,
        "pairs": int(episodes.valid.sum()) * len(names),
        "seconds": round(time.perf_counter() - started, 3),
        "peak_expansion_nonzeros": peak_nonzeros,
        "positive_rate": {n: float(label[..., c][episodes.valid].mean()) for c, n in enumerate(names)},
    }
    return VAMLabels(value, label, unique, stats)


def channel_overlap(expansions: dict[str, sp.csr_matrix], items: np.ndarray | None = None) -> torch.Tensor:
    """[C, C] mean share of channel a's top-N expansion of a trigger also in channel b's (diagonal 1).

    items: the triggers to average over (default: every item with neighbours in channel a)."""
    names = list(expansions)
    overlap = torch.eye(len(names))
    for a, name_a in enumerate(names):
        table_a = expansions[name_a]
        rows = items if items is not None else np.flatnonzero(np.diff(table_a.indptr))
        if len(rows) == 0:
            continue
        selected = table_a[rows]
        sizes = np.asarray(selected.sum(1)).ravel()
        for b, name_b in enumerate(names):
            if a != b:
                shared = np.asarray(selected.multiply(expansions[name_b][rows]).sum(1)).ravel()
                overlap[a, b] = float(np.mean(shared / np.maximum(sizes, 1)))
    return overlap
