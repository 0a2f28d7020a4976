"""RUPR — Reverse(-engineered) User Preference Reasoning (Taiji, METHODS.md §2.1, step 1).

A teacher LLM sees the user's history *and the item actually chosen next* (a hint) and writes the chain
of thought that leads there, ending in the structured answer of answer.py. Several samples per user.

    generator = ReverseCoTGenerator(teacher, prompts, categories, RUPRConfig(samples=4))
    records = generator.generate(contexts)        # one dict per (user, sample), see `generate`

With a strong teacher the conclusion is correct by construction. A weaker one may conclude elsewhere or
break the format; `answer_policy` [I] says what to do:
    "replace":        keep the reasoning, rewrite the answer block with the chosen item's category (and the
                      teacher's description when it wrote one, else the item's title), so every SFT target
                      ends in the right, well-formed answer;
    "drop_mismatch":  keep only well-formed samples whose category equals the chosen item's;
    "keep":           keep every sample as written.
Each record says whether the teacher's own output was well-formed and how many levels it got right.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from recstack.errors import ConfigError
from recstack.llm.base import GenerationConfig, LanguageModel
from recstack.llm.taiji.answer import parse_output, with_answer
from recstack.llm.taiji.categories import CategoryPaths, matched_levels
from recstack.llm.taiji.prompting import TaijiPrompts, UserContext


@dataclass
class RUPRConfig:
    samples: int = 4  # chains of thought per user
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 256
    batch_size: int = 8  # prompts per generation batch
    answer_policy: Literal["replace", "drop_mismatch", "keep"] = "replace"  # [I]
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples <= 0:
            raise ConfigError(f"rupr.samples must be > 0, got {self.samples}")


class ReverseCoTGenerator:
    def __init__(
        self, teacher: LanguageModel, prompts: TaijiPrompts, categories: CategoryPaths, config: RUPRConfig | None = None
    ) -> None:
        self.teacher, self.prompts, self.categories = teacher, prompts, categories
        self.config = config or RUPRConfig()

    def generation_config(self, seed: int) -> GenerationConfig:
        c = self.config
        return GenerationConfig(
            max_new_tokens=c.max_new_tokens,
            temperature=c.temperature,
            top_p=c.top_p,
            num_return_sequences=c.samples,
            batch_size=c.batch_size,
            seed=seed,
        )

    def generate(
        self, contexts: Sequence[UserContext], on_batch: Callable[[list[dict[str, Any]]], None] | None = None
    ) -> list[dict[str, Any]]:
        """Records, one per kept sample: user, raw_user, sample, target, text (the SFT target: reasoning +
        answer), reasoning, category (list of levels), description, teacher_well_formed, teacher_levels
        (levels of the teacher's own category that match the target), target_levels, prompt_truncated.

        Users are processed `batch_size` at a time, each batch with its own seed (seed + first user id),
        so a resumed run generates the same samples; `on_batch` receives each batch's records."""
        records: list[dict[str, Any]] = []
        size = self.config.batch_size
        for start in range(0, len(contexts), size):
            chunk = list(contexts[start : start + size])
            prompts = [self.prompts.teacher(ctx) for ctx in chunk]
            outputs = self.teacher.generate(prompts, self.generation_config(self.config.seed + chunk[0].user))
            batch = [rec for ctx, gens in zip(chunk, outputs) for rec in self._records(ctx, gens)]
            records += batch
            if on_batch is not None:
                on_batch(batch)
        return records

    def _records(self, context: UserContext, generations: Sequence[Any]) -> list[dict[str, Any]]:
        target = self.categories[context.target]
        out = []
        for sample, gen in enumerate(generations):
            parsed = parse_output(gen.text)
            answer = parsed.answer
            own = self.categories.normalise(answer.category) if answer is not None else ()
            levels = matched_levels(own, target) if answer is not None else 0
            exact = parsed.well_formed and levels == len(target) == len(own)
            policy = self.config.answer_policy
            if policy == "drop_mismatch" and not exact:
                continue
            if policy == "keep" and answer is None:
                continue
            if policy == "replace":
                description = answer.description if answer is not None and answer.description else ""
                description = description or self.prompts.item_text(context.target).split(";")[0]
                category, text = target, with_answer(parsed.reasoning, target, description)
            else:
                assert answer is not None
                category, description, text = own, answer.description, gen.text.strip()
            out.append(
                {
                    "user": context.user,
                    "raw_user": context.raw_user,
                    "sample": sample,
                    "target": context.target,
                    "text": text,
                    "reasoning": parsed.reasoning,
                    "category": list(category),
                    "description": description,
                    "teacher_well_formed": parsed.well_formed,
                    "teacher_levels": levels,
                    "target_levels": len(target),
                    "prompt_truncated": bool(gen.prompt_truncated),
                }
            )
        return out
