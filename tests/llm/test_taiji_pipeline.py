"""The Taiji pipeline on a tiny categorised dataset with the tiny Llama: every stage end to end, resume."""

import json

import polars as pl
import pytest

from recstack.errors import DataError
from recstack.llm.taiji.embedding import TextEmbedder
from recstack.llm.taiji.parts import PartStore
from recstack.llm.taiji.pipeline import TaijiPipeline
from recstack.llm.tiny import tiny_llama
from tests.llm.taiji_data import BagOfWordsModel, categorised_dataset, tiny_config


class Factory:
    """Builds tiny Llamas; counts the prompts each one is asked to generate for; can fail after `fail_after` calls."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.prompts = 0
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, spec):
        model = tiny_llama(seed=0, context_window=1024)
        generate = model.generate

        def counted(prompts, config=None):
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise KeyboardInterrupt("killed")
            self.calls += 1
            self.prompts += len(prompts)
            return generate(prompts, config)

        model.generate = counted
        return model


@pytest.fixture(scope="module")
def dataset():
    return categorised_dataset()


def pipeline(dataset, work, factory, **overrides):
    embedder = TextEmbedder(model=BagOfWordsModel())
    return TaijiPipeline(tiny_config(**overrides), work, dataset, factory, embedder, progress=False)


def test_reason_resume_skips_finished_users(dataset, tmp_path):
    killed = Factory(fail_after=1)  # dies while writing the second part
    with pytest.raises(KeyboardInterrupt):
        pipeline(dataset, tmp_path / "a", killed).reason()
    store = PartStore(tmp_path / "a" / "reason")
    assert len(store.parts()) == 1 and len(store.done()) == 2
    assert not list((tmp_path / "a" / "reason").glob(".*tmp*"))  # no partial part left behind
    resumed = Factory()
    pipe = pipeline(dataset, tmp_path / "a", resumed)
    summary = pipe.reason()
    users = pipe.contexts("train")
    assert resumed.prompts == len(users) - 2  # only the unfinished users were generated for
    assert summary["users"] == len(users) and summary["samples"] == 2 * len(users)
    again = Factory()
    pipeline(dataset, tmp_path / "a", again).reason()
    assert again.prompts == 0  # nothing left to do
    fresh = Factory()
    pipeline(dataset, tmp_path / "b", fresh).reason()
    assert PartStore(tmp_path / "b" / "reason").records() == store.records()  # same samples as without the kill


def test_pipeline_end_to_end(dataset, tmp_path):
    pipe = pipeline(dataset, tmp_path, Factory())
    users = pipe.users()
    assert not set(users["train"]) & set(users["eval"])
    reason = pipe.reason()
    records = PartStore(tmp_path / "reason").records()
    assert reason["samples"] == len(records) > 0
    assert all("<answer>" in r["text"] for r in records)  # answer_policy replace: every SFT target is well-formed
    filtered = pipe.filter()
    kept = [json.loads(line) for line in (tmp_path / "filter" / "kept.jsonl").read_text().splitlines()]
    assert filtered["kept"] == len(kept) == sum(1 for r in kept if r["ppl"] <= filtered["threshold"])
    assert 0 < len(kept) < len(records)
    sft = pipe.sft()
    assert sft["samples"] == len(kept) and (tmp_path / "sft" / "adapter" / "adapter_config.json").is_file()
    assert pipe.sft() == sft  # done: not trained again
    popo = pipe.popo({"name": "mgda"})
    assert popo["steps"] == 2
    for entry in popo["log"]:
        assert sum(entry[k] for k in ("weight_semantic", "weight_id")) == pytest.approx(1.0, abs=1e-5)
        assert 0.0 <= entry["format_broken"] <= 1.0
        assert {"reward_semantic", "reward_id", "kl"} <= entry.keys()
    assert len((tmp_path / "popo-mgda" / "log.jsonl").read_text().splitlines()) == 2
    path = pipe.features("popo-mgda")
    frame = pl.read_parquet(path)
    assert {"raw_id", "llm_sid_1", "llm_sid_2", "llm_similar_items"} <= set(frame.columns)
    assert frame.height == dataset.num_users
    accuracy = pipe.evaluate("popo-mgda")
    assert accuracy["users"] == len(pipe.contexts("eval"))
    assert {"first_level", "leaf", "format_ok"} <= accuracy.keys()
    baselines = pipe.baselines()
    assert 0.0 <= baselines["last_item"]["first_level"] <= 1.0


def test_stages_name_what_is_missing(dataset, tmp_path):
    pipe = pipeline(dataset, tmp_path, Factory())
    with pytest.raises(DataError, match="recstack llm reason"):
        pipe.filter()
    with pytest.raises(DataError, match="recstack llm filter"):
        pipe.sft()
    with pytest.raises(DataError, match="no adapter of stage 'sft'"):
        pipe.load_model("student", "sft")
