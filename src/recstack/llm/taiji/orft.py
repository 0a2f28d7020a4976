"""ORFT — Open-ended Rejection-sampling Fine-Tuning, the filter (Taiji, METHODS.md §2.1, step 2).

An open-ended chain of thought has no checkable answer, so its quality is scored by a proxy: the
perplexity, under the student, of the chosen item's text after the prompt WITHOUT the hint followed by
the chain of thought. A chain that makes the real choice predictable is a good one. Samples with
PPL at or below the median (the `quantile` flag) are kept for the student's SFT (sft.py).

    filt = PPLRejectionFilter(ORFTConfig(quantile=0.5))
    ppl = filt.perplexities(student, prompts, texts, item_texts)     # [N]
    keep = filt.keep(ppl, users)                                       # [N] bool

What is scored, as text: render(student prompt) + chain of thought + `connector` + the item's text; only
the item's tokens count. Interpretations ([I], flags): `quantile` (0.5 = the median of the paper),
`scope` ("global": one threshold over all samples, as the paper says; "per_user": each user's own
median), `include_answer` (the answer block names the category, so by default only the reasoning
before it conditions the item), `connector` (the words that introduce the item after the reasoning), `item_text` ("title" or
the item's full prompt text "full").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from recstack.errors import ConfigError, DataError
from recstack.llm.base import LanguageModel, Prompt


@dataclass
class ORFTConfig:
    quantile: float = 0.5  # [I] keep samples with PPL <= this quantile of the PPLs (0.5 = median)
    scope: Literal["global", "per_user"] = "global"  # [I]
    connector: str = "\nThe user chooses next: "  # [I]
    item_text: Literal["title", "full"] = "full"  # [I]
    include_answer: bool = False  # [I] score after the reasoning only (False) or after reasoning + answer block
    batch_size: int = 8

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile <= 1.0:
            raise ConfigError(f"orft.quantile must be in (0, 1], got {self.quantile!r}")


class PPLRejectionFilter:
    def __init__(self, config: ORFTConfig | None = None) -> None:
        self.config = config or ORFTConfig()

    def scoring_prompt(self, student: LanguageModel, prompt: Prompt, reasoning: str) -> str:
        """The student prompt as the model reads it (chat template applied), then the reasoning and connector."""
        render = getattr(student, "render", None)
        if render is not None:
            head = render(prompt)
        elif isinstance(prompt, str):
            head = prompt
        else:
            head = "".join(f"{m['role']}: {m['content']}\n" for m in prompt) + "assistant:"
        return head + reasoning + self.config.connector

    def perplexities(
        self, student: LanguageModel, prompts: Sequence[Prompt], reasonings: Sequence[str], items: Sequence[str]
    ) -> torch.Tensor:
        """[N] PPL of items[i] after prompts[i] (no hint) + reasonings[i], float64."""
        if not len(prompts) == len(reasonings) == len(items):
            raise DataError(f"{len(prompts)} prompts, {len(reasonings)} reasonings and {len(items)} items must pair up")
        if any(not text.strip() for text in items):
            raise DataError("ORFT: an item has an empty text; its perplexity is undefined")
        heads = [self.scoring_prompt(student, p, r) for p, r in zip(prompts, reasonings)]
        size = self.config.batch_size
        return torch.cat(
            [student.perplexity(heads[s : s + size], items[s : s + size]) for s in range(0, len(heads), size)]
        )

    def keep(self, ppl: torch.Tensor, users: Sequence[int] | None = None) -> torch.Tensor:
        """[N] bool: PPL <= the `quantile` of the PPLs (of all samples, or of the user's own with per_user)."""
        ppl = ppl.double()
        if ppl.numel() == 0:
            return torch.zeros(0, dtype=torch.bool)
        if not torch.isfinite(ppl).all():
            raise DataError("ORFT: a perplexity is NaN or inf")
        q = self.config.quantile
        if self.config.scope == "global":
            return ppl <= torch.quantile(ppl, q)
        if users is None or len(users) != ppl.numel():
            raise DataError("ORFT scope per_user needs one user id per sample")
        owner = torch.as_tensor(list(users))
        keep = torch.zeros_like(ppl, dtype=torch.bool)
        for user in owner.unique():  # a loop over users: a handful of samples each
            rows = owner == user
            keep[rows] = ppl[rows] <= torch.quantile(ppl[rows], q)
        return keep
