"""Collaborative item encoder: the item embeddings a trained retriever learned from behaviour.

- SASRec / HSTU (`retrieval/sequential`): the tied item table `model.item_table()` [num_items + 1, D]
  (the input and output embeddings; L2-normalised when the retriever was trained with l2_normalize).
- two-tower (`retrieval/two_tower.py`): the item tower's unit vectors `item_vectors()` [num_items + 1, D].

The retriever is loaded from `path` (a folder written by `Retriever.save`) or, when no path is
given, trained on the dataset's train split (early stopping on valid) with a small config:
`options` overrides `SMALL_CONFIGS[retriever]` key by key (nested `train:` keys too).
Items never seen in training keep their random initial vectors: quantize them with care.
Output: Tensor[num_items + 1, D] float32, row 0 = zeros.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.registry import build, register
from recstack.retrieval.base import Retriever
from recstack.semantic_ids.encoders import ItemEncoder
from recstack.semantic_ids.encoders.cache import EmbeddingCache, digest, frame_digest

# Small, CPU-friendly training budgets for when no trained retriever is given.
SMALL_CONFIGS: dict[str, dict[str, Any]] = {
    "sasrec": {"dim": 64, "max_len": 50, "train": {"epochs": 30, "batch_size": 256, "patience": 3, "progress": False}},
    "hstu": {"dim": 64, "max_len": 50, "train": {"epochs": 30, "batch_size": 256, "patience": 3, "progress": False}},
    "two_tower": {"dim": 64, "train": {"epochs": 10, "batch_size": 512, "patience": 2, "progress": False}},
}


@dataclass
class CollabEncoderConfig:
    retriever: str = "sasrec"  # "sasrec", "hstu" or "two_tower"
    path: str | None = None  # saved retriever folder; None = train one on the dataset
    options: dict[str, Any] = field(default_factory=dict)  # retriever config overrides when training
    normalize: bool = False  # L2-normalise the vectors

    def __post_init__(self) -> None:
        if self.retriever not in SMALL_CONFIGS:
            raise ConfigError(f"collab.retriever {self.retriever!r} is not one of {', '.join(SMALL_CONFIGS)}")


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@torch.no_grad()
def retriever_item_embeddings(retriever: Retriever) -> torch.Tensor:
    """[num_items + 1, D] item vectors of a fitted two-tower or sequential retriever (row 0 = zeros)."""
    if callable(item_vectors := getattr(retriever, "item_vectors", None)):  # two-tower
        vectors = item_vectors()
    elif callable(item_table := getattr(getattr(retriever, "model", None), "item_table", None)):
        vectors = item_table()  # sequential: tied input/output table
    else:
        raise ConfigError(
            f"retriever {retriever.name!r} exposes no item embeddings "
            "(need item_vectors() or model.item_table(); fit or load it first)"
        )
    vectors = vectors.detach().float().cpu().clone()
    vectors[0] = 0.0
    return vectors


def _folder_digest(path: Path) -> str:
    """Digest of a saved retriever folder: its config.json and weight files."""
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors"))
    return digest(*[p.name for p in files], *[p.read_bytes() for p in files])


@register("item_encoder", "collab", config=CollabEncoderConfig)
class CollabEncoder(ItemEncoder):
    name = "collab"
    config: CollabEncoderConfig

    def __init__(self, config: CollabEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or CollabEncoderConfig()
        self.retriever: Retriever | None = None  # the retriever of the last encode

    def model_id(self) -> str:
        path = self.config.path
        return f"{self.config.retriever}-{Path(path).name}" if path else self.config.retriever

    def retriever_spec(self) -> dict[str, Any]:
        return {"name": self.config.retriever, **_merge(SMALL_CONFIGS[self.config.retriever], self.config.options)}

    def fingerprint(self, dataset: Dataset) -> str:
        if self.config.path:
            return _folder_digest(self._folder())
        frame = dataset.interactions  # the retriever trains on train rows and stops early on valid rows
        return digest(
            dataset.num_items,
            dataset.num_users,
            frame_digest(frame, [c for c in ("user", "item", "timestamp", "split") if c in frame.columns]),
            self.retriever_spec(),
        )

    def _folder(self) -> Path:
        assert self.config.path, "only called when collab.path is set"
        path = Path(self.config.path).expanduser()
        if not (path / "config.json").is_file():
            raise DataError(f"collab.path {path}: no saved retriever there (missing config.json)")
        return path

    def load_or_fit(self, dataset: Dataset) -> Retriever:
        if self.config.path:
            retriever = Retriever.load(self._folder())
            if retriever.name != self.config.retriever:
                raise ConfigError(
                    f"collab.path holds a {retriever.name!r} retriever, "
                    f"but collab.retriever is {self.config.retriever!r}"
                )
            return retriever
        return build("retriever", self.retriever_spec(), where="collab.options").fit(dataset)

    def encode(self, dataset: Dataset, cache: EmbeddingCache | None = None) -> torch.Tensor:
        started = time.perf_counter()
        self.retriever = self.load_or_fit(dataset)
        vectors = retriever_item_embeddings(self.retriever)
        if vectors.shape[0] != dataset.num_items + 1:
            raise DataError(
                f"collab: the retriever knows {vectors.shape[0] - 1} items, dataset {dataset.name!r} "
                f"has {dataset.num_items}; use a retriever trained on this dataset"
            )
        if self.config.normalize:
            vectors = F.normalize(vectors, dim=1)
        trained = dataset.item_popularity("train") > 0
        self.stats = {
            "retriever": self.config.retriever,
            "loaded_from": self.config.path or "",
            "items": dataset.num_items,
            "items_without_train_data": int((~trained[1:]).sum()),
            "fit_seconds": time.perf_counter() - started,
        }
        result = getattr(self.retriever, "result", None) or getattr(self.retriever, "train_result", None)
        if result is not None and not self.config.path:
            self.stats["valid_metrics"] = {k: float(v) for k, v in (result.best_metrics or {}).items()}
        return vectors


__all__ = ["SMALL_CONFIGS", "CollabEncoder", "CollabEncoderConfig", "retriever_item_embeddings"]
