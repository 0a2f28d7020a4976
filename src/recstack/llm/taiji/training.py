"""The two stages that train the student: LoRA SFT (sft.py) and POPO (popo.py), as the pipeline runs them.

Both skip when their stage folder already holds an adapter and a summary, and resume from their own
checkpoint otherwise. Each loads its student here, so the model is unreachable once the stage returns
(TaijiPipeline wraps the stage in models.releases_models, which then frees it).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recstack.errors import ConfigError, DataError
from recstack.llm.taiji.embedding import CatalogueSearch
from recstack.llm.taiji.models import adapter_path
from recstack.llm.taiji.parts import PartStore, read_jsonl
from recstack.llm.taiji.popo import POPOTrainer
from recstack.llm.taiji.rewards import TaijiRewards
from recstack.llm.taiji.sft import train_sft
from recstack.train.checkpoint import write_json

if TYPE_CHECKING:
    from recstack.llm.taiji.pipeline import TaijiPipeline


def finished(folder: Path) -> dict[str, Any] | None:
    """The summary of a stage that already ran to the end, else None."""
    if (folder / "adapter" / "adapter_config.json").is_file() and (folder / "summary.json").is_file():
        return dict(json.loads((folder / "summary.json").read_text()))
    return None


def run_sft(pipe: TaijiPipeline, source: str = "kept") -> dict[str, Any]:
    folder = pipe.work / ("sft" if source == "kept" else "sft-all")
    done = finished(folder)
    if done is not None:
        return done
    if source == "kept":
        path = pipe.work / "filter" / "kept.jsonl"
        if not path.is_file():
            raise DataError(f"no ORFT output at {path}; run `recstack llm filter` first")
        samples = read_jsonl(path)
    else:
        samples = PartStore(pipe.work / "reason").records()
    student = pipe.load_model("student")
    prompts = pipe.prompts(student)
    contexts = {c.user: c for c in pipe.contexts("train")}
    history = train_sft(
        student,
        [prompts.student(contexts[int(s["user"])]) for s in samples],
        [s["text"] for s in samples],
        dataclasses.replace(pipe.config.sft, progress=pipe.progress),
        folder=folder,
    )
    student.save_adapter(folder / "adapter")
    summary = {
        "samples": len(samples),
        "steps": len(history),
        "first_loss": history[0]["loss"],
        "last_loss": history[-1]["loss"],
        "history": history,
    }
    write_json(folder / "summary.json", summary)
    return summary


def run_popo(
    pipe: TaijiPipeline, weighting: dict[str, Any] | None = None, base: str | None = "sft", name: str | None = None
) -> dict[str, Any]:
    config = pipe.config.popo if weighting is None else dataclasses.replace(pipe.config.popo, weighting=weighting)
    config = dataclasses.replace(config, progress=pipe.progress)
    folder = pipe.work / f"popo-{name or config.weighting['name']}"
    done = finished(folder)
    if done is not None:
        return done
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "base.json", {"base": base, "weighting": config.weighting})
    policy = pipe.load_model("student")
    if base not in (None, "base"):
        policy.load_adapter(adapter_path(pipe.work, base))
        policy.merge_adapter()
    ranker = None
    if pipe.config.rewards.id_mode == "ranker":
        from recstack.ranking.base import Ranker

        if not pipe.config.rewards.ranker:
            raise ConfigError("rewards.id_mode ranker needs rewards.ranker: the folder of a saved ranker")
        ranker = Ranker.load(pipe.config.rewards.ranker)
    search = CatalogueSearch(pipe.dataset, pipe.embedder)
    rewards = TaijiRewards(pipe.categories, pipe.config.rewards, search, pipe.embedder, ranker, pipe.dataset)
    log = POPOTrainer(policy, pipe.prompts(policy), rewards, config).train(pipe.contexts("train"), folder)
    policy.save_adapter(folder / "adapter")
    summary = {"steps": len(log), "weighting": config.weighting, "base": base, "log": log}
    write_json(folder / "summary.json", summary)
    return summary
