"""Batched beam search over semantic-ID tuples, constrained by the SemanticIds prefix trie.

All users decode together: rows R = users x beams, one `model.step` call per code level. At level l
every row's log-probs [R, V_l] are added to its beam score; codes that do not extend the row's
prefix towards an item are set to -inf (constrained mode), so every finished tuple names an item.
The scores of all B x V_l continuations of a user are flattened and the best `beams` kept (topk);
the model state is reordered to follow them (`model.reorder`). The final level keeps the best k.

Child lookups are one vectorised searchsorted over the trie's sorted keys for all [R, V_l]
(row, code) pairs: it gives the "allowed" mask and the id of each child node at once.

History masking (exclude): a child whose whole subtree consists of items in the user's history is
set to -inf at every level, not only at the last one, so no beam is spent on a prefix that can only
end in a history item. Hence with beams >= k, k non-history items come out whenever the catalogue
has them (the beams are the over-generation). beams = max(beam_size, k).

Unconstrained mode (ablation): nothing is masked for validity (history items still are); finished
tuples that name no item are counted (`invalid_share`) and returned as empty slots (item 0, -inf).
Slots without an item (fewer than k valid continuations) are item 0 with score -inf, after the
real items; `filled_share` is their share. Items are never repeated (tuples are unique per item and
distinct beams have distinct prefixes).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from recstack.data.jagged import Jagged
from recstack.errors import DataError
from recstack.retrieval.generative.base import GenerativeModel
from recstack.semantic_ids.semantic_ids import PrefixTrie

_ITEM_NODES: weakref.WeakKeyDictionary[PrefixTrie, list[torch.Tensor]] = weakref.WeakKeyDictionary()


@dataclass
class BeamResult:
    """items [U, k] (0 = empty slot), scores [U, k] (sum of code log-probs; -inf at empty slots),
    codes [U, k, C] (the decoded tuples, also the invalid ones), invalid_share (finished tuples naming
    no item / all finished tuples; 0 when constrained), filled_share (empty slots / U k)."""

    items: torch.Tensor
    scores: torch.Tensor
    codes: torch.Tensor
    invalid_share: float
    filled_share: float


def item_nodes(trie: PrefixTrie) -> list[torch.Tensor]:
    """[depth + 1] tensors [num_items + 1]: the node id of each item's path after d codes (item 0: -1)."""
    if trie not in _ITEM_NODES:
        num = trie.leaf_items.numel()
        leaf_of = torch.empty(num + 1, dtype=torch.long)
        leaf_of[trie.leaf_items] = torch.arange(num)
        leaf_of[0] = 0
        nodes = [torch.searchsorted(starts, leaf_of, right=True) - 1 for starts in trie.leaf_start]
        for node in nodes:
            node[0] = -1
        _ITEM_NODES[trie] = nodes
    return _ITEM_NODES[trie]


