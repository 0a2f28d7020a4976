"""The two stages that build the SFT data: RUPR chains of thought from the teacher, then ORFT's filter.

Both work in parts of `part_size` users (parts.py), so a killed run redoes at most one part. The
per-part work is passed to the part loop as a bound method or functools.partial, never as a closure over
the model: a traceback keeps each frame's function, and a closure would keep the model alive after a
failed stage (models.py clears the frames' locals, not their functions).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import torch

from recstack.errors import DataError
from recstack.llm.taiji.orft import ORFTConfig, PPLRejectionFilter
from recstack.llm.taiji.parts import PartStore, write_jsonl
from recstack.llm.taiji.prompting import TaijiPrompts, UserContext
from recstack.llm.taiji.rupr import ReverseCoTGenerator
from recstack.train.checkpoint import write_json

if TYPE_CHECKING:
    from recstack.llm.taiji.pipeline import TaijiPipeline


def run_reason(pipe: TaijiPipeline) -> dict[str, Any]:
    store = PartStore(pipe.work / "reason")
    done = store.done()
    todo = [c for c in pipe.contexts("train") if c.user not in done]
    if todo:
        teacher = pipe.load_model("teacher")
        generator = ReverseCoTGenerator(teacher, pipe.prompts(teacher), pipe.categories, pipe.config.rupr)
        pipe.write_parts(store, todo, "reason", _user, generator.generate)
    records = store.records()
    n = max(1, len(records))
    summary = {
        "users": len(store.done()),
        "samples": len(records),
        "teacher_well_formed": sum(r["teacher_well_formed"] for r in records) / n,
        "teacher_leaf_match": sum(r["teacher_levels"] == r["target_levels"] for r in records) / n,
    }
    write_json(pipe.work / "reason" / "summary.json", summary)
    return summary


def run_filter(pipe: TaijiPipeline) -> dict[str, Any]:
    records = PartStore(pipe.work / "reason").records()
    if not records:
        raise DataError(f"no RUPR samples in {pipe.work / 'reason'}; run `recstack llm reason` first")
    store = PartStore(pipe.work / "filter")
    done = store.done()
    by_user: dict[int, list[dict[str, Any]]] = {}
    for rec in records:
        by_user.setdefault(int(rec["user"]), []).append(rec)
    config = pipe.config.orft
    filt = PPLRejectionFilter(config)
    todo = [u for u in by_user if u not in done]
    if todo:
        contexts = {c.user: c for c in pipe.contexts("train")}
        items = {int(r["target"]): item_text(pipe, int(r["target"]), config) for r in records}
        student = pipe.load_model("student")
        score = functools.partial(_score_part, student, pipe.prompts(student), filt, by_user, contexts, items)
        pipe.write_parts(store, todo, "filter", int, score)
    ppl_of = {(int(r["user"]), int(r["sample"])): r["ppl"] for r in store.records()}
    ppl = torch.tensor([ppl_of[(int(r["user"]), int(r["sample"]))] for r in records], dtype=torch.float64)
    keep = filt.keep(ppl, [int(r["user"]) for r in records])
    kept = [{**r, "ppl": float(p)} for r, p, k in zip(records, ppl, keep) if k]
    write_jsonl(pipe.work / "filter" / "kept.jsonl", kept)
    summary = {
        "samples": len(records),
        "kept": len(kept),
        "median_ppl": float(ppl.median()),
        "quantile": config.quantile,
        "threshold": float(torch.quantile(ppl, config.quantile)),
    }
    write_json(pipe.work / "filter" / "summary.json", summary)
    return summary


def item_text(pipe: TaijiPipeline, item: int, config: ORFTConfig) -> str:
    """The text whose PPL ORFT measures: the title alone, or the item's whole prompt text."""
    text = pipe.text_prompts.item_text(item)
    return text.split(";")[0] if config.item_text == "title" else text


def _score_part(
    student: Any,
    prompts: TaijiPrompts,
    filt: PPLRejectionFilter,
    by_user: dict[int, list[dict[str, Any]]],
    contexts: dict[int, UserContext],
    items: dict[int, str],
    users: list[int],
) -> list[dict[str, Any]]:
    recs = [r for u in users for r in by_user[u]]
    texts = [r["text"] if filt.config.include_answer else r["reasoning"] for r in recs]
    scored = [prompts.student(contexts[int(r["user"])]) for r in recs]
    ppl = filt.perplexities(student, scored, texts, [items[int(r["target"])] for r in recs])
    return [{"user": r["user"], "sample": r["sample"], "ppl": float(p)} for r, p in zip(recs, ppl)]


def _user(context: UserContext) -> int:
    return context.user
