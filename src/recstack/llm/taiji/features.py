"""Enhancer features from the LLM's reasoning (Taiji, METHODS.md §2.1, step 4; `LLMFeatureQuantizer`).

Each user's chain of thought + answer (the student's output on the user's train history) is embedded
with MiniLM, quantised into a semantic ID with any registered quantizer (semantic_ids/, default
RQ-KMeans) fitted on these users, and written as sparse categorical user columns that every ranker
reads through its feature schema (ranking/features.py: low-cardinality string columns of the users
table become embedding fields) — the ranker's architecture does not change:

    llm_sid_1 .. llm_sid_L   the code of each level, as a prefix string ("12", "12-3", ...) [I prefix_codes]
    llm_similar_items        "similar users": the most recent distinct items ("i|j|...") of the users that
                             share the first `similar_level` code levels [I], from train rows only —
                             an extra, mean-pooled history field [I: a user-side bag, the only history-like
                             input a ranker takes without changing it]

    quantizer = LLMFeatureQuantizer(FeaturesConfig(), embedder)
    frame = quantizer.build(dataset, users, texts)       # polars: raw_id, user, llm_sid_*, llm_similar_items

`recstack llm features` writes the frame as Parquet; a run config's `enhancer: {features: FILE}` joins it
into the users table the ranker is fitted on (enhancer.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
import torch

from recstack.data.dataset import SPLIT_CODES, Dataset
from recstack.errors import ConfigError, DataError
from recstack.llm.taiji.answer import parse_output
from recstack.llm.taiji.embedding import TextEmbedder
from recstack.registry import build
from recstack.semantic_ids.base import Quantizer


@dataclass
class FeaturesConfig:
    text: Literal["output", "answer", "reasoning"] = "output"  # [I] what is embedded: the whole output (CoT + answer)
    quantizer: dict[str, Any] = field(default_factory=lambda: {"name": "rq_kmeans", "levels": 2, "codebook_size": 16})
    shrink_codebook: bool = True  # [I] cap codebook_size at the number of users / 2 for small user sets
    prefix_codes: bool = True  # [I] level l's token is the code prefix 1..l (so deeper tokens are unique per parent)
    column_prefix: str = "llm_sid"
    similar: bool = True
    similar_level: int | None = None  # [I] levels two users must share to be "similar" (None = all)
    similar_items: int = 20
    similar_column: str = "llm_similar_items"
    max_new_tokens: int = 256  # the student's output length when generating the texts
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.similar_items <= 0:
            raise ConfigError(f"features.similar_items must be > 0, got {self.similar_items}")
        if self.similar_level is not None and self.similar_level <= 0:
            raise ConfigError(f"features.similar_level must be > 0 or null, got {self.similar_level}")


def feature_text(output: str, mode: str) -> str:
    """The part of a model output that is embedded (falls back to the whole output when it has no answer)."""
    if mode == "output":
        return output.strip()
    parsed = parse_output(output)
    if mode == "answer":
        return parsed.answer.intent_text if parsed.answer is not None else output.strip()
    return parsed.reasoning or output.strip()


class LLMFeatureQuantizer:
    def __init__(self, config: FeaturesConfig | None = None, embedder: TextEmbedder | None = None) -> None:
        self.config = config or FeaturesConfig()
        self.embedder = embedder or TextEmbedder()
        self.quantizer: Quantizer | None = None

    def quantizer_spec(self, rows: int) -> dict[str, Any]:
        spec = dict(self.config.quantizer)
        if self.config.shrink_codebook and "codebook_size" in spec:
            spec["codebook_size"] = max(1, min(int(spec["codebook_size"]), rows // 2))
        return spec

    def codes(self, texts: Sequence[str]) -> torch.Tensor:
        """Fit the quantizer on the texts' embeddings -> codes [U, L]."""
        if not texts:
            raise DataError("features: no user texts to quantise")
        vectors = self.embedder.encode([feature_text(t, self.config.text) or "(empty)" for t in texts])
        self.quantizer = build("quantizer", self.quantizer_spec(len(texts)), where="features.quantizer")
        return self.quantizer.fit(vectors).encode(vectors)

    def build(self, dataset: Dataset, users: Sequence[int], texts: Sequence[str]) -> pl.DataFrame:
        """One row per user (internal ids `users`, aligned with `texts`): raw_id, user, code columns, similar items."""
        if len(users) != len(texts):
            raise DataError(f"{len(users)} users but {len(texts)} texts")
        codes = self.codes(texts)
        return self.table(dataset, users, codes)

    def table(self, dataset: Dataset, users: Sequence[int], codes: torch.Tensor) -> pl.DataFrame:
        c = self.config
        users_arr = np.asarray(list(users), dtype=np.int64)
        raw = dataset.users["raw_id"].cast(pl.String).to_numpy()[users_arr - 1]
        text = codes.numpy().astype(str)
        columns: dict[str, Any] = {"raw_id": raw, "user": users_arr.astype(np.int32)}
        prefix = text[:, 0].astype(object)
        for level in range(codes.shape[1]):  # a loop over the few code levels
            if level > 0:
                prefix = (
                    prefix + "-" + text[:, level].astype(object) if c.prefix_codes else text[:, level].astype(object)
                )
            columns[f"{c.column_prefix}_{level + 1}"] = prefix.astype(str)
        frame = pl.DataFrame(columns)
        if not c.similar:
            return frame
        depth = codes.shape[1] if c.similar_level is None else min(c.similar_level, codes.shape[1])
        groups = pl.DataFrame({"user": users_arr.astype(np.int32), "group": ["-".join(r) for r in text[:, :depth]]})
        recent = (
            dataset.interactions.filter(pl.col("split") < SPLIT_CODES["valid"])
            .select(pl.col("user").cast(pl.Int32), "item", "timestamp")
            .join(groups, on="user")
            .sort(["timestamp", "item"], descending=True)
            .unique(["group", "item"], keep="first", maintain_order=True)
            .group_by("group", maintain_order=True)
            .head(c.similar_items)
            .group_by("group")
            .agg(pl.col("item").cast(pl.String).str.join("|").alias(c.similar_column))
        )
        similar = groups.join(recent, on="group", how="left").select("user", c.similar_column)
        return frame.join(similar, on="user", how="left", maintain_order="left")
