"""SemanticIds: every item's code tuple, made unique, with a prefix trie for constrained decoding.

`codes` is LongTensor[num_items + 1, L + 1] aligned with recstack item ids: row i is item i.
Row 0 (padding) is all zeros and is *not* an item: the trie never admits it and `item_of` returns
0 for "no item". Columns 0..L−1 are the quantizer's codes; column L is the de-duplication level:
items sharing a tuple get 0, 1, 2, … in item-id order, so every full tuple names one item.

PrefixTrie: per depth d a sorted int64 array `keys[d]` of valid children, key = parent·size_d + c_d,
where a node's id is its position in the previous depth's array (ids stay < num_items, so keys never
overflow). Node ids follow lexicographic order, so the items under a prefix are one contiguous
range of the items sorted by tuple. Lookups walk the depths with searchsorted, vectorised over B.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recstack.data.jagged import Jagged
from recstack.errors import DataError
from recstack.semantic_ids.base import Quantizer
from recstack.semantic_ids.diagnostics import code_diagnostics
from recstack.train.checkpoint import atomic_dir, write_json


def dedup_level(codes: torch.Tensor) -> torch.Tensor:
    """codes [N, L] -> LongTensor[N]: rank of each row among the rows with the same tuple (stable by row)."""
    _, group = torch.unique(codes, dim=0, return_inverse=True)
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(group)
    rank[order] = torch.arange(codes.shape[0]) - start[group[order]]
    return rank


class PrefixTrie:
    """Trie over unique tuples codes [N, L] of items 1..N (row r is item r + 1)."""

    def __init__(self, codes: torch.Tensor, codebook_sizes: list[int]) -> None:
        self.sizes = list(codebook_sizes)
        self.keys: list[torch.Tensor] = []
        node = torch.zeros(codes.shape[0], dtype=torch.long)
        for depth, size in enumerate(self.sizes):
            keys, node = torch.unique(node * size + codes[:, depth], sorted=True, return_inverse=True)
            self.keys.append(keys)
        if self.keys[-1].numel() != codes.shape[0]:
            raise DataError("PrefixTrie: item tuples are not unique; add a de-duplication level first")
        self.leaf_items = torch.empty(codes.shape[0], dtype=torch.long)
        self.leaf_items[node] = torch.arange(1, codes.shape[0] + 1)
        # leaf_start[d][n]: first leaf under node n at depth d (nodes and leaves share lexicographic order)
        ancestor = torch.arange(codes.shape[0])
        self.leaf_start = [torch.arange(codes.shape[0] + 1)]
        for depth in range(len(self.sizes) - 1, -1, -1):
            ancestor = torch.div(self.keys[depth][ancestor], self.sizes[depth], rounding_mode="floor")
            num_nodes = self.keys[depth - 1].numel() if depth > 0 else 1
            self.leaf_start.insert(0, torch.searchsorted(ancestor, torch.arange(num_nodes + 1)))

    @property
    def depth(self) -> int:
        return len(self.sizes)

    def walk(self, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """prefix [B, d] -> (node id at depth d [B], valid [B]); invalid rows get node 0."""
        prefix = torch.as_tensor(prefix).long()
        if prefix.dim() != 2 or prefix.shape[1] > self.depth:
            raise DataError(f"prefix must be [B, d] with d <= {self.depth}, got {tuple(prefix.shape)}")
        node = torch.zeros(prefix.shape[0], dtype=torch.long)
        valid = torch.ones(prefix.shape[0], dtype=torch.bool)
        for depth in range(prefix.shape[1]):
            size, keys = self.sizes[depth], self.keys[depth]
            code = prefix[:, depth]
            valid &= (code >= 0) & (code < size)
            key = node * size + code.clamp(0, size - 1)
            pos = torch.searchsorted(keys, key).clamp_max(keys.numel() - 1)
            valid &= keys[pos] == key
            node = torch.where(valid, pos, 0)
        return node, valid

    def allowed_next(self, prefix: torch.Tensor) -> torch.Tensor:
        """prefix [B, d] (d < depth) -> BoolTensor[B, size_d]: tokens that extend it towards an item."""
        prefix = torch.as_tensor(prefix).long()
        if prefix.dim() != 2 or prefix.shape[1] >= self.depth:
            raise DataError(f"allowed_next: prefix must be [B, d] with d < {self.depth}, got {tuple(prefix.shape)}")
        node, valid = self.walk(prefix)
        depth, size = prefix.shape[1], self.sizes[prefix.shape[1]]
        keys = self.keys[depth]
        lo = torch.searchsorted(keys, node * size)
        counts = (torch.searchsorted(keys, (node + 1) * size) - lo) * valid
        rows = torch.repeat_interleave(torch.arange(node.numel()), counts)
        first = torch.cumsum(counts, 0) - counts
        positions = torch.arange(rows.numel()) - first[rows] + lo[rows]
        mask = torch.zeros(node.numel(), size, dtype=torch.bool)
        mask[rows, keys[positions] - node[rows] * size] = True
        return mask

    def item_of(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, depth] -> item ids [B] (0 where the tuple names no item)."""
        codes = torch.as_tensor(codes).long()
        if codes.dim() != 2 or codes.shape[1] != self.depth:
            raise DataError(f"item_of: codes must be [B, {self.depth}], got {tuple(codes.shape)}")
        node, valid = self.walk(codes)
        return torch.where(valid, self.leaf_items[node], 0)

    def items_with_prefix(self, prefix: torch.Tensor) -> Jagged:
        """prefix [B, d] -> Jagged rows of item ids under each prefix (ordered by tuple; empty if invalid)."""
        prefix = torch.as_tensor(prefix).long()
        node, valid = self.walk(prefix)
        starts = self.leaf_start[prefix.shape[1]]
        lo, hi = starts[node], starts[node + 1]
        counts = (hi - lo) * valid
        rows = torch.repeat_interleave(torch.arange(node.numel()), counts)
        first = torch.cumsum(counts, 0) - counts
        leaves = torch.arange(rows.numel()) - first[rows] + lo[rows]
        return Jagged.from_lengths(self.leaf_items[leaves], counts)


