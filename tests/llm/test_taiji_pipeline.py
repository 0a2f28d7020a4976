"""The Taiji pipeline on a tiny categorised dataset with the tiny Llama: every stage end to end, resume,
and no model outliving its stage."""

import gc
import json
import weakref
from pathlib import Path

import polars as pl
import pytest

from recstack.errors import DataError
from recstack.llm.local import LocalLM
from recstack.llm.taiji.embedding import TextEmbedder
from recstack.llm.taiji.parts import PartStore
from recstack.llm.taiji.pipeline import TaijiPipeline
from recstack.llm.tiny import tiny_llama
from recstack.semantic_ids.encoders import text as text_encoder
from recstack.semantic_ids.encoders.text import TextEncoderConfig
from tests.llm.taiji_data import BagOfWordsModel, categorised_dataset, tiny_config


class CountingLM(LocalLM):
    """A LocalLM whose generate counts the prompts for its factory and fails after `fail_after` calls. A
    method rather than a patched-in closure: a traceback keeps each frame's function, and a closure over
    the model would keep a killed stage's model alive in the test, not in the pipeline."""

    factory: "Factory"

    def generate(self, prompts, config=None):
        factory = self.factory
        if factory.fail_after is not None and factory.calls >= factory.fail_after:
            raise KeyboardInterrupt("killed")
        factory.calls += 1
        factory.prompts += len(prompts)
        return super().generate(prompts, config)


class Factory:
    """Builds tiny Llamas; counts the prompts each one is asked to generate for; can fail after `fail_after` calls."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.prompts = 0
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, spec):
        model = tiny_llama(seed=0, context_window=1024)
        model.__class__ = CountingLM
        model.factory = self
        return model


class TrackedFactory(Factory):
    """A Factory that keeps weak references to the models it builds and refuses to build one while an
    earlier one is alive: two stages must never hold models at once."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__(fail_after)
        self.built: list[weakref.ref] = []

    def alive(self):
        return [r() for r in self.built if r() is not None]

    def __call__(self, spec):
        assert not self.alive(), "a model of an earlier stage is still alive"
        model = super().__call__(spec)
        self.built += [weakref.ref(model), weakref.ref(model.model)]  # the LocalLM and its torch module
        return model


class SentenceModels:
    """Stands in for loading MiniLM from disk; keeps weak references to what it loaded."""

    def __init__(self) -> None:
        self.built: list[weakref.ref] = []

    def __call__(self, path, device="cpu"):
        model = BagOfWordsModel()
        self.built.append(weakref.ref(model))
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


@pytest.fixture
def manual_gc():
    """Only explicit gc.collect() calls free reference cycles (HF models have some), so a stage that forgets
    to collect fails every time rather than whenever the automatic collector happens not to run."""
    enabled = gc.isenabled()
    gc.disable()
    yield
    if enabled:
        gc.enable()


def test_stages_release_their_models(dataset, tmp_path, monkeypatch, manual_gc):
    sentence = SentenceModels()
    monkeypatch.setattr(text_encoder, "resolve_model_path", Path)
    monkeypatch.setattr(text_encoder, "load_sentence_model", sentence)
    factory = TrackedFactory()
    embedder = TextEmbedder(TextEncoderConfig(model=str(tmp_path / "minilm")))  # loads its model on use
    pipe = TaijiPipeline(tiny_config(), tmp_path / "work", dataset, factory, embedder, progress=False)
    stages = {
        "reason": pipe.reason,
        "filter": pipe.filter,
        "sft": pipe.sft,
        "popo": lambda: pipe.popo({"name": "mgda"}),
        "features": lambda: pipe.features("popo-mgda"),
        "evaluate": lambda: pipe.evaluate("sft"),
    }
    for name, stage in stages.items():
        stage()
        # no gc.collect() here: the stage itself must have let go of its models
        assert not factory.alive(), name
        assert not [r for r in sentence.built if r() is not None], name
    assert len(factory.built) == 2 * len(stages)  # every stage loaded its own model
    assert len(sentence.built) == 2  # popo and features each load MiniLM once and keep it for the stage


@pytest.mark.parametrize("stage", ["reason", "evaluate"])
def test_a_killed_stage_releases_its_model(dataset, tmp_path, stage, manual_gc):
    factory = TrackedFactory(fail_after=1)  # dies in the second part
    with pytest.raises(KeyboardInterrupt) as killed:
        getattr(pipeline(dataset, tmp_path, factory), stage)()
    assert killed.value.__traceback__ is not None  # the traceback is still held here, its frames' models not
    assert len(factory.built) == 2 and not factory.alive()
    getattr(pipeline(dataset, tmp_path, TrackedFactory()), stage)()  # and the run resumes
