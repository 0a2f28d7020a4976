"""Tiny data for the Taiji tests: a categorised catalogue, users with a favourite category, a fake
sentence model (bag of hashed words, so texts that share words are close) and tiny-LLM settings."""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl
import torch

from recstack.data.prepare import PrepareConfig, prepare
from recstack.data.tables import RawTables
from recstack.llm.taiji.config import TaijiConfig

PATHS = [
    "Beauty > Makeup > Nails",
    "Beauty > Makeup > Lips",
    "Beauty > Hair Care > Shampoo",
    "Beauty > Hair Care > Styling",
    "Beauty > Fragrance > Women",
    "Beauty > Fragrance > Men",
]
WORDS = {
    "Nails": "nail polish",
    "Lips": "lipstick",
    "Shampoo": "shampoo",
    "Styling": "hair gel",
    "Women": "perfume",
    "Men": "cologne",
}


def categorised_raw(num_users: int = 24, per_path: int = 5, per_user: int = 6, seed: int = 0) -> RawTables:
    """Items: per_path items per category path, titled after the leaf. Users: a favourite top-level group,
    each history mostly from it (so the last item's category predicts the next one)."""
    rng = np.random.default_rng(seed)
    items, titles, cats = [], [], []
    for p, path in enumerate(PATHS):
        leaf = path.split(" > ")[-1]
        for j in range(per_path):
            items.append(f"i{p * per_path + j}")
            titles.append(f"{WORDS[leaf]} number {j}")
            cats.append(path)
    users, chosen, times = [], [], []
    for u in range(num_users):
        group = u % 3
        pool = [i for i, c in enumerate(cats) if PATHS.index(c) // 2 == group]
        picks = rng.choice(pool, size=per_user, replace=False)
        users += [f"u{u}"] * per_user
        chosen += [items[i] for i in picks]
        times += list(range(1000 * u, 1000 * u + per_user))
    frame = pl.DataFrame({"user": users, "item": chosen, "timestamp": times, "view": [1.0] * len(users)})
    table = pl.DataFrame({"item": items, "title": titles, "categories": cats})
    return RawTables("taiji-tiny", frame, items=table, labels=["view"], text_fields=["title", "categories"])


def categorised_dataset(**kwargs):
    return prepare(categorised_raw(**kwargs), PrepareConfig())


class BagOfWordsModel:
    """Fake sentence model: the sum of a fixed random vector per lower-cased word."""

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim

    def word(self, word: str) -> torch.Tensor:
        seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
        return torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))

    def encode(self, sentences, batch_size=32, convert_to_tensor=False, normalize_embeddings=False, **_):
        rows = []
        for text in sentences:
            words = [w.strip(".,;:>[]()") for w in text.lower().split()]
            vectors = [self.word(w) for w in words if w]
            rows.append(torch.stack(vectors).sum(0) if vectors else torch.zeros(self.dim))
        out = torch.stack(rows)
        return torch.nn.functional.normalize(out, dim=1) if normalize_embeddings else out


def tiny_config(**overrides) -> TaijiConfig:
    """A TaijiConfig whose every stage runs in seconds on the tiny Llama."""
    from recstack.config import from_dict

    base = {
        "dataset": "taiji-tiny",
        "users": 6,
        "eval_users": 4,
        "feature_users": None,
        "part_size": 2,
        "teacher": {"model": "tiny"},
        "student": {"model": "tiny"},
        "prompts": {"history_tokens": 120, "history_items": 4, "time": False},
        "rupr": {"samples": 2, "max_new_tokens": 16, "batch_size": 4},
        "orft": {"batch_size": 8},
        "sft": {"epochs": 1, "batch_size": 4, "progress": False, "lora": {"r": 2}},
        "popo": {
            "steps": 2,
            "users_per_step": 2,
            "group_size": 2,
            "max_new_tokens": 12,
            "save_every": 1,
            "progress": False,
            "lora": {"r": 2},
        },
        "rewards": {"id_k": 10},
        "features": {"max_new_tokens": 12, "quantizer": {"name": "rq_kmeans", "levels": 2, "codebook_size": 4}},
        "eval_max_new_tokens": 12,
    }
    base.update(overrides)
    return from_dict(TaijiConfig, base)