class SemanticIds:
    """codes [num_items + 1, L + 1] (row 0 padding = zeros, last column = de-duplication level),
    codebook_sizes (L + 1 entries; the last is the largest group of items sharing a tuple)."""

    def __init__(self, codes: torch.Tensor, codebook_sizes: list[int], quantizer: Quantizer | None = None) -> None:
        if codes.dim() != 2 or codes.shape[0] < 2 or codes.shape[1] != len(codebook_sizes):
            raise DataError(
                f"SemanticIds: codes must be [num_items + 1, {len(codebook_sizes)}] with row 0 the "
                f"padding row, got {tuple(codes.shape)}; use SemanticIds.from_codes for raw codes"
            )
        self.codes = codes.long()
        self.codebook_sizes = list(codebook_sizes)
        self.quantizer = quantizer
        self._trie: PrefixTrie | None = None

    @classmethod
    def from_codes(
        cls, codes: torch.Tensor, codebook_sizes: list[int], quantizer: Quantizer | None = None
    ) -> SemanticIds:
        """codes [num_items, L] for items 1..num_items (no padding row) -> SemanticIds with dedup level."""
        codes = torch.as_tensor(codes).long()
        if codes.dim() != 2 or codes.shape[1] != len(codebook_sizes) or codes.shape[0] == 0:
            raise DataError(f"SemanticIds: codes must be [num_items, {len(codebook_sizes)}], got {tuple(codes.shape)}")
        bad = (codes < 0) | (codes >= torch.tensor(codebook_sizes))
        if bool(bad.any()):
            row, level = (int(v) for v in torch.nonzero(bad)[0])
            raise DataError(
                f"SemanticIds: code {int(codes[row, level])} of item {row + 1} at level {level} "
                f"is outside [0, {codebook_sizes[level]})"
            )
        rank = dedup_level(codes)
        full = torch.cat([codes, rank[:, None]], 1)
        padded = torch.cat([torch.zeros(1, full.shape[1], dtype=torch.long), full], 0)
        return cls(padded, list(codebook_sizes) + [int(rank.max()) + 1], quantizer)

    @classmethod
    def from_quantizer(
        cls, quantizer: Quantizer, item_embeddings: torch.Tensor, padding_row: bool = True
    ) -> SemanticIds:
        """Encode item embeddings ([num_items + 1, D] with row 0 padding, or [num_items, D] when
        padding_row is False) with a fitted quantizer."""
        rows = item_embeddings[1:] if padding_row else item_embeddings
        return cls.from_codes(quantizer.encode(rows), quantizer.codebook_sizes, quantizer)

    # ---- views -------------------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return self.codes.shape[0] - 1

    @property
    def levels(self) -> int:
        """Code columns including the de-duplication level."""
        return self.codes.shape[1]

    @property
    def base_codes(self) -> torch.Tensor:
        """[num_items + 1, L] the quantizer's codes, without the de-duplication level."""
        return self.codes[:, :-1]

    @property
    def prefix_trie(self) -> PrefixTrie:
        if self._trie is None:
            self._trie = PrefixTrie(self.codes[1:], self.codebook_sizes)
        return self._trie

    def codes_of(self, items: torch.Tensor) -> torch.Tensor:
        """item ids [...] -> codes [..., L + 1]."""
        items = torch.as_tensor(items).long()
        if bool(((items < 0) | (items > self.num_items)).any()):
            raise DataError(f"codes_of: item ids must be in [0, {self.num_items}]")
        return self.codes[items]

    def allowed_next(self, prefix_codes: torch.Tensor) -> torch.Tensor:
        """[B, d] -> BoolTensor[B, codebook_sizes[d]]."""
        return self.prefix_trie.allowed_next(prefix_codes)

    def item_of(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, L + 1] -> item ids [B], 0 where invalid."""
        return self.prefix_trie.item_of(codes)

    def items_with_prefix(self, prefix: torch.Tensor) -> torch.Tensor | Jagged:
        """prefix [d] -> item ids [M]; prefixes [B, d] -> Jagged rows of item ids."""
        prefix = torch.as_tensor(prefix).long()
        if prefix.dim() == 1:
            return self.prefix_trie.items_with_prefix(prefix[None]).values
        return self.prefix_trie.items_with_prefix(prefix)

    def diagnostics(self, embeddings: torch.Tensor | None = None) -> dict[str, Any]:
        """code_diagnostics of the base codes (collisions before de-duplication) + dedup level size;
        reconstruction RMSE when item embeddings ([num_items + 1, D] or [num_items, D]) are given
        and a quantizer is attached."""
        decode = None
        if embeddings is not None:
            if self.quantizer is None:
                raise DataError("SemanticIds.diagnostics: reconstruction needs the quantizer; none is attached")
            if embeddings.shape[0] == self.num_items + 1:
                embeddings = embeddings[1:]
            decode = self.quantizer.decode
        out = code_diagnostics(self.base_codes[1:], self.codebook_sizes[:-1], embeddings, decode)
        out["dedup_level_size"] = self.codebook_sizes[-1]
        return out

    # ---- persistence ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """codes.safetensors + semantic_ids.json (+ quantizer/ when one is attached), atomically."""
        with atomic_dir(path) as tmp:
            save_file({"codes": self.codes.contiguous()}, str(tmp / "codes.safetensors"))
            write_json(
                tmp / "semantic_ids.json",
                {
                    "codebook_sizes": self.codebook_sizes,
                    "num_items": self.num_items,
                    "quantizer": self.quantizer.name if self.quantizer else None,
                },
            )
            if self.quantizer is not None:
                self.quantizer.save(tmp / "quantizer")

    @classmethod
    def load(cls, path: str | Path) -> SemanticIds:
        path = Path(path)
        try:
            meta = json.loads((path / "semantic_ids.json").read_text())
            codes = load_file(str(path / "codes.safetensors"))["codes"]
        except (OSError, KeyError, json.JSONDecodeError, SafetensorError) as exc:
            raise DataError(f"{path}: no readable saved SemanticIds: {exc}") from exc
        quantizer = Quantizer.load(path / "quantizer") if (path / "quantizer").is_dir() else None
        return cls(codes, meta["codebook_sizes"], quantizer)
