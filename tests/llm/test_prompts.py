"""Prompt builders: item text, user history with a token budget that keeps the most recent items."""

from __future__ import annotations

import polars as pl
import pytest

from recstack.data.prepare import PrepareConfig, prepare
from recstack.data.tables import RawTables
from recstack.errors import ConfigError, DataError
from recstack.llm.prompts import HistoryPrompts, PromptSettings, item_text, user_history_text, users_with_history
from tests.helpers import make_raw

DAY = 86_400
START = 1_400_000_000  # 2014-05-13


@pytest.fixture(scope="module")
def shop():
    raw = make_raw(num_users=6, num_items=12, per_user=5)
    items = raw.items.with_columns(categories=pl.Series([f"Beauty > Cat{i % 3}" for i in range(12)]))
    log = raw.interactions.with_columns(timestamp=START + pl.col("timestamp") * DAY)
    return prepare(
        RawTables("shop", log, items=items, labels=["rating"], text_fields=["title", "categories"]), PrepareConfig()
    )


def words(text: str) -> int:
    return len(text.split())


def test_item_text_has_title_and_categories(shop):
    raw_id = shop.items["raw_id"][0]
    text = item_text(shop, 1)
    assert text == f"item {raw_id[1:]}; categories: Beauty > Cat{int(raw_id[1:]) % 3}"
    with pytest.raises(DataError, match="no item 0"):
        item_text(shop, 0)


def test_history_lines_are_dated_oldest_first_and_exclude_test(shop):
    builder = HistoryPrompts(shop)
    user = 1
    frame = shop.interactions.filter((pl.col("user") == user) & (pl.col("split") < 2))
    items, lines = builder.lines(user)
    assert items == frame["item"].to_list() and len(lines) == len(items)
    assert lines[0].startswith("- 20") and lines[0].endswith(builder.texts[items[0]])
    full = user_history_text(shop, user, 10_000, words)
    assert full == "\n".join(lines)


def test_budget_keeps_the_most_recent_items(shop):
    builder = HistoryPrompts(shop)
    _, lines = builder.lines(2)
    per_line = words(lines[-1])
    history = builder.history(2, 2 * per_line + 1, words)
    assert history.text.split("\n") == lines[-2:] and history.dropped == len(lines) - 2
    assert words(history.text) <= 2 * per_line + 1
    tiny = builder.history(2, 2, words)  # not even one line fits: the newest is cut to fit
    assert tiny.items == history.items[-1:] and 0 < words(tiny.text) <= 2
    with pytest.raises(ConfigError, match="max_tokens"):
        builder.history(2, 0, words)


def test_settings_fields_time_and_synthetic_timestamps(tiny_dataset):
    plain = HistoryPrompts(tiny_dataset, PromptSettings(before=None))  # timestamps 0..10000: not dates
    _, lines = plain.lines(1)
    assert lines[0].startswith("- t=") and len(lines) == 8
    untimed = HistoryPrompts(tiny_dataset, PromptSettings(time=False, fields=["title"]))
    assert untimed.lines(1)[1][0] == "- " + untimed.texts[untimed.lines(1)[0][0]]
    assert len(users_with_history(tiny_dataset)) == tiny_dataset.num_users
    with pytest.raises(DataError, match="no user"):
        plain.lines(10_000)
