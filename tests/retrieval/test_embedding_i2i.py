"""Embedding I2I: exact top-N by cosine vs brute force, unseen items, save/load, U2I2I retrieval, errors.

A planted item_encoder (registered here) returns fixed random vectors, so nothing loads MiniLM or
trains a model; the content channel is exercised with a TextEncoder holding a fake sentence model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pytest
import torch

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.registry import build, register
from recstack.retrieval.base import Retriever
from recstack.retrieval.embedding_i2i import EmbeddingI2I, EmbeddingI2IConfig
from recstack.semantic_ids.encoders import ItemEncoder, encode_items
from recstack.semantic_ids.encoders.cache import digest
from recstack.semantic_ids.encoders.text import TextEncoder, TextEncoderConfig

ZERO_ITEMS = [3, 17]  # items the planted encoder knows nothing about (all-zero vectors)


@dataclass
class PlantedConfig:
    dim: int = 8
    seed: int = 0
    zero_items: list[int] = field(default_factory=lambda: list(ZERO_ITEMS))


def planted_vectors(num_items: int, config: PlantedConfig) -> torch.Tensor:
    """[num_items + 1, dim] random vectors with varied norms; row 0 and `zero_items` are zeros."""
    rng = np.random.default_rng(config.seed)
    vectors = rng.normal(size=(num_items + 1, config.dim)) * rng.uniform(0.5, 3.0, size=(num_items + 1, 1))
    vectors[[0, *config.zero_items]] = 0.0
    return torch.from_numpy(vectors.astype(np.float32))


@register("item_encoder", "test_planted", config=PlantedConfig)
class PlantedEncoder(ItemEncoder):
    name = "test_planted"
    config: PlantedConfig

    def __init__(self, config: PlantedConfig | None = None) -> None:
        super().__init__()
        self.config = config or PlantedConfig()

    def fingerprint(self, dataset: Dataset) -> str:
        return digest(dataset.num_items)

    def encode(self, dataset: Dataset, cache=None) -> torch.Tensor:
        return planted_vectors(dataset.num_items, self.config)


class FakeSentenceModel:
    """Stands in for MiniLM: a fixed random vector per text."""

    def encode(self, sentences, normalize_embeddings=False, **_):
        seeds = [int(hashlib.sha256(s.encode()).hexdigest()[:8], 16) for s in sentences]
        out = torch.stack([torch.randn(12, generator=torch.Generator().manual_seed(s)) for s in seeds])
        return torch.nn.functional.normalize(out, dim=1) if normalize_embeddings else out


def random_dataset(num_users: int = 40, num_items: int = 30, seed: int = 0) -> Dataset:
    """Random train histories (popularity-skewed); the last user has none (cold start)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    popularity = 1.0 / np.arange(1, num_items + 1)
    for user in range(1, num_users):  # test data only: a loop is fine here
        chosen = rng.choice(np.arange(1, num_items + 1), size=int(rng.integers(1, 10)), p=popularity / popularity.sum())
        users += [user] * len(chosen)
        items += chosen.tolist()
    frame = pl.DataFrame(
        {
            "user": pl.Series(users, dtype=pl.Int32),
            "item": pl.Series(items, dtype=pl.Int32),
            "timestamp": pl.Series(range(len(users)), dtype=pl.Int64),
            "split": pl.Series([0] * len(users), dtype=pl.Int8),
        }
    )
    return Dataset(
        "tiny",
        interactions=frame,
        items=pl.DataFrame({"item": range(1, num_items + 1), "raw_id": [f"item {i}" for i in range(1, num_items + 1)]}),
        users=pl.DataFrame({"user": range(1, num_users + 1), "raw_id": [f"u{u}" for u in range(1, num_users + 1)]}),
        meta={},
    )