def children(trie: PrefixTrie, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """prefix [R, d] -> (exists [R, V_d] bool, child node id [R, V_d] at depth d + 1, 0 where absent)."""
    node, valid = trie.walk(prefix)
    depth = prefix.shape[1]
    size, keys = trie.sizes[depth], trie.keys[depth]
    key = node[:, None] * size + torch.arange(size)
    pos = torch.searchsorted(keys, key).clamp_max(keys.numel() - 1)
    exists = (keys[pos] == key) & valid[:, None]
    return exists, torch.where(exists, pos, 0)


def history_keys(exclude: Jagged, trie: PrefixTrie, depth: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Sorted keys user_row * M + node (depth `depth`) of the users' distinct history items, with the
    number of distinct history items under each key, and M (nodes at that depth)."""
    num_nodes = trie.keys[depth - 1].numel()
    items = exclude.values.long()
    rows = exclude.row_ids()
    known = (items > 0) & (items <= trie.leaf_items.numel())
    pairs = torch.unique(rows[known] * (trie.leaf_items.numel() + 1) + items[known])  # distinct (user, item)
    users, items = pairs // (trie.leaf_items.numel() + 1), pairs % (trie.leaf_items.numel() + 1)
    keys, counts = torch.unique(users * num_nodes + item_nodes(trie)[depth][items], return_counts=True)
    return keys, counts, num_nodes


def mask_history_subtrees(
    scores: torch.Tensor,
    child: torch.Tensor,
    exists: torch.Tensor,
    trie: PrefixTrie,
    exclude: Jagged,
    beams: int,
    depth: int,
) -> torch.Tensor:
    """-inf where the child (depth `depth`) lies under a subtree made only of the row's history items."""
    keys, counts, num_nodes = history_keys(exclude, trie, depth)
    if keys.numel() == 0:
        return scores
    user = torch.div(torch.arange(scores.shape[0]), beams, rounding_mode="floor")
    query = user[:, None] * num_nodes + child
    pos = torch.searchsorted(keys, query).clamp_max(keys.numel() - 1)
    in_history = torch.where(keys[pos] == query, counts[pos], 0)
    starts = trie.leaf_start[depth]
    size = starts[child + 1] - starts[child]
    return scores.masked_fill(exists & (in_history >= size), float("-inf"))


@torch.no_grad()
def beam_search(
    model: GenerativeModel,
    batch: dict[str, torch.Tensor],
    trie: PrefixTrie,
    k: int,
    beam_size: int = 20,
    use_cache: bool = True,
    constrained: bool = True,
    exclude: Jagged | None = None,
) -> BeamResult:
    """Top-k items per user of `batch` (U users) by summed code log-probability.

    exclude: Jagged with U rows of item ids that must not be returned (the users' histories), or None.
    """
    if k <= 0 or beam_size <= 0:
        raise DataError(f"beam_search: k and beam_size must be > 0, got {k} and {beam_size}")
    if model.codebook_sizes != trie.sizes:
        raise DataError(f"beam_search: the model decodes codebooks {model.codebook_sizes}, the trie has {trie.sizes}")
    users = batch["users"].shape[0]
    if exclude is not None and exclude.num_rows != users:
        raise DataError(f"beam_search: exclude has {exclude.num_rows} rows for {users} users")
    beams, levels = max(beam_size, k), trie.depth
    if users == 0:
        empty = torch.zeros(0, k, dtype=torch.long)
        return BeamResult(empty, empty.float(), torch.zeros(0, k, levels, dtype=torch.long), 0.0, 0.0)
    state = model.begin(batch)
    prefix = torch.zeros(users, 0, dtype=torch.long)
    score = torch.zeros(users, 1)  # [U, beams of the previous level]
    for level in range(levels):
        log_probs, state = model.step(state, prefix.to(log_probs_device(batch)), use_cache)
        log_probs = log_probs.float().cpu()
        exists, child = children(trie, prefix)
        if constrained:
            log_probs = log_probs.masked_fill(~exists, float("-inf"))
        if exclude is not None:
            log_probs = mask_history_subtrees(log_probs, child, exists, trie, exclude, score.shape[1], level + 1)
        size = log_probs.shape[1]
        total = (score.reshape(-1, 1) + log_probs).view(users, -1)  # [U, b * V]
        keep = min(k if level == levels - 1 else beams, total.shape[1])
        top_scores, top = torch.topk(total, keep, dim=1)
        rows = (torch.arange(users)[:, None] * score.shape[1] + torch.div(top, size, rounding_mode="floor")).reshape(-1)
        codes = (top % size).reshape(-1, 1)
        prefix, score = torch.cat([prefix[rows], codes], 1), top_scores
        if level < levels - 1:
            state = model.reorder(state, rows.to(log_probs_device(batch)))
        else:
            items = torch.where(exists[rows, codes[:, 0]], trie.leaf_items[child[rows, codes[:, 0]]], 0)
    items = items.view(users, keep)
    finished = torch.isfinite(score)
    invalid = finished & (items == 0)
    invalid_share = float(invalid.sum()) / max(int(finished.sum()), 1)
    score = score.masked_fill(items == 0, float("-inf"))
    order = torch.argsort(score, dim=1, descending=True, stable=True)  # empty slots after the real items
    items, score = (
        items.gather(1, order).masked_fill(~torch.isfinite(score.gather(1, order)), 0),
        score.gather(1, order),
    )
    codes = prefix.view(users, keep, levels).gather(1, order[..., None].expand(-1, -1, levels))
    if keep < k:  # tiny catalogues: fewer continuations than k
        pad = k - keep
        items = torch.cat([items, torch.zeros(users, pad, dtype=torch.long)], 1)
        score = torch.cat([score, torch.full((users, pad), float("-inf"))], 1)
        codes = torch.cat([codes, torch.zeros(users, pad, levels, dtype=torch.long)], 1)
    return BeamResult(items, score, codes, invalid_share, float((items == 0).float().mean()))


def log_probs_device(batch: dict[str, torch.Tensor]) -> torch.device:
    return batch["users"].device
