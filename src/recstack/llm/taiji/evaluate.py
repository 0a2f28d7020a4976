"""Next-intent accuracy (Taiji's offline metric, METHODS.md §2.1): does the predicted intent's category
match the category of the item the user actually chose next, at the first level and at the leaf?

    records = predict_intents(student, prompts, contexts, max_new_tokens=256)
    intent_accuracy(records, categories)   # {"first_level", "leaf", "format_ok", "users"}

Baselines without an LLM: `majority_baseline` (the most frequent category of the training targets) and
`last_item_baseline` (the category of the user's last history item).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from recstack.llm.base import GenerationConfig, LanguageModel
from recstack.llm.taiji.answer import parse_output
from recstack.llm.taiji.categories import CategoryPaths, Path, level_accuracy
from recstack.llm.taiji.prompting import TaijiPrompts, UserContext


def predict_intents(
    model: LanguageModel,
    prompts: TaijiPrompts,
    contexts: Sequence[UserContext],
    max_new_tokens: int = 256,
    batch_size: int = 8,
    on_batch: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Greedy outputs of `model` on the student prompts: records {user, raw_user, target, text, category}."""
    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size)
    records: list[dict[str, Any]] = []
    for start in range(0, len(contexts), batch_size):
        chunk = list(contexts[start : start + batch_size])
        outputs = model.generate([prompts.student(ctx) for ctx in chunk], config)
        batch = []
        for ctx, gens in zip(chunk, outputs):
            parsed = parse_output(gens[0].text)
            category = list(parsed.answer.category) if parsed.answer is not None else []
            batch.append(
                {
                    "user": ctx.user,
                    "raw_user": ctx.raw_user,
                    "target": ctx.target,
                    "text": gens[0].text,
                    "category": category,
                    "well_formed": parsed.well_formed,
                    "prompt_truncated": gens[0].prompt_truncated,
                }
            )
        records += batch
        if on_batch is not None:
            on_batch(batch)
    return records


def accuracy(predicted: Sequence[Path], targets: Sequence[Path]) -> dict[str, float]:
    """Mean first-level and leaf accuracy of predicted paths against target paths."""
    if not targets:
        return {"first_level": 0.0, "leaf": 0.0, "users": 0}
    scores = [level_accuracy(p, t) for p, t in zip(predicted, targets)]
    n = len(scores)
    return {
        "first_level": sum(s["first_level"] for s in scores) / n,
        "leaf": sum(s["leaf"] for s in scores) / n,
        "users": n,
    }


def intent_accuracy(records: Sequence[dict[str, Any]], categories: CategoryPaths) -> dict[str, float]:
    """Accuracy of LLM records (from predict_intents); outputs that break the format count as wrong."""
    predicted = [categories.normalise(tuple(r["category"])) if r["well_formed"] else () for r in records]
    out = accuracy(predicted, [categories[r["target"]] for r in records])
    out["format_ok"] = sum(bool(r["well_formed"]) for r in records) / max(1, len(records))
    return out


def majority_baseline(
    categories: CategoryPaths, train_targets: Sequence[int], contexts: Sequence[UserContext]
) -> dict[str, float]:
    """Predict, for everyone, the most frequent full path among the training targets."""
    counts = Counter(categories[t] for t in train_targets if categories[t])
    majority = counts.most_common(1)[0][0] if counts else ()
    return accuracy([majority] * len(contexts), [categories[c.target] for c in contexts])


def last_item_baseline(categories: CategoryPaths, contexts: Sequence[UserContext]) -> dict[str, float]:
    """Predict the category of the user's last history item."""
    predicted = [categories[c.history[-1]] if c.history else () for c in contexts]
    return accuracy(predicted, [categories[c.target] for c in contexts])


def baselines(
    categories: CategoryPaths, train_targets: Sequence[int], contexts: Sequence[UserContext]
) -> dict[str, dict[str, float]]:
    """Both LLM-free baselines on the held-out `contexts`: the floor every stage's accuracy is read against."""
    return {
        "majority": majority_baseline(categories, train_targets, contexts),
        "last_item": last_item_baseline(categories, contexts),
    }