def brute_force(vectors: torch.Tensor, n: int, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-n per item by cosine (or dot product) in numpy: (ids [N+1, n], sims [N+1, n]); -1 = none."""
    x = vectors.double().numpy()
    norms = np.linalg.norm(x, axis=1)
    if normalize:
        x = x / np.where(norms > 0, norms, 1.0)[:, None]
    sims = x @ x.T
    absent = norms == 0
    absent[0] = True
    sims[absent, :] = -np.inf
    sims[:, absent] = -np.inf
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    top = np.take_along_axis(sims, order, 1)
    return np.where(np.isfinite(top), order, -1), top


def table_rows(table) -> list[dict[int, float]]:
    """CSR neighbour table -> one {neighbour: value} per row."""
    table = table.tocsr()
    return [
        dict(zip(table.indices[a:b].tolist(), table.data[a:b].tolist())) for a, b in zip(table.indptr, table.indptr[1:])
    ]


def test_neighbours_are_the_exact_cosine_top_n() -> None:
    data = random_dataset()
    model = build("retriever", {"name": "embedding_i2i", "encoder": {"name": "test_planted"}, "neighbours": 5}).fit(
        data
    )
    ids, sims = brute_force(planted_vectors(data.num_items, PlantedConfig()), 5)
    rows = table_rows(model.neighbours)
    for item in range(1, data.num_items + 1):
        if item in ZERO_ITEMS:
            continue
        assert set(rows[item]) == set(ids[item].tolist())
        for j, cos in zip(ids[item], sims[item]):
            assert rows[item][int(j)] == pytest.approx((1 + cos) / 2, abs=1e-5)  # documented shift
    assert model.encoder_stats["cache"] == "miss" and model.encoder_stats["dim"] == 8


def test_no_self_padding_or_unseen_neighbours() -> None:
    data = random_dataset()
    model = EmbeddingI2I(EmbeddingI2IConfig(encoder="test_planted", neighbours=40)).fit(data)
    table = model.neighbours.toarray()
    assert table.shape == (data.num_items + 1, data.num_items + 1)
    assert np.all(np.diag(table) == 0) and table[0].sum() == 0 and table[:, 0].sum() == 0
    for item in ZERO_ITEMS:  # unseen: no neighbours, and nobody's neighbour
        assert table[item].sum() == 0 and table[:, item].sum() == 0
    seen = [i for i in range(1, data.num_items + 1) if i not in ZERO_ITEMS]
    assert np.all((table[seen] > 0).sum(1) == len(seen) - 1)  # neighbours=40 > catalogue: every seen item
    assert table.min() >= 0 and table[table > 0].min() > 0  # every stored value is positive


def test_duplicates_min_similarity_and_raw_inner_product() -> None:
    model = EmbeddingI2I(EmbeddingI2IConfig(encoder="test_planted", neighbours=3))
    same = torch.zeros(11, 4)
    same[1:] = torch.tensor([1.0, 2.0, 0.0, -1.0])  # ten identical items: self may not come first
    table = model.neighbours_from_vectors(same).toarray()
    assert np.all((table[1:] > 0).sum(1) == 3) and np.all(np.diag(table) == 0)

    vectors = planted_vectors(30, PlantedConfig(seed=4))
    strict = EmbeddingI2I(EmbeddingI2IConfig(encoder="test_planted", neighbours=6, min_similarity=0.2))
    rows = table_rows(strict.neighbours_from_vectors(vectors))
    ids, sims = brute_force(vectors, 6)
    for item in range(1, 31):
        expected = {int(j) for j, s in zip(ids[item], sims[item]) if s >= 0.2}
        assert set(rows[item]) == expected

    raw = EmbeddingI2I(EmbeddingI2IConfig(encoder="test_planted", neighbours=4, normalize=False))
    rows = table_rows(raw.neighbours_from_vectors(vectors))
    ids, _ = brute_force(vectors, 4, normalize=False)
    for item in range(1, 31):
        if item not in ZERO_ITEMS:
            assert set(rows[item]) == set(ids[item].tolist())
            ranked = sorted(rows[item], key=rows[item].get, reverse=True)
            assert ranked == ids[item].tolist() and min(rows[item].values()) > 0


def test_u2i2i_retrieval_and_cold_start() -> None:
    data = random_dataset()
    spec = {"name": "embedding_i2i", "encoder": "test_planted", "neighbours": 5, "num_triggers": 1}
    model = build("retriever", spec).fit(data)
    users = torch.arange(1, data.num_users + 1)
    batch = data.user_batch(users, before="valid")
    cands = model.retrieve(batch, k=8)
    assert cands.items.shape == (len(users), 8) and cands.channel_names == ["embedding_i2i"]
    ids, _ = brute_force(planted_vectors(data.num_items, PlantedConfig()), 5)
    for row, history in enumerate(batch.history.tolist()[:-1]):
        items = cands.items[row].tolist()
        assert len(set(items)) == 8 and not set(items) & set(history) and 0 not in items
        if history[-1] not in ZERO_ITEMS:  # one trigger: its neighbours, best first, then popular backfill
            expected = [j for j in ids[history[-1]].tolist() if j not in history]
            assert items[: len(expected)] == expected
    popular = torch.argsort(-data.item_popularity()[1:], stable=True)[:8] + 1
    assert cands.items[-1].tolist() == popular.tolist()  # cold user: popular items only
    assert torch.all(cands.scores[-1] < 0)


def test_save_load_round_trip(tmp_path) -> None:
    data = random_dataset(seed=3)
    model = EmbeddingI2I(EmbeddingI2IConfig(encoder="test_planted", neighbours=4, min_similarity=0.0)).fit(data)
    model.save(tmp_path / "emb")
    loaded = Retriever.load(tmp_path / "emb")
    assert isinstance(loaded, EmbeddingI2I) and loaded.config == model.config
    assert (loaded.neighbours != model.neighbours).nnz == 0
    batch = data.user_batch(torch.arange(1, data.num_users + 1), before="valid")
    a, b = model.retrieve(batch, 7), loaded.retrieve(batch, 7)
    assert torch.equal(a.items, b.items) and torch.equal(a.scores, b.scores)


def test_second_fit_reads_the_embedding_cache() -> None:
    data = random_dataset()
    EmbeddingI2I(EmbeddingI2IConfig(encoder="test_planted", neighbours=3)).fit(data)
    again = EmbeddingI2I(EmbeddingI2IConfig(encoder="test_planted", neighbours=3)).fit(data)
    assert again.encoder_stats["cache"] == "hit"


def test_default_collab_channel_on_a_tiny_sasrec(tiny_dataset) -> None:
    encoder = {"name": "collab", "retriever": "sasrec", "options": {"dim": 16, "train": {"epochs": 1}}}
    model = build("retriever", {"name": "embedding_i2i", "encoder": encoder, "neighbours": 4}).fit(tiny_dataset)
    assert model.encoder_stats["cache"] == "miss" and model.encoder_stats["retriever"] == "sasrec"
    cached = encode_items(build("item_encoder", encoder), tiny_dataset)  # the same vectors, from the cache
    _, top = brute_force(cached, 4)
    rows = table_rows(model.neighbours)
    for item in range(1, tiny_dataset.num_items + 1):  # compared by similarity: robust to near-ties
        found = sorted((2 * v - 1 for v in rows[item].values()), reverse=True)
        assert found == pytest.approx(top[item].tolist(), abs=1e-5)


def test_content_channel_config_without_loading_minilm() -> None:
    for encoder in ({"name": "text"}, "text"):  # building never loads the model (it is loaded lazily at fit)
        model = build("retriever", {"name": "embedding_i2i", "encoder": encoder})
        assert model.config.encoder == {"name": "text"}
    data = random_dataset()
    text = TextEncoder(TextEncoderConfig(fields=["raw_id"]), model=FakeSentenceModel())
    model = EmbeddingI2I(EmbeddingI2IConfig(encoder={"name": "text", "fields": ["raw_id"]}, neighbours=3), encoder=text)
    model.fit(data)
    assert np.diff(model.neighbours.indptr)[1:].tolist() == [3] * data.num_items
    assert model.encoder_stats["unique_texts"] == data.num_items


def test_errors_name_the_problem() -> None:
    with pytest.raises(ConfigError, match=r"embedding_i2i\.encoder: unknown item_encoder 'nope'"):
        build("retriever", {"name": "embedding_i2i", "encoder": {"name": "nope"}})
    with pytest.raises(ConfigError, match=r"embedding_i2i\.encoder: expected an item_encoder name"):
        build("retriever", {"name": "embedding_i2i", "encoder": {"retriever": "sasrec"}})
    with pytest.raises(ConfigError, match="modle"):
        build("retriever", {"name": "embedding_i2i", "encoder": {"name": "text", "modle": "x"}})
    with pytest.raises(ConfigError, match="min_similarity"):
        EmbeddingI2IConfig(encoder="test_planted", min_similarity=1.5)
    with pytest.raises(DataError, match="not fitted"):
        EmbeddingI2I(EmbeddingI2IConfig(encoder="test_planted")).retrieve(
            random_dataset().user_batch(torch.tensor([1])), 3
        )
