"""Taiji prompts: the user context (history as item text), the student prompt and the teacher's
reverse-reasoning prompt with the answer as a hint (RUPR, METHODS.md §2.1).

A `UserContext` is one user's history (oldest first) and the item chosen next. `build_contexts` makes
them from a prepared dataset without leaking evaluation rows:
    "train_last": history = train rows but the last, target = the last train row (Taiji's training data)
    "valid":      history = train rows, target = the valid item
    "test":       history = train + valid rows, target = the test item (held-out intent accuracy)
    "features":   history = train rows (users without any are left out), no target (the enhancer's input;
                  valid/test never seen)

Interpretations ([I], flags of PromptConfig): `history_tokens` (budget; the most recent items are kept),
`show_categories` (the prompt lists the first-level categories so a small model knows the label space),
the wording of the system prompt and of the hint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.llm.base import Prompt
from recstack.llm.prompts import HistoryPrompts, PromptSettings
from recstack.llm.taiji.answer import ANSWER_INSTRUCTIONS
from recstack.llm.taiji.categories import CategoryPaths

ContextMode = Literal["train_last", "valid", "test", "features"]


@dataclass
class PromptConfig:
    fields: list[str] | None = None  # item text fields (None = title + categories where present)
    max_field_chars: int = 200
    time: bool = True  # prefix each history line with its date
    history_tokens: int = 384  # [I] token budget of the history; the most recent items are kept
    history_items: int = 30  # at most this many recent items
    show_categories: Literal["none", "first_level"] = "first_level"  # [I]
    system: str = "You are a shopping assistant. You infer what a user wants to buy next from their purchase history."
    hint: str = (
        "Hint (do not mention it): the item the user actually chose next is:\n{item}\n"
        "Write the reasoning that leads from the history to this choice, and give its category in the answer."
    )  # [I] the teacher's hint wording; {item} is the chosen item's text

    def __post_init__(self) -> None:
        if self.history_tokens <= 0 or self.history_items <= 0:
            raise ConfigError("prompts.history_tokens and prompts.history_items must be > 0")
        if "{item}" not in self.hint:
            raise ConfigError("prompts.hint must contain {item}")


@dataclass
class UserContext:
    user: int  # internal id
    raw_user: str
    history: list[int]  # item ids, oldest first: a prefix of the user's rows with split < `before`
    target: int  # the item chosen next; 0 = unknown
    before: str = "valid"


def build_contexts(dataset: Dataset, users: Sequence[int] | torch.Tensor, mode: ContextMode) -> list[UserContext]:
    """Contexts of `users` (internal ids) in the given order; users with no usable rows are left out."""
    users = [int(u) for u in users]
    before = {"train_last": "valid", "valid": "valid", "test": "test", "features": "valid"}[mode]
    sequences = dataset.sequences(before=before)
    targets: dict[int, int] = {}
    if mode in ("valid", "test"):
        frame = dataset.split_frame(mode).group_by("user", maintain_order=True).first()
        targets = dict(zip(frame["user"].to_list(), frame["item"].to_list()))
    raw = (
        dataset.users["raw_id"].to_list()
        if "raw_id" in dataset.users.columns
        else [str(u) for u in range(1, dataset.num_users + 1)]
    )
    out = []
    for user in users:  # a loop over the (few) users an LLM can afford to read
        history = sequences.row(user).tolist()
        if mode == "train_last":
            if len(history) < 2:
                continue
            history, target = history[:-1], history[-1]
        elif mode == "features":
            if not history:
                continue
            target = 0
        else:
            if user not in targets or not history:
                continue
            target = targets[user]
        out.append(UserContext(user, str(raw[user - 1]), history, int(target), before))
    return out


class TaijiPrompts:
    """Builds student and teacher prompts (chat messages) for UserContexts; item and history lines come from
    recstack.llm.prompts (title, categories, date)."""

    def __init__(
        self,
        dataset: Dataset,
        categories: CategoryPaths,
        config: PromptConfig | None = None,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        self.config = c = config or PromptConfig()
        self.dataset, self.categories = dataset, categories
        self.builders = {
            before: HistoryPrompts(dataset, PromptSettings(c.fields, c.max_field_chars, c.time, before))
            for before in ("valid", "test")
        }
        self.count_tokens = count_tokens or (lambda text: len(text.split()))
        self.truncated = 0  # histories cut to the token budget or item count

    def item_text(self, item: int) -> str:
        return self.builders["valid"].item_text(item)

    def history_text(self, context: UserContext) -> str:
        """The context's history lines, oldest first, keeping the most recent that fit the budget."""
        _, lines = self.builders[context.before].lines(context.user)
        lines = lines[: len(context.history)][-self.config.history_items :]
        kept: list[str] = []
        used = 0
        for line in reversed(lines):  # newest first, until the budget is spent
            cost = self.count_tokens(line) + 1
            if kept and used + cost > self.config.history_tokens:
                break
            kept.append(line)
            used += cost
        if len(kept) < len(context.history):
            self.truncated += 1
        return "\n".join(reversed(kept)) if kept else "(no purchases yet)"

    def _body(self, context: UserContext) -> str:
        parts = [f"The user's purchases, oldest first:\n{self.history_text(context)}"]
        if self.config.show_categories == "first_level":
            parts.append("Top-level categories: " + "; ".join(self.categories.first_levels()))
        return "\n\n".join(parts)

    def student(self, context: UserContext) -> Prompt:
        """The prompt without a hint (ORFT scoring, SFT, POPO, inference)."""
        user = f"{self._body(context)}\n\n{ANSWER_INSTRUCTIONS}"
        return [{"role": "system", "content": self.config.system}, {"role": "user", "content": user}]

    def teacher(self, context: UserContext) -> Prompt:
        """RUPR: the same context with the chosen item as a hint."""
        if context.target <= 0:
            raise DataError(f"user {context.raw_user}: a teacher prompt needs the chosen item (target)")
        hint = self.config.hint.format(item=self.item_text(context.target))
        user = f"{self._body(context)}\n\n{hint}\n\n{ANSWER_INSTRUCTIONS}"
        return [{"role": "system", "content": self.config.system}, {"role": "user", "content": user}]


def sample_users(dataset: Dataset, count: int | None, seed: int, exclude: Sequence[int] = ()) -> list[int]:
    """`count` internal user ids drawn uniformly without replacement (seeded), sorted; None = all users."""
    pool = np.setdiff1d(np.arange(1, dataset.num_users + 1), np.asarray(list(exclude), dtype=np.int64))
    if count is None or count >= pool.size:
        return pool.tolist()
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(pool, size=count, replace=False).tolist())
