"""The two stages that only run the student: semantic-ID features and next-intent evaluation.

Both write the student's greedy outputs in parts (resumable) through `predict_parts`, a call of its own
so that the student is unreachable once it returns: `run_features` frees it before the sentence model
that embeds those outputs is loaded.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recstack.llm.taiji.evaluate import intent_accuracy, predict_intents
from recstack.llm.taiji.features import LLMFeatureQuantizer
from recstack.llm.taiji.models import release_memory
from recstack.llm.taiji.parts import PartStore
from recstack.llm.taiji.prompting import TaijiPrompts, UserContext, build_contexts, sample_users
from recstack.train.checkpoint import write_json

if TYPE_CHECKING:
    from recstack.llm.taiji.pipeline import TaijiPipeline


def predict_parts(
    pipe: TaijiPipeline,
    store: PartStore,
    todo: list[UserContext],
    stage: str | None,
    desc: str,
    max_new_tokens: int,
    batch_size: int,
    fields: tuple[str, ...] | None = None,
) -> None:
    """Greedy outputs of the student after `stage` for `todo`, one part per `part_size` users; `fields`:
    the keys of each record to keep (all when None)."""
    student = pipe.load_model("student", stage)
    records = functools.partial(_records, student, pipe.prompts(student), max_new_tokens, batch_size, fields)
    pipe.write_parts(store, todo, desc, _user, records)


def _records(
    student: Any,
    prompts: TaijiPrompts,
    max_new_tokens: int,
    batch_size: int,
    fields: tuple[str, ...] | None,
    chunk: list[UserContext],
) -> list[dict[str, Any]]:
    # a module function under functools.partial, not a closure: a traceback keeps each frame's function,
    # and a closure over the student would keep the student alive after a failed stage
    recs = predict_intents(student, prompts, chunk, max_new_tokens, batch_size)
    return recs if fields is None else [{k: r[k] for k in fields} for r in recs]


def _user(context: UserContext) -> int:
    return context.user


def run_features(pipe: TaijiPipeline, stage: str | None = None) -> Path:
    c = pipe.config
    store = PartStore(pipe.work / "features" / (stage or "base"))
    users = sample_users(pipe.dataset, c.feature_users, c.seed + 2)
    done = store.done()
    todo = [ctx for ctx in build_contexts(pipe.dataset, users, "features") if ctx.user not in done]
    if todo:
        fields = ("user", "text")
        predict_parts(pipe, store, todo, stage, "features", c.features.max_new_tokens, c.features.batch_size, fields)
        release_memory()
    records = store.records()
    frame = LLMFeatureQuantizer(c.features, pipe.embedder).build(
        pipe.dataset, [int(r["user"]) for r in records], [r["text"] for r in records]
    )
    target = pipe.work / "features" / f"{stage or 'base'}.parquet"
    tmp = target.with_name(f".{target.name}.tmp")
    frame.write_parquet(tmp)
    tmp.replace(target)
    return target


def run_evaluate(pipe: TaijiPipeline, stage: str | None = None) -> dict[str, Any]:
    store = PartStore(pipe.work / "eval" / (stage or "base"))
    done = store.done()
    todo = [ctx for ctx in pipe.contexts("eval") if ctx.user not in done]
    if todo:
        predict_parts(pipe, store, todo, stage, f"eval {stage or 'base'}", pipe.config.eval_max_new_tokens, 8)
    summary = intent_accuracy(store.records(), pipe.categories)
    write_json(store.folder / "summary.json", summary)
    return summary
