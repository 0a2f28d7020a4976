"""Target pages and the four families of preference pairs PageLLM learns its rewards from (§2.2).

The target page of a request ([I] target_page = "engaged_first") is its engaged pool items first, then
the fused order. Each family degrades it in one way ([I], METHODS.md §2.2 interpretation):
    relevance   the engaged item in slot 1 is replaced by a non-engaged pool item, of the same category
                when the pool has one
    ranking     the engaged item in slot 1 is swapped with a random lower slot (a position swap)
    diversity   the other slots are refilled with the pool's items of slot 1's category (categories
                collapsed); kept only when that lowers the page's number of categories
    redundancy  a random lower slot is replaced by a near duplicate of slot 1's item (same first two
                semantic-ID levels, else same category)
Relevance and ranking need an engaged item in the pool; diversity and redundancy apply to every request.
All of it runs over the whole batch at once. Pages are pool columns [B, k], -1 = empty slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from recstack.page.base import distinct_per_row
from recstack.page.pagellm.config import PAIR_FAMILIES
from recstack.page.pagellm.context import PageContext


@dataclass
class PreferencePairs:
    """rows [P] context rows; better / worse [P, k] pages; family [P] index into PAIR_FAMILIES."""

    rows: torch.Tensor
    better: torch.Tensor
    worse: torch.Tensor
    family: torch.Tensor

    def subset(self, keep: torch.Tensor) -> PreferencePairs:
        return PreferencePairs(self.rows[keep], self.better[keep], self.worse[keep], self.family[keep])

    def of(self, families: Sequence[str]) -> PreferencePairs:
        wanted = torch.tensor([PAIR_FAMILIES.index(f) for f in families], dtype=torch.long)
        return self.subset(torch.isin(self.family, wanted))

    def counts(self) -> dict[str, int]:
        return {name: int((self.family == i).sum()) for i, name in enumerate(PAIR_FAMILIES)}


def target_pages(context: PageContext, k: int) -> torch.Tensor:
    """[B, k] engaged pool columns first, then the rest in pool (fused) order."""
    n = context.items.shape[1]
    columns = torch.arange(n).expand_as(context.items)
    key = torch.where(context.valid, columns + torch.where(context.engaged, 0, n), 4 * n)
    order = torch.argsort(key, dim=1, stable=True)[:, :k]
    return torch.where(key.gather(1, order) < 4 * n, order, -1)


def _sample(weights: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One column per row drawn in proportion to weights [B, N] >= 0 -> (column [B], row had an option [B])."""
    has = weights.sum(1) > 0
    safe = torch.where(has.unsqueeze(1), weights, torch.ones_like(weights))
    return torch.multinomial(safe, 1, generator=generator).squeeze(1), has


def _prefer(option: torch.Tensor, preferred: torch.Tensor) -> torch.Tensor:
    """Weights: the preferred options where a row has any, else all options."""
    narrowed = option & preferred
    return torch.where(narrowed.any(1, keepdim=True), narrowed, option).float()


def build_pairs(
    context: PageContext,
    codes: torch.Tensor,
    k: int,
    families: list[str],
    per_family: int,
    generator: torch.Generator,
) -> PreferencePairs:
    """codes: [num_items + 1, L] semantic IDs (level 0 = category). Returns every family's pairs."""
    b, n = context.items.shape
    rows_all = torch.arange(b)
    better = target_pages(context, k)
    on_page = torch.zeros(b, n, dtype=torch.bool)
    on_page[rows_all.unsqueeze(1).expand_as(better)[better >= 0], better[better >= 0]] = True
    item_codes = codes[context.items.long()]  # [B, N, L]
    category = item_codes[..., 0]
    first = better[:, 0].clamp(min=0)
    first_code = item_codes[rows_all, first]  # [B, L]
    same_category = category == first_code[:, :1]
    near = (item_codes[..., : min(2, codes.shape[1])] == first_code[:, None, : min(2, codes.shape[1])]).all(2)
    engaged_first = context.engaged[rows_all, first] & (better[:, 0] >= 0)
    off_page = context.valid & ~on_page
    filled = (better >= 0).sum(1)
    parts: list[PreferencePairs] = []

    def add(family: str, worse: torch.Tensor, keep: torch.Tensor) -> None:
        index = PAIR_FAMILIES.index(family)
        parts.append(PreferencePairs(rows_all[keep], better[keep], worse[keep], torch.full((int(keep.sum()),), index)))

    for _ in range(per_family):
        if "relevance" in families:
            column, has = _sample(_prefer(off_page & ~context.engaged, same_category), generator)
            worse = better.clone()
            worse[:, 0] = column
            add("relevance", worse, engaged_first & has)
        if "ranking" in families or "redundancy" in families:
            lower = 1 + (torch.rand(b, generator=generator) * (filled - 1).clamp(min=1)).long()  # slot in 1..filled-1
            lower = lower.clamp(max=k - 1)
        if "ranking" in families and k > 1:
            worse = better.clone()
            worse[rows_all, 0], worse[rows_all, lower] = better[rows_all, lower], better[rows_all, 0]
            add("ranking", worse, engaged_first & (filled > 1))
        if "redundancy" in families and k > 1:
            column, has = _sample(_prefer(off_page & same_category, near), generator)
            worse = better.clone()
            worse[rows_all, lower] = column
            add("redundancy", worse, has & (filled > 1))
    if "diversity" in families and k > 1:
        columns = torch.arange(n).expand(b, n)
        rest = context.valid & (columns != first.unsqueeze(1))
        slot_of = torch.full((b, n), n, dtype=torch.long)
        slot_of[rows_all.unsqueeze(1).expand_as(better)[better >= 0], better[better >= 0]] = torch.arange(k).expand_as(
            better
        )[better >= 0]
        key = torch.where(rest & same_category, columns, torch.where(rest & on_page, n + slot_of, 4 * n))
        fill = torch.argsort(key, dim=1, stable=True)[:, : k - 1]
        fill = torch.where(key.gather(1, fill) < 4 * n, fill, -1)
        worse = torch.cat([better[:, :1], fill], dim=1)
        fewer = distinct_per_row(category.gather(1, worse.clamp(min=0)), worse >= 0) < distinct_per_row(
            category.gather(1, better.clamp(min=0)), better >= 0
        )
        add("diversity", worse, fewer)
    if not parts:
        empty = torch.empty(0, k, dtype=torch.long)
        return PreferencePairs(torch.empty(0, dtype=torch.long), empty, empty, torch.empty(0, dtype=torch.long))
    return PreferencePairs(*(torch.cat([getattr(p, f) for p in parts]) for f in ("rows", "better", "worse", "family")))
