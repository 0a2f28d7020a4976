"""Popular: global and windowed counts, train split only, history masking, save/load."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError
from recstack.registry import build
from recstack.retrieval.base import Retriever
from recstack.retrieval.popular import Popular, PopularConfig

DAY = 86_400
# (user, item, timestamp, split): item 1 is popular early, item 3 recently, item 4 only outside train.
ROWS = [
    (1, 1, 0, 0),
    (1, 2, 1 * DAY, 0),
    (1, 4, 9 * DAY, 2),
    (2, 1, 1 * DAY, 0),
    (2, 3, 9 * DAY, 0),
    (2, 4, 10 * DAY, 1),
    (3, 1, 2 * DAY, 0),
    (3, 3, 8 * DAY, 0),
    (3, 2, 10 * DAY, 0),
    (3, 4, 11 * DAY, 2),
]


def make_dataset(rows=ROWS, num_users: int = 4, num_items: int = 5) -> Dataset:
    users, items, times, splits = zip(*rows)
    frame = pl.DataFrame(
        {
            "user": pl.Series(users, dtype=pl.Int32),
            "item": pl.Series(items, dtype=pl.Int32),
            "timestamp": pl.Series(times, dtype=pl.Int64),
            "split": pl.Series(splits, dtype=pl.Int8),
        }
    )
    return Dataset(
        "tiny",
        interactions=frame.sort(["user", "timestamp"]),
        items=pl.DataFrame({"item": range(1, num_items + 1), "raw_id": [str(i) for i in range(num_items)]}),
        users=pl.DataFrame({"user": range(1, num_users + 1), "raw_id": [str(u) for u in range(num_users)]}),
        meta={},
    )


def test_global_counts_use_train_only() -> None:
    model = Popular().fit(make_dataset())
    assert model.scores.tolist() == [0, 3, 2, 2, 0, 0]
    cold = make_dataset().user_batch(torch.tensor([4]), before="valid")
    cands = model.retrieve(cold, k=3)
    items = cands.items[0].tolist()  # items 2 and 3 tie at two interactions
    assert items[0] == 1 and set(items[1:]) == {2, 3} and cands.channel_names == ["popular"]


@pytest.mark.parametrize("config", [{"window": 0.25}, {"window_days": 2.5}])
def test_recent_window_prefers_recent_items(config: dict) -> None:
    model = build("retriever", {"name": "popular", **config}).fit(make_dataset())
    # window = days 7.5..10: item 3 twice, item 2 once; item 1 outside, ranked by its overall count
    cands = model.retrieve(make_dataset().user_batch(torch.tensor([4])), k=4)
    assert cands.items.tolist() == [[3, 2, 1, 4]] or cands.items.tolist() == [[3, 2, 1, 5]]
    assert model.scores[3] > model.scores[2] > model.scores[1] > model.scores[4] == 0


def test_history_masked_no_padding_no_duplicates() -> None:
    data = make_dataset()
    model = Popular().fit(data)
    batch = data.user_batch(torch.tensor([1, 2, 3, 4]), before="valid")
    cands = model.retrieve(batch, k=5)
    for items, history in zip(cands.items.tolist(), batch.history.tolist()):
        real = [i for i in items if i > 0]
        assert len(real) == 5 - len(set(history)) and len(set(real)) == len(real)
        assert not set(real) & set(history)


def test_save_load_identical(tmp_path) -> None:
    data = make_dataset()
    model = Popular(PopularConfig(window=0.5)).fit(data)
    model.save(tmp_path / "pop")
    loaded = Retriever.load(tmp_path / "pop")
    assert loaded.config == model.config and torch.equal(loaded.scores, model.scores)
    batch = data.user_batch(torch.tensor([1, 4]), before="valid")
    assert torch.equal(loaded.retrieve(batch, 3).items, model.retrieve(batch, 3).items)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="window"):
        build("retriever", {"name": "popular", "window": 0.5, "window_days": 3})
    with pytest.raises(ConfigError, match="window"):
        build("retriever", {"name": "popular", "window": 1.5})
    order_data = make_dataset()
    order_data.meta["timestamp_kind"] = "order"
    with pytest.raises(ConfigError, match="window_days"):
        Popular(PopularConfig(window_days=1)).fit(order_data)
