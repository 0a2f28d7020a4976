"""AnnIndex: maximum-inner-product search over item vectors with FAISS (flat, HNSW or IVF).

Item ids travel inside the index (an IndexIDMap2), so `search` returns item ids directly. History
exclusion over-fetches k + (longest excluded row) neighbours and drops the excluded ones
afterwards, so every row still gets k results when the catalogue has them. Persistence is FAISS's
own binary format (`faiss.write_index`, not pickle) plus a JSON file with the config.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
import torch

from recstack.config import from_dict, to_dict
from recstack.data.batch import Candidates, UserBatch
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError, DataError


@dataclass
class AnnConfig:
    """kind: "flat" (exact), "hnsw" (graph; hnsw_m links per node, ef_* beam widths) or "ivf"
    (k-means buckets; nlist buckets, nprobe of them searched). Metric: inner product.
    threads: FAISS OpenMP threads (kept small: the index shares the machine with training)."""

    kind: Literal["flat", "hnsw", "ivf"] = "flat"
    nlist: int = 100
    nprobe: int = 10
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    threads: int = 2

    def __post_init__(self) -> None:
        for key in ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search", "threads"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"ann.{key} must be > 0, got {getattr(self, key)!r}")


@contextmanager
def faiss_threads(threads: int) -> Iterator[None]:
    """Run FAISS with `threads` OpenMP threads, then restore the previous count.

    FAISS and torch share the OpenMP runtime, so a bare omp_set_num_threads would also change
    torch's intra-op threads for the rest of the process.
    """
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class AnnIndex:
    def __init__(self, config: AnnConfig | None = None) -> None:
        self.config = config or AnnConfig()
        self.index: faiss.Index | None = None
        self.nlist_used: int | None = None  # nlist after clamping to the catalogue size (IVF only)

    @property
    def size(self) -> int:
        return 0 if self.index is None else int(self.index.ntotal)

    def build(self, vectors: torch.Tensor, ids: torch.Tensor) -> AnnIndex:
        """vectors: [N, D] float; ids: [N] int64 (returned by `search`; must be >= 0)."""
        if vectors.dim() != 2 or ids.shape != (vectors.shape[0],):
            raise DataError(
                f"AnnIndex.build: expected vectors [N, D] and ids [N], got "
                f"{tuple(vectors.shape)} and {tuple(ids.shape)}"
            )
        if vectors.shape[0] == 0:
            raise DataError("AnnIndex.build: no vectors to index")
        x = np.ascontiguousarray(vectors.detach().cpu().float().numpy())
        n, dim = x.shape
        cfg = self.config
        base: faiss.Index
        if cfg.kind == "flat":
            base = faiss.IndexFlatIP(dim)
        elif cfg.kind == "hnsw":
            base = hnsw = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = cfg.ef_construction
        else:
            # k-means needs a few points per bucket; FAISS warns below 39 per centroid.
            self.nlist_used = max(1, min(cfg.nlist, n // 39))
            base = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, self.nlist_used, faiss.METRIC_INNER_PRODUCT)
        index = faiss.IndexIDMap2(base)
        with faiss_threads(cfg.threads):
            if cfg.kind == "ivf":
                base.train(x)
            index.add_with_ids(x, np.ascontiguousarray(ids.detach().cpu().numpy().astype(np.int64)))
        self.index = index
        self._apply_search_parameters()
        return self

    def _apply_search_parameters(self) -> None:
        assert self.index is not None  # called right after build / load set it
        space = faiss.ParameterSpace()
        if self.config.kind == "hnsw":
            space.set_index_parameter(self.index, "efSearch", self.config.ef_search)
        elif self.config.kind == "ivf":
            space.set_index_parameter(self.index, "nprobe", self.config.nprobe)

    def search(self, queries: torch.Tensor, k: int, exclude: Jagged | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """queries: [B, D]; exclude: Jagged with B rows of ids to leave out (e.g. the user's history).

        Returns ids [B, k] int64 and scores [B, k] float32, best first; slots without a result
        hold id 0 and score -inf.
        """
        if self.index is None:
            raise DataError("AnnIndex.search: the index is empty; call build() or load() first")
        b = queries.shape[0]
        if exclude is not None and exclude.num_rows != b:
            raise DataError(f"AnnIndex.search: {b} queries but exclude has {exclude.num_rows} rows")
        extra = int(exclude.lengths().max()) if exclude is not None and b > 0 else 0
        fetch = max(1, min(k + extra, self.size))
        q = np.ascontiguousarray(queries.detach().cpu().float().numpy())
        with faiss_threads(self.config.threads):
            scores_np, ids_np = self.index.search(q, fetch)
        ids, scores = torch.from_numpy(ids_np), torch.from_numpy(scores_np)
        valid = ids >= 0  # FAISS marks missing neighbours with -1
        if exclude is not None and exclude.values.numel() > 0:
            # Row-wise membership through one flat key row * span + id (vectorised, no loop over rows).
            span = int(max(int(ids.max()), int(exclude.values.max()))) + 1
            excluded_keys = exclude.row_ids() * span + exclude.values.long()
            keys = torch.arange(b).unsqueeze(1) * span + ids.clamp(min=0)
            valid &= ~torch.isin(keys, excluded_keys)
        scores = scores.masked_fill(~valid, float("-inf"))
        # FAISS returns rows sorted best first; a stable sort moves dropped slots to the end.
        order = torch.sort(valid.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :k]
        ids, scores, valid = ids.gather(1, order), scores.gather(1, order), valid.gather(1, order)
        ids = ids.masked_fill(~valid, 0)
        if ids.shape[1] < k:  # catalogue smaller than k
            pad = k - ids.shape[1]
            ids = torch.cat([ids, ids.new_zeros(b, pad)], 1)
            scores = torch.cat([scores, scores.new_full((b, pad), float("-inf"))], 1)
        return ids, scores

    # ---- persistence --------------------------------------------------------------------------
    def save(self, folder: str | Path, name: str = "ann") -> None:
        """Write `folder/<name>.faiss` (FAISS binary format) and `folder/<name>.json`."""
        if self.index is None:
            raise DataError("AnnIndex.save: nothing to save; build the index first")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.faiss.tmp"
        faiss.write_index(self.index, str(tmp))
        tmp.replace(folder / f"{name}.faiss")
        meta = {"config": to_dict(self.config), "size": self.size, "nlist_used": self.nlist_used}
        (folder / f"{name}.json").write_text(json.dumps(meta, indent=1))

    @staticmethod
    def load(folder: str | Path, name: str = "ann") -> AnnIndex:
        folder = Path(folder)
        files = folder / f"{name}.faiss", folder / f"{name}.json"
        for file in files:
            if not file.is_file():
                raise DataError(f"no saved ANN index at {folder} (missing {file.name})")
        meta = json.loads(files[1].read_text())
        ann = AnnIndex(from_dict(AnnConfig, meta["config"], "ann"))
        ann.index = faiss.read_index(str(files[0]))
        ann.nlist_used = meta.get("nlist_used")
        if ann.size != meta["size"]:
            raise DataError(f"{files[0]}: holds {ann.size} vectors but {files[1].name} says {meta['size']}")
        ann._apply_search_parameters()
        return ann


def ann_candidates(
    index: AnnIndex,
    queries: torch.Tensor,
    batch: UserBatch,
    k: int,
    exclude_history: bool,
    channel: str,
    scale: float = 1.0,
) -> Candidates:
    """A retriever's top-k from the index: queries [B, D] (user vectors), history left out when asked,
    scores multiplied by `scale` (e.g. 1 / temperature, so they match the exact path's score_all)."""
    ids, scores = index.search(queries, min(k, index.size), batch.history if exclude_history else None)
    return Candidates.from_topk(ids, scores * scale, channel)
