"""ServingModel: one loaded run, with everything a request needs precomputed once.

Loading reads the run folder exactly as `Cascade.load` does (JSON configs naming registered components,
weights from safetensors; nothing in the folder is executed) and the prepared dataset the run names,
then builds the lookups a request needs so that serving never touches the interaction table:
raw id -> internal id maps, titles, every known user's history as one UserBatch (rows are selected
per micro-batch, vectorised), and the train popularity for cold-start pages.

A run is only accepted after a smoke test: one page for a few known users and one for a raw history
must come back with item ids inside the dataset's catalogue. This is what refuses an incompatible run
(trained on another dataset, a channel saved for a different catalogue) at load time, so that a hot
reload fails before the swap instead of failing requests after it.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch

from recstack.cascade import Cascade, history_features
from recstack.data.batch import UserBatch
from recstack.data.dataset import Dataset
from recstack.errors import DataError, RecstackError

_versions = itertools.count(1)


@dataclass
class ServingModel:
    run_dir: Path
    cascade: Cascade
    dataset: Dataset
    """the retrieval view of the prepared dataset (consumed items only)"""
    user_index: dict[str, int]
    item_index: dict[str, int]
    raw_items: list[str]
    titles: list[str]
    """titles[i] is item i's title ("" for padding and untitled items)"""
    histories: UserBatch
    """every known user's full history: row u - 1 is user u"""
    popularity: torch.Tensor
    """[num_items + 1] train interaction counts (the cold-start page)"""
    latest_time: int
    """newest timestamp in the data: a raw-history request's events are taken to end here"""
    scenario_names: list[str] = field(default_factory=list)
    version: int = 0
    loaded_at: float = 0.0

    @property
    def num_items(self) -> int:
        return len(self.raw_items)

    @property
    def channel_names(self) -> list[str]:
        return list(self.cascade.channels)

    def describe(self) -> dict[str, object]:
        return {
            "run_dir": str(self.run_dir),
            "run": self.cascade.config.name,
            "dataset": self.dataset.name,
            "version": self.version,
            "loaded_at": self.loaded_at,
            "users": len(self.user_index),
            "items": self.num_items,
            "channels": self.channel_names,
            "ranker": (self.cascade.config.ranker or {}).get("name"),
            "page": self.cascade.page.name,
        }


def load_model(run_dir: str | Path) -> ServingModel:
    """Load and smoke-test a run folder; raises DataError (with the reason) if it cannot serve."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run folder {run_dir} does not exist")
    try:
        cascade = Cascade.load(run_dir)
        logged = Dataset.load(cascade.config.dataset.name)
    except RecstackError:
        raise
    except Exception as exc:  # a corrupt file surfaces as whatever its reader raises
        raise DataError(f"{run_dir}: cannot load the run: {type(exc).__name__}: {exc}") from exc
    view = cascade.retrieval_view(logged)
    text = next((f for f in logged.text_fields if f in logged.items.columns), None)
    titles = [""] + (logged.items[text].cast(pl.Utf8).fill_null("").to_list() if text else [""] * logged.num_items)
    users = torch.arange(1, logged.num_users + 1)
    model = ServingModel(
        run_dir=run_dir,
        cascade=cascade,
        dataset=view,
        user_index={raw: i + 1 for i, raw in enumerate(logged.users["raw_id"].cast(pl.Utf8).to_list())},
        item_index={raw: i + 1 for i, raw in enumerate(logged.items["raw_id"].cast(pl.Utf8).to_list())},
        raw_items=logged.items["raw_id"].cast(pl.Utf8).to_list(),
        titles=titles,
        histories=view.user_batch(users, features=history_features(view)),
        popularity=view.item_popularity("train"),
        latest_time=int(logged.interactions["timestamp"].max() or 0),  # type: ignore[arg-type]
        scenario_names=[str(s) for s in logged.meta.get("scenario_names", [])],
        version=next(_versions),
        loaded_at=time.time(),
    )
    smoke_test(model)
    return model


def smoke_test(model: ServingModel) -> None:
    """Serve a few pages before accepting the run; any failure or out-of-catalogue item refuses it."""
    from recstack.serve.pipeline import Row, run_rows

    known = list(model.user_index.values())[:4]
    rows = [Row(user=u, history=None, k=5) for u in known]
    first_items = [model.raw_items[0]] if model.raw_items else []
    rows.append(Row(user=0, history=[model.item_index[r] for r in first_items], k=5))
    try:
        results = run_rows(model, rows)
    except Exception as exc:
        raise DataError(
            f"{model.run_dir}: the run does not serve pages for {model.dataset.name} "
            f"({type(exc).__name__}: {exc}); is it trained on this dataset?"
        ) from exc
    for result in results:
        bad = [i for i in result.items if not 0 < i <= model.num_items]
        if bad:
            raise DataError(
                f"{model.run_dir}: the run returned item ids {bad[:3]} outside {model.dataset.name}'s "
                f"{model.num_items} items; it was trained on another catalogue"
            )
