"""The Taiji pipeline end to end, stage by stage, each stage resumable (METHODS.md §2.1).

    pipe = TaijiPipeline(TaijiConfig(dataset="amazon-beauty", users=200), "runs/taiji")
    pipe.reason()          # RUPR: teacher CoTs with the answer as a hint        -> reason/part-*.jsonl
    pipe.filter()          # ORFT: student PPL of the chosen item, keep <= median -> filter/kept.jsonl
    pipe.sft()             # LoRA SFT of the student on the kept CoTs            -> sft/adapter
    pipe.popo()            # POPO RL from the SFT model (weighting from config)   -> popo-<name>/adapter
    pipe.features("popo-mgda")   # student outputs -> MiniLM -> semantic IDs    -> features/features.parquet
    pipe.evaluate("popo-mgda")   # next-intent accuracy on held-out users        -> eval/<stage>/summary.json

Users: `eval_users` held-out users are drawn first (seeded) and never trained on; `users` training
users are drawn from the rest; both lists are kept in users.json so a resumed run uses the same ones.
Per-user stages write JSONL parts of `part_size` users atomically (parts.py): a killed job redoes at
most the part it was writing. SFT restarts from scratch if killed (it is short); POPO resumes from its
last checkpoint. Models come from `teacher` / `student` (LLMConfig mappings: a local folder, a hub id,
"tiny", or an OpenAI-compatible URL for the teacher; {} = the offline SmolLM2-135M-Instruct).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from recstack.config import to_dict
from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.llm.taiji.categories import CategoryPaths
from recstack.llm.taiji.config import TaijiConfig
from recstack.llm.taiji.embedding import CatalogueSearch, TextEmbedder
from recstack.llm.taiji.evaluate import intent_accuracy, last_item_baseline, majority_baseline, predict_intents
from recstack.llm.taiji.features import LLMFeatureQuantizer
from recstack.llm.taiji.orft import PPLRejectionFilter
from recstack.llm.taiji.parts import PartStore
from recstack.llm.taiji.popo import POPOTrainer
from recstack.llm.taiji.prompting import ContextMode, TaijiPrompts, UserContext, build_contexts, sample_users
from recstack.llm.taiji.rewards import TaijiRewards
from recstack.llm.taiji.rupr import ReverseCoTGenerator
from recstack.llm.taiji.sft import train_sft
from recstack.progress import progress_bar
from recstack.train.checkpoint import write_json


class TaijiPipeline:
    def __init__(
        self,
        config: TaijiConfig,
        work_dir: str | Path,
        dataset: Dataset | None = None,
        llm_factory: Callable[[dict[str, Any]], Any] | None = None,
        embedder: TextEmbedder | None = None,
        progress: bool = True,
    ) -> None:
        self.config, self.work = config, Path(work_dir)
        self.dataset = dataset if dataset is not None else Dataset.load(config.dataset)
        self.categories = CategoryPaths.from_dataset(self.dataset, config.categories)
        self.embedder = embedder or TextEmbedder(config.text_encoder)
        self.progress = progress
        if llm_factory is None:
            from recstack.llm.config import load_llm

            llm_factory = load_llm
        self.llm_factory: Callable[[dict[str, Any]], Any] = llm_factory
        self.work.mkdir(parents=True, exist_ok=True)
        write_json(self.work / "config.json", to_dict(config), sort_keys=False)
        self.text_prompts = TaijiPrompts(self.dataset, self.categories, config.prompts)  # item texts

    # ---- users, contexts, models ---------------------------------------------------------------
    def users(self) -> dict[str, list[int]]:
        path = self.work / "users.json"
        if path.is_file():
            return {k: [int(u) for u in v] for k, v in json.loads(path.read_text()).items()}
        c = self.config
        held_out = sample_users(self.dataset, c.eval_users, c.seed + 1) if c.eval_users else []
        chosen = {"eval": held_out, "train": sample_users(self.dataset, c.users, c.seed, exclude=held_out)}
        write_json(path, chosen)
        return chosen

    def contexts(self, which: str) -> list[UserContext]:
        """ "train": train_last contexts of the training users; "eval": test contexts of the held-out users;
        only users whose target item has a category path."""
        mode: ContextMode = "train_last" if which == "train" else "test"
        return [c for c in build_contexts(self.dataset, self.users()[which], mode) if self.categories[c.target]]

    def prompts(self, model: Any) -> TaijiPrompts:
        return TaijiPrompts(self.dataset, self.categories, self.config.prompts, model.count_tokens)

    def load_model(self, role: str, stage: str | None = None) -> Any:
        """The teacher, or the student after `stage` (None/"base", "sft", "sft-all", "popo-<name>")."""
        model = self.llm_factory(dict(self.config.teacher if role == "teacher" else self.config.student))
        if stage in (None, "base"):
            return model
        if not hasattr(model, "load_adapter"):
            raise ConfigError(f"stage {stage!r} needs a local student model to load its LoRA adapter into")
        if stage.startswith("popo-"):
            base = json.loads((self._stage_dir(stage) / "base.json").read_text())["base"]
            if base not in (None, "base"):
                model.load_adapter(self._adapter(base))
                model.merge_adapter()
        model.load_adapter(self._adapter(stage))
        return model

    def _stage_dir(self, stage: str) -> Path:
        return self.work / stage

    def _adapter(self, stage: str) -> Path:
        path = self._stage_dir(stage) / "adapter"
        if not (path / "adapter_config.json").is_file():
            raise DataError(f"no adapter of stage {stage!r} at {path}; run `recstack llm {stage.split('-')[0]}` first")
        return path

    def _bar(self, total: int, desc: str) -> Any:
        return progress_bar(total=total, desc=desc, disable=not self.progress)

    # ---- stages --------------------------------------------------------------------------------
    def reason(self) -> dict[str, Any]:
        """RUPR over the training users, `part_size` users per part."""
        store = PartStore(self.work / "reason")
        done = store.done()
        todo = [c for c in self.contexts("train") if c.user not in done]
        if todo:
            teacher = self.load_model("teacher")
            generator = ReverseCoTGenerator(teacher, self.prompts(teacher), self.categories, self.config.rupr)
            bar = self._bar(len(todo), "reason")
            for start in range(0, len(todo), self.config.part_size):
                chunk = todo[start : start + self.config.part_size]
                store.write([c.user for c in chunk], generator.generate(chunk))
                bar.update(len(chunk))
            bar.close()
        records = store.records()
        summary = {
            "users": len(store.done()),
            "samples": len(records),
            "teacher_well_formed": sum(r["teacher_well_formed"] for r in records) / max(1, len(records)),
            "teacher_leaf_match": sum(r["teacher_levels"] == r["target_levels"] for r in records)
            / max(1, len(records)),
        }
        write_json(self.work / "reason" / "summary.json", summary)
        return summary

    def filter(self) -> dict[str, Any]:
        """ORFT: the student's PPL of each sample's chosen item (parts), then the keep rule over all samples."""
        records = PartStore(self.work / "reason").records()
        if not records:
            raise DataError(f"no RUPR samples in {self.work / 'reason'}; run `recstack llm reason` first")
        store = PartStore(self.work / "filter")
        done = store.done()
        by_user: dict[int, list[dict[str, Any]]] = {}
        for rec in records:
            by_user.setdefault(int(rec["user"]), []).append(rec)
        contexts = {c.user: c for c in self.contexts("train")}
        todo = [u for u in by_user if u not in done]
        filt = PPLRejectionFilter(self.config.orft)
        if todo:
            student = self.load_model("student")
            prompts = self.prompts(student)
            bar = self._bar(len(todo), "filter")
            for start in range(0, len(todo), self.config.part_size):
                chunk = todo[start : start + self.config.part_size]
                recs = [r for u in chunk for r in by_user[u]]
                texts = [r["text"] if self.config.orft.include_answer else r["reasoning"] for r in recs]
                items = [self._item_text(int(r["target"])) for r in recs]
                ppl = filt.perplexities(
                    student, [prompts.student(contexts[int(r["user"])]) for r in recs], texts, items
                )
                store.write(
                    chunk, [{"user": r["user"], "sample": r["sample"], "ppl": float(p)} for r, p in zip(recs, ppl)]
                )
                bar.update(len(chunk))
            bar.close()
        ppl_of = {(int(r["user"]), int(r["sample"])): r["ppl"] for r in store.records()}
        ppl = torch.tensor([ppl_of[(int(r["user"]), int(r["sample"]))] for r in records], dtype=torch.float64)
        keep = filt.keep(ppl, [int(r["user"]) for r in records])
        kept = [{**r, "ppl": float(p)} for r, p, k in zip(records, ppl, keep) if k]
        _write_jsonl(self.work / "filter" / "kept.jsonl", kept)
        summary = {
            "samples": len(records),
            "kept": len(kept),
            "median_ppl": float(ppl.median()),
            "quantile": self.config.orft.quantile,
            "threshold": float(torch.quantile(ppl, self.config.orft.quantile)),
        }
        write_json(self.work / "filter" / "summary.json", summary)
        return summary

    def _item_text(self, item: int) -> str:
        text = self.text_prompts.item_text(item)
        return text.split(";")[0] if self.config.orft.item_text == "title" else text

    def sft(self, source: str = "kept") -> dict[str, Any]:
        """LoRA SFT on the kept samples (stage "sft") or on every RUPR sample (source "all", stage "sft-all")."""
        stage = "sft" if source == "kept" else "sft-all"
        folder = self._stage_dir(stage)
        if (folder / "adapter" / "adapter_config.json").is_file() and (folder / "summary.json").is_file():
            return json.loads((folder / "summary.json").read_text())
        if source == "kept":
            path = self.work / "filter" / "kept.jsonl"
            if not path.is_file():
                raise DataError(f"no ORFT output at {path}; run `recstack llm filter` first")
            samples = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            samples = PartStore(self.work / "reason").records()
        student = self.load_model("student")
        prompts = self.prompts(student)
        contexts = {c.user: c for c in self.contexts("train")}
        history = train_sft(
            student,
            [prompts.student(contexts[int(s["user"])]) for s in samples],
            [s["text"] for s in samples],
            dataclasses.replace(self.config.sft, progress=self.progress),
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

    def popo(
        self, weighting: dict[str, Any] | None = None, base: str | None = "sft", name: str | None = None
    ) -> dict[str, Any]:
        """POPO from the `base` stage's student (its adapter merged; a fresh LoRA trains) -> popo-<name>."""
        config = self.config.popo if weighting is None else dataclasses.replace(self.config.popo, weighting=weighting)
        config = dataclasses.replace(config, progress=self.progress)
        folder = self._stage_dir(f"popo-{name or config.weighting['name']}")
        if (folder / "adapter" / "adapter_config.json").is_file() and (folder / "summary.json").is_file():
            return json.loads((folder / "summary.json").read_text())
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "base.json", {"base": base, "weighting": config.weighting})
        policy = self.load_model("student")
        if base not in (None, "base"):
            policy.load_adapter(self._adapter(base))
            policy.merge_adapter()
        ranker = None
        if self.config.rewards.id_mode == "ranker":
            from recstack.ranking.base import Ranker

            if not self.config.rewards.ranker:
                raise ConfigError("rewards.id_mode ranker needs rewards.ranker: the folder of a saved ranker")
            ranker = Ranker.load(self.config.rewards.ranker)
        search = CatalogueSearch(self.dataset, self.embedder)
        rewards = TaijiRewards(self.categories, self.config.rewards, search, self.embedder, ranker, self.dataset)
        trainer = POPOTrainer(policy, self.prompts(policy), rewards, config)
        log = trainer.train(self.contexts("train"), folder)
        policy.save_adapter(folder / "adapter")
        summary = {"steps": len(log), "weighting": config.weighting, "base": base, "log": log}
        write_json(folder / "summary.json", summary)
        return summary

    def features(self, stage: str | None = None) -> Path:
        """Student outputs on the users' train histories (parts) -> semantic-ID features Parquet."""
        c = self.config
        store = PartStore(self.work / "features" / (stage or "base"))
        users = sample_users(self.dataset, c.feature_users, c.seed + 2)
        done = store.done()
        todo = [ctx for ctx in build_contexts(self.dataset, users, "features") if ctx.user not in done]
        if todo:
            student = self.load_model("student", stage)
            prompts = self.prompts(student)
            bar = self._bar(len(todo), "features")
            for start in range(0, len(todo), c.part_size):
                chunk = todo[start : start + c.part_size]
                recs = predict_intents(student, prompts, chunk, c.features.max_new_tokens, c.features.batch_size)
                store.write([ctx.user for ctx in chunk], [{"user": r["user"], "text": r["text"]} for r in recs])
                bar.update(len(chunk))
            bar.close()
        records = store.records()
        frame = LLMFeatureQuantizer(c.features, self.embedder).build(
            self.dataset, [int(r["user"]) for r in records], [r["text"] for r in records]
        )
        target = self.work / "features" / f"{stage or 'base'}.parquet"
        tmp = target.with_name(f".{target.name}.tmp")
        frame.write_parquet(tmp)
        tmp.replace(target)
        return target

    def evaluate(self, stage: str | None = None) -> dict[str, Any]:
        """Next-intent accuracy of the student after `stage` on the held-out users (parts), with baselines."""
        store = PartStore(self.work / "eval" / (stage or "base"))
        contexts = self.contexts("eval")
        done = store.done()
        todo = [ctx for ctx in contexts if ctx.user not in done]
        if todo:
            student = self.load_model("student", stage)
            prompts = self.prompts(student)
            bar = self._bar(len(todo), f"eval {stage or 'base'}")
            for start in range(0, len(todo), self.config.part_size):
                chunk = todo[start : start + self.config.part_size]
                store.write(
                    [ctx.user for ctx in chunk],
                    predict_intents(student, prompts, chunk, self.config.eval_max_new_tokens),
                )
                bar.update(len(chunk))
            bar.close()
        summary = intent_accuracy(store.records(), self.categories)
        write_json(store.folder / "summary.json", summary)
        return summary

    def baselines(self) -> dict[str, dict[str, float]]:
        contexts = self.contexts("eval")
        train_targets = [c.target for c in self.contexts("train")]
        return {
            "majority": majority_baseline(self.categories, train_targets, contexts),
            "last_item": last_item_baseline(self.categories, contexts),
        }


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)
