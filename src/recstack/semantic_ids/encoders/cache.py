"""On-disk cache of item embeddings: RECSTACK_HOME/embeddings/<encoder>/<model>-<digest>.safetensors.

The key is (encoder name, model id, digest of the encoder config and of what the encoder reads from
the dataset: item texts for "text", train interactions for "collab", the parts' keys for composite
encoders). Change one item's title and the key changes; rename the dataset and it does not. A file
holds one tensor "embeddings" [num_items + 1, D] and, as safetensors metadata, the key and the
encoder's stats (JSON). Writes go to a temporary file in the same folder, then os.replace: readers
never see half a file. A file that cannot be read, or has the wrong row count, is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from recstack.data.dataset import Dataset
from recstack.paths import recstack_home

if TYPE_CHECKING:
    from recstack.semantic_ids.encoders import ItemEncoder


def digest(*parts: Any) -> str:
    """SHA-256 hex of parts: bytes / str as they are, arrays by dtype + shape + bytes, anything else as JSON."""
    hasher = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            hasher.update(f"{part.dtype}{part.shape}".encode())
            data = np.ascontiguousarray(part).tobytes()
        elif isinstance(part, bytes):
            data = part
        elif isinstance(part, str):
            data = part.encode()
        else:
            data = json.dumps(part, sort_keys=True, default=str).encode()
        hasher.update(len(data).to_bytes(8, "little"))  # length prefix: ("ab", "c") != ("a", "bc")
        hasher.update(data)
    return hasher.hexdigest()


def frame_digest(frame: pl.DataFrame, columns: list[str]) -> str:
    """Digest of the given columns of a frame, row order included (null-safe, any dtype)."""
    parts: list[Any] = [columns, frame.height]
    for column in columns:
        series = frame[column]
        if series.dtype.is_numeric():
            parts.append(series.fill_null(0).to_numpy())
            parts.append(series.is_null().to_numpy())
        else:
            parts.append(series.to_list())  # exact values (JSON), so the key does not depend on polars' hash
    return digest(*parts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.")[:60] or "model"


@dataclass(frozen=True)
class CacheKey:
    encoder: str
    model_id: str
    digest: str

    @property
    def relative_path(self) -> Path:
        return Path(_slug(self.encoder)) / f"{_slug(self.model_id)}-{self.digest[:24]}.safetensors"


class EmbeddingCache:
    """Embeddings stored as safetensors under `root` (default RECSTACK_HOME/embeddings)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else recstack_home() / "embeddings"

    def path(self, key: CacheKey) -> Path:
        return self.root / key.relative_path

    def load(self, key: CacheKey, rows: int | None = None) -> tuple[torch.Tensor, dict[str, Any]] | None:
        """(embeddings, stats) or None when absent, unreadable, written under another key, or with != rows rows."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                tensor = handle.get_tensor("embeddings")
        except (SafetensorError, OSError, KeyError):
            return None
        if meta.get("digest") != key.digest or (rows is not None and tensor.shape[0] != rows):
            return None
        return tensor, json.loads(meta.get("stats", "{}"))

    def save(self, key: CacheKey, embeddings: torch.Tensor, stats: dict[str, Any] | None = None) -> Path:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "encoder": key.encoder,
            "model_id": key.model_id,
            "digest": key.digest,
            "stats": json.dumps(stats or {}, default=str),
        }
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
        try:
            save_file({"embeddings": embeddings.detach().float().cpu().contiguous()}, tmp, metadata=meta)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache is meant to be shared by the user's tools
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def encode_items(encoder: ItemEncoder, dataset: Dataset, cache: bool | EmbeddingCache = True) -> torch.Tensor:
    """[num_items + 1, D] embeddings of `dataset`'s items by `encoder`, read from / written to the cache.

    encoder.stats gets "cache": "hit" | "miss" | "off" and "cache_path"; on a hit the stats of the
    run that wrote the file come back with it (and the encoder's model is never loaded).
    """
    from recstack.semantic_ids.encoders import check_embeddings

    store = cache if isinstance(cache, EmbeddingCache) else (EmbeddingCache() if cache else None)
    key = encoder.cache_key(dataset) if store is not None else None
    if store is not None and key is not None:
        found = store.load(key, rows=dataset.num_items + 1)
        if found is not None:
            tensor, stats = found
            encoder.stats = {**stats, "cache": "hit", "cache_path": str(store.path(key))}
            return tensor
    started = time.perf_counter()
    embeddings = check_embeddings(encoder.encode(dataset, cache=store), dataset, encoder.name)
    encoder.stats.setdefault("seconds", time.perf_counter() - started)
    encoder.stats.update(dim=int(embeddings.shape[1]), cache="off" if store is None else "miss")
    if store is not None and key is not None:
        encoder.stats["cache_path"] = str(store.save(key, embeddings, encoder.stats))
    return embeddings
