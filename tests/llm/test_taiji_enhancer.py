"""Enhancer features: semantic-ID user columns from LLM texts, joined into a ranker without changing its other inputs."""

import polars as pl
import pytest
import torch
import yaml

from recstack.cascade import Cascade, RunConfig
from recstack.config import from_dict
from recstack.errors import ConfigError, DataError
from recstack.llm.taiji.embedding import TextEmbedder
from recstack.llm.taiji.enhancer import join_user_features
from recstack.llm.taiji.features import FeaturesConfig, LLMFeatureQuantizer, feature_text
from recstack.ranking.features import FeatureConfig, build_schema
from recstack.ranking.samples import SampleBuilder, SampleConfig
from tests.llm.taiji_data import WORDS, BagOfWordsModel, categorised_dataset

TOPICS = list(WORDS.values())


@pytest.fixture(scope="module")
def dataset():
    return categorised_dataset()


def user_texts(dataset, users):
    """A fake LLM output per user naming the user's group (u % 3 in the raw id)."""
    raw = dataset.users["raw_id"].to_list()
    return [f"they want {TOPICS[2 * (int(raw[u - 1][1:]) % 3)]} soon" for u in users]


@pytest.fixture(scope="module")
def features(dataset, tmp_path_factory):
    users = list(range(1, dataset.num_users + 1, 2)) + [2]  # half the users have features
    quantizer = LLMFeatureQuantizer(
        FeaturesConfig(quantizer={"name": "rq_kmeans", "levels": 2, "codebook_size": 3}, similar_items=4),
        TextEmbedder(model=BagOfWordsModel()),
    )
    frame = quantizer.build(dataset, users, user_texts(dataset, users))
    path = tmp_path_factory.mktemp("enhancer") / "features.parquet"
    frame.write_parquet(path)
    return frame, path


def test_features_are_prefix_codes_and_similar_users_recent_items(dataset, features):
    frame, _ = features
    assert frame.columns == ["raw_id", "user", "llm_sid_1", "llm_sid_2", "llm_similar_items"]
    assert frame["llm_sid_2"].str.starts_with(frame["llm_sid_1"] + "-").all()
    # users of the same group wrote the same text, so they share a code
    groups = frame.with_columns(pl.col("raw_id").str.slice(1).cast(pl.Int64).mod(3).alias("g"))
    assert groups.group_by("g").agg(pl.col("llm_sid_2").n_unique())["llm_sid_2"].max() == 1
    # similar items: recent train items of the users sharing the code, at most 4
    row = frame.row(0, named=True)
    items = [int(i) for i in row["llm_similar_items"].split("|")]
    assert 0 < len(items) <= 4
    members = frame.filter(pl.col("llm_sid_2") == row["llm_sid_2"])["user"].to_list()
    train = dataset.interactions.filter((pl.col("split") == 0) & pl.col("user").is_in(members))
    assert set(items) <= set(train["item"].to_list())
    assert feature_text("why\n<answer>\ncategory: A\nintent: b\n</answer>", "answer") == "A: b"


def test_enhancer_joins_a_ranker_without_changing_its_other_inputs(dataset, features):
    frame, path = features
    enhanced, report = join_user_features(dataset, path)
    assert report["columns"] == ["llm_sid_1", "llm_sid_2", "llm_similar_items"]
    assert report["users_with_features"] == frame.height
    assert enhanced.interactions is dataset.interactions and enhanced.items is dataset.items
    assert enhanced.users.select("user", "raw_id").equals(dataset.users)
    config = FeatureConfig(dim=4)
    schema, _ = build_schema(dataset, config)
    schema2, _ = build_schema(enhanced, config)
    assert schema2.item_columns == schema.item_columns and schema2.item_vocab == schema.item_vocab
    assert schema2.user_columns == schema.user_columns + report["columns"]
    assert any(v.startswith("llm_similar_items=") for v in schema2.user_vocab[-1])
    before = SampleBuilder(dataset, SampleConfig(max_history=5)).train_samples().inputs(5)
    after = SampleBuilder(enhanced, SampleConfig(max_history=5)).train_samples().inputs(5)
    assert before.keys() == after.keys()
    for key, value in before.items():
        other = after[key]
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other), key
        elif isinstance(value, dict):
            assert all(torch.equal(value[k], other[k]) for k in value), key


def test_enhancer_errors_name_the_file(dataset, features, tmp_path):
    _, path = features
    with pytest.raises(DataError, match="not found"):
        join_user_features(dataset, tmp_path / "none.parquet")
    with pytest.raises(DataError, match="no column 'nope'"):
        join_user_features(dataset, path, ["nope"])
    stranger = tmp_path / "stranger.parquet"
    pl.DataFrame({"raw_id": ["ghost"], "llm_sid_1": ["1"]}).write_parquet(stranger)
    with pytest.raises(DataError, match="'ghost' is not a user"):
        join_user_features(dataset, stranger)
    with pytest.raises(ConfigError, match="enhancer.features"):
        from_dict(RunConfig, {"enhancer": {}})


def test_run_config_enhancer_feeds_the_ranker(dataset, features, tmp_path):
    _, path = features
    dataset.save()
    ranker = {
        "name": "dcn_din_mmoe",
        "features": {"dim": 4, "user_columns": []},
        "samples": {"max_history": 4},
        "deep_hidden": [8],
        "expert_hidden": [8],
        "tower_hidden": [4],
        "attention_hidden": [4],
        "num_experts": 2,
        "train": {"epochs": 1, "batch_size": 128, "progress": False},
    }
    spec = {
        "name": "enh",
        "dataset": {"name": dataset.name},
        "channels": {"popular": {"name": "popular"}},
        "ranker": ranker,
        "merge": {"k_total": 10},
        "eval": {"ks": [5, 10], "page_ks": [5]},
        "enhancer": {"features": str(path)},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(spec))
    plain = Cascade(from_dict(RunConfig, {**spec, "enhancer": None})).fit(dataset, progress=lambda m: None)
    messages: list[str] = []
    cascade = Cascade(from_dict(RunConfig, spec)).fit(dataset, tmp_path / "run", progress=messages.append)
    assert cascade.ranker.schema.user_columns == ["llm_sid_1", "llm_sid_2", "llm_similar_items"]
    assert plain.ranker.schema.user_columns == []
    assert any("enhancer features" in m for m in messages)
    cascade.save(tmp_path / "run")
    loaded = Cascade.load(tmp_path / "run")
    batch = dataset.user_batch(torch.arange(1, 6), before="test")
    assert torch.equal(loaded.recommend(batch, k=5).items, cascade.recommend(batch, k=5).items)
    metrics = cascade.evaluate(dataset, "test")
    assert "ranker" in metrics
