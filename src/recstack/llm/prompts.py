"""Prompt text from a prepared Dataset: an item as text, a user's history as item lines under a token budget.

    item:    "Essie nail polish; categories: Beauty > Makeup > Nails"        (title first, then field: value)
    history: "- 2014-03-02: Essie nail polish; categories: Beauty > Makeup > Nails\n- 2014-05-11: ..."
             oldest first; when the budget is short the OLDEST items are dropped (the most recent are kept).

`HistoryPrompts` builds every item's text once (vectorised, polars) and the users' sequences once; the
functions `item_text` / `user_history_text` are shortcuts that keep one builder per dataset.

Our interpretations [I]: default fields are title + categories where the dataset has them (else its text
fields); each field is cut to `max_field_chars`; timestamps below 1e8 are not Unix seconds (synthetic
logs) and are written as "t=<value>"; if not even the most recent item fits the budget, its line is cut
to fit rather than returning nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.semantic_ids.encoders.text import item_texts

UNIX_SECONDS_FROM = 10**8  # 1973-03-03: smaller timestamps are not dates


@dataclass
class PromptSettings:
    fields: list[str] | None = None  # None = title + categories where present, else dataset.text_fields
    max_field_chars: int = 200
    time: bool = True  # prefix each history line with its date
    time_format: str = "%Y-%m-%d"
    before: str | None = "test"  # history = rows with split < before ("valid": train only; None: all rows)
    bullet: str = "- "

    def __post_init__(self) -> None:
        if self.max_field_chars <= 0:
            raise ConfigError(f"max_field_chars must be > 0, got {self.max_field_chars}")
        if self.before not in (None, "valid", "test"):
            raise ConfigError(f"before must be 'valid', 'test' or null, got {self.before!r}")


@dataclass
class History:
    text: str
    items: list[int] = field(default_factory=list)  # item ids kept, oldest first
    total: int = 0  # items in the user's history before the budget

    @property
    def dropped(self) -> int:
        return self.total - len(self.items)


class HistoryPrompts:
    """Item texts and user histories of one dataset (texts built once)."""

    def __init__(self, dataset: Dataset, settings: PromptSettings | None = None) -> None:
        self.dataset = dataset
        self.settings = s = settings or PromptSettings()
        fields = s.fields
        if fields is None:
            fields = [f for f in ("title", "categories") if f in dataset.items.columns] or dataset.text_fields
        if not fields:
            raise DataError(f"dataset {dataset.name!r} has no text fields for prompts; set fields: [...]")
        texts = item_texts(dataset, fields, "field_value", "; ", s.max_field_chars)
        if fields[0] == "title":  # the title reads best bare
            texts = [t.removeprefix("title: ") for t in texts]
        self.texts = ["", *texts]  # index = item id
        self.sequences = dataset.sequences(before=s.before)
        self.times = dataset.sequences(before=s.before, column="timestamp")
        stamps = dataset.interactions["timestamp"].to_numpy()
        self.unix = bool(stamps.size) and int(stamps.max()) >= UNIX_SECONDS_FROM

    def item_text(self, item: int) -> str:
        if not 1 <= item < len(self.texts):
            raise DataError(f"dataset {self.dataset.name!r}: no item {item} (items are 1..{len(self.texts) - 1})")
        return self.texts[item]

    def _when(self, timestamp: int) -> str:
        if self.unix:
            return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime(self.settings.time_format)
        return f"t={timestamp}"

    def lines(self, user: int) -> tuple[list[int], list[str]]:
        """The user's history items (oldest first) and one line of text each."""
        if not 1 <= user <= self.dataset.num_users:
            raise DataError(f"dataset {self.dataset.name!r}: no user {user} (users are 1..{self.dataset.num_users})")
        items = self.sequences.row(user).tolist()
        times = self.times.row(user).tolist()
        s = self.settings
        if s.time:
            return items, [f"{s.bullet}{self._when(t)}: {self.texts[i]}" for i, t in zip(items, times)]
        return items, [f"{s.bullet}{self.texts[i]}" for i in items]

    def history(self, user: int, max_tokens: int, count_tokens: Callable[[str], int]) -> History:
        """The most recent history lines whose joined text has at most `max_tokens` tokens, oldest first."""
        if max_tokens <= 0:
            raise ConfigError(f"max_tokens must be > 0, got {max_tokens}")
        items, lines = self.lines(user)
        kept, used = 0, 0
        for line in reversed(lines):  # newest first, until the budget is spent
            cost = count_tokens(line) + (1 if kept else 0)  # + the newline joining it
            if used + cost > max_tokens:
                break
            kept, used = kept + 1, used + cost
        start = len(lines) - kept
        text = "\n".join(lines[start:])
        while kept and count_tokens(text) > max_tokens:  # joining merged tokens differently: drop the oldest
            kept, start = kept - 1, start + 1
            text = "\n".join(lines[start:])
        if not kept and lines:  # not even the newest item fits: cut its line to the budget
            line = lines[-1]
            while line and count_tokens(line) > max_tokens:
                line = line[: int(len(line) * 0.9)]
            if line:
                return History(line, items[-1:], len(items))
        return History(text, items[start:], len(items))


_BUILDERS: dict[int, tuple[weakref.ref[Dataset], HistoryPrompts]] = {}


def prompts_for(dataset: Dataset, settings: PromptSettings | None = None) -> HistoryPrompts:
    """A cached HistoryPrompts for `dataset` (rebuilt when the settings differ)."""
    cached = _BUILDERS.get(id(dataset))
    if cached is not None and cached[0]() is dataset and cached[1].settings == (settings or PromptSettings()):
        return cached[1]
    builder = HistoryPrompts(dataset, settings)
    for key in [k for k, (ref, _) in _BUILDERS.items() if ref() is None]:  # datasets gone since
        del _BUILDERS[key]
    _BUILDERS[id(dataset)] = (weakref.ref(dataset), builder)
    return builder


def item_text(dataset: Dataset, item: int, settings: PromptSettings | None = None) -> str:
    """Item `item` (id 1..num_items) as text: title, then "field: value" for the other fields."""
    return prompts_for(dataset, settings).item_text(int(item))


def user_history_text(
    dataset: Dataset,
    user: int,
    max_tokens: int,
    count_tokens: Callable[[str], int],
    settings: PromptSettings | None = None,
) -> str:
    """User `user`'s history (rows with split < settings.before), one line per item, oldest first, keeping
    the most recent items whose text fits in `max_tokens` tokens as counted by `count_tokens`."""
    return prompts_for(dataset, settings).history(int(user), max_tokens, count_tokens).text


def users_with_history(dataset: Dataset, settings: PromptSettings | None = None) -> np.ndarray:
    """User ids that have at least one history row under `settings.before`."""
    lengths = prompts_for(dataset, settings).sequences.lengths().numpy()
    return np.flatnonzero(lengths)
