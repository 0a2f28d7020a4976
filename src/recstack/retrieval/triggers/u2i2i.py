"""Multi-channel U2I2I retrieval with a trigger selector (CAPTS or a baseline), one cascade channel.

    channels:
      triggered:
        name: u2i2i
        channels: {itemcf: {name: itemcf}, swing: {name: swing},
                   sasrec_emb: {name: embedding_i2i}, content: {name: embedding_i2i, encoder: {name: text}}}
        selector: {name: capts}          # or recent | tagtop | feedback | random | lic
        triggers_per_channel: 10         # quota of triggers each I2I channel expands (int or per channel)

Each request: the user's last `num_candidates` items are the candidate triggers; the selector assigns
them to the I2I channels (CAPTS: routed by calibrated look-ahead value, METHODS.md §2.5); each channel
expands its triggers (I2IRetriever.expand) into k candidates; the lists are interleaved by rank and de-duplicated
(merge_candidates) and tagged with the I2I channel names. A (trigger, channel) pair whose expansion is
empty (the trigger has no neighbours there) is never routed and is counted in `stats`. A user with no
history has no triggers: every channel backfills popular items (the popular channel), no error.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from recstack.data.batch import Candidates, UserBatch
from recstack.data.dataset import Dataset
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError, DataError
from recstack.registry import add_plugin_modules, build, register
from recstack.retrieval.base import Retriever
from recstack.retrieval.i2i import I2IRetriever
from recstack.retrieval.merge import merge_candidates
from recstack.retrieval.triggers.episodes import TriggerEpisodes, replay_episodes, serving_episodes
from recstack.retrieval.triggers.selectors import SelectorContext, TriggerSelector
from recstack.retrieval.triggers.vam import truncate_neighbours

add_plugin_modules("trigger_selector", ["recstack.retrieval.triggers.selectors", "recstack.retrieval.triggers.capts"])

# Per-event own feedback columns, in order of preference ("auto"); none present -> trigger popularity [I].
FEEDBACK_COLUMNS = ("rating", "watch_time", "long_view", "like")
CATEGORY_COLUMNS = ("category", "categories", "genres", "topic")


def _default_channels() -> dict[str, dict[str, Any]]:
    return {"itemcf": {"name": "itemcf"}, "swing": {"name": "swing"}}


@dataclass
class U2I2IConfig:
    channels: dict[str, dict[str, Any]] = field(default_factory=_default_channels)
    """alias -> I2I retriever spec (itemcf, swing, embedding_i2i, ...)"""
    selector: dict[str, Any] = field(default_factory=lambda: {"name": "capts"})
    num_candidates: int = 20  # candidate triggers per user: the last N history items (2 x the quota)
    triggers_per_channel: int | dict[str, int] = 10
    expansion: int = 20  # per-trigger top-N VAM replays (~ k_total / triggers: what one trigger adds to 200)
    future_window: int = 5  # VAM: engagements credited = the next W interactions after the cutoff
    cutoffs_per_user: int = 2  # training episodes per user (cutoffs W apart)
    feedback: str | None = "auto"  # own-feedback column ("auto": first of FEEDBACK_COLUMNS present)
    category: str | None = "auto"  # item category column for TagTop ("auto": first of CATEGORY_COLUMNS)
    weight_by_value: bool = True  # [I] a routed trigger's expansion weighted by its selector score
    progress: bool = False

    def __post_init__(self) -> None:
        if not self.channels:
            raise ConfigError("u2i2i.channels: at least one I2I channel is required")
        for alias, spec in self.channels.items():
            if not isinstance(spec, dict) or "name" not in spec:
                raise ConfigError(f"u2i2i.channels.{alias}: expected a mapping with a 'name' key")
        if self.num_candidates < 1 or self.expansion < 1 or self.future_window < 1:
            raise ConfigError("u2i2i: num_candidates, expansion and future_window must be >= 1")


def _item_categories(dataset: Dataset, column: str | None) -> torch.Tensor:
    """[num_items + 1] category id per item (0 = none): first '|' genre, or a '>' path's first 3 levels."""
    if column == "auto":
        column = next((c for c in CATEGORY_COLUMNS if c in dataset.items.columns), None)
    categories = torch.zeros(dataset.num_items + 1, dtype=torch.long)
    if column is None:
        return categories
    if column not in dataset.items.columns:
        raise ConfigError(f"u2i2i.category: items table of {dataset.name} has no column {column!r}")
    tags = dataset.items.select(
        pl.col("item"),
        pl.col(column).cast(pl.Utf8).str.split("|").list.first().str.split(" > ").list.head(3).list.join(" > "),
    )
    codes = tags[column].cast(pl.Categorical).to_physical().to_numpy().astype(np.int64) + 1
    known = tags[column].is_not_null().to_numpy()
    categories[torch.from_numpy(tags["item"].to_numpy().astype(np.int64)[known])] = torch.from_numpy(codes[known])
    return categories


@register("retriever", "u2i2i", config=U2I2IConfig)
class U2I2IRetriever(Retriever):
    name = "u2i2i"
    config: U2I2IConfig

    def __init__(self, config: U2I2IConfig | None = None) -> None:
        self.config = config or U2I2IConfig()
        self.channels: dict[str, I2IRetriever] = {}
        for alias, spec in self.config.channels.items():
            channel = build("retriever", spec, where=f"u2i2i.channels.{alias}")
            if not isinstance(channel, I2IRetriever):
                raise ConfigError(f"u2i2i.channels.{alias}: {spec['name']!r} is not an I2I channel")
            self.channels[alias] = channel
        self.selector: TriggerSelector = build("trigger_selector", self.config.selector, where="u2i2i.selector")
        self.feedback_key: str | None = None
        self.mean_feedback = 1.0  # own feedback assumed for a request without it (the training mean)
        self.expansions: dict[str, Any] = {}
        self.trigger_degree = torch.zeros(0, dtype=torch.long)  # set by _set_expansions
        self.log_popularity = torch.zeros(0)
        self.stats: dict[str, Any] = {"empty_expansions_skipped": 0}
        self.fit_report: dict[str, Any] = {}

    # ---- training -------------------------------------------------------------------------------
    def _feedback_key(self, dataset: Dataset) -> str | None:
        key = self.config.feedback
        if key == "auto":
            return next((c for c in FEEDBACK_COLUMNS if c in dataset.interactions.columns), None)
        if key is not None and key not in dataset.interactions.columns:
            raise ConfigError(f"u2i2i.feedback: {dataset.name} has no interaction column {key!r}")
        return key

    def fit(self, dataset: Dataset) -> U2I2IRetriever:
        for channel in self.channels.values():
            channel.fit(dataset)
        return self.fit_selector(dataset)

    def fit_selector(self, dataset: Dataset) -> U2I2IRetriever:
        """Train the trigger selector on replay episodes of the train split (the channels are fitted)."""
        self.feedback_key = self._feedback_key(dataset)
        popularity = dataset.item_popularity("train")
        sequences = dataset.sequences(before="valid")
        self._set_expansions()
        if self.feedback_key is not None:
            feedback = dataset.sequences(before="valid", column=self.feedback_key)
        else:  # no per-event feedback: the trigger's engagement count stands for it [I]
            feedback = Jagged(self.log_popularity[sequences.values.long()], sequences.offsets)
        episodes = replay_episodes(
            sequences, feedback, self.config.num_candidates, self.config.future_window, self.config.cutoffs_per_user
        )
        self.mean_feedback = float(feedback.values.float().mean()) if feedback.values.numel() else 1.0
        if len(episodes) == 0:
            raise DataError(
                f"u2i2i: no user of {dataset.name} has more than future_window={self.config.future_window} train items"
            )
        context = SelectorContext(
            episodes,
            self.expansions,
            self._item_features(popularity),
            _item_categories(dataset, self.config.category),
            progress=self.config.progress,
        )
        started = time.perf_counter()
        self.selector.fit(context)
        self.fit_report = {
            "episodes": len(episodes),
            "feedback": self.feedback_key or "popularity",
            "selector_seconds": round(time.perf_counter() - started, 2),
            **context.report,
        }
        return self

    def _set_expansions(self) -> None:
        """What serving reads per request, derived once from the fitted channels: the top-N expansion
        tables, neighbours per (item, channel) [I + 1, C], and log train popularity [I + 1]."""
        self.expansions = {
            alias: truncate_neighbours(channel.neighbours, self.config.expansion)
            for alias, channel in self.channels.items()
            if channel.neighbours is not None
        }
        self.trigger_degree = torch.stack(
            [torch.from_numpy(np.diff(table.indptr)) for table in self.expansions.values()], 1
        )
        popularity = next(iter(self.channels.values())).popularity
        assert popularity is not None  # set by every I2I channel's fit / load
        self.log_popularity = torch.log1p(torch.from_numpy(popularity).float())

    def _item_features(self, popularity: torch.Tensor) -> torch.Tensor:
        """[num_items + 1, 1 + 2C]: log popularity; per channel log neighbour count and mean top-N similarity."""
        columns = [torch.log1p(popularity)]
        for alias, channel in self.channels.items():
            table = channel.neighbours
            assert table is not None
            degree = torch.from_numpy(np.diff(table.indptr).astype(np.float32))
            mean_similarity = torch.from_numpy(
                np.asarray(table.multiply(self.expansions[alias]).sum(1)).ravel().astype(np.float32)
            ) / degree.clamp(min=1, max=self.config.expansion)
            spread = mean_similarity[degree > 0].std() if bool((degree > 0).sum() > 1) else torch.tensor(1.0)
            columns += [torch.log1p(degree), mean_similarity / spread.clamp(min=1e-8)]
        return torch.stack(columns, 1)

    # ---- retrieval ------------------------------------------------------------------------------
    def quotas(self) -> torch.Tensor:
        """[C] triggers each channel expands."""
        per = self.config.triggers_per_channel
        if isinstance(per, dict):
            unknown = sorted(set(per) - set(self.channels))
            if unknown:
                raise ConfigError(f"u2i2i.triggers_per_channel.{unknown[0]}: no such channel")
            return torch.tensor([int(per.get(alias, 0)) for alias in self.channels])
        return torch.full((len(self.channels),), int(per))

    def assign(self, batch: UserBatch) -> tuple[TriggerEpisodes, torch.Tensor, torch.Tensor]:
        """The batch's candidate triggers [B, M], their channel assignment [B, M, C] bool and the
        expansion weight of each (trigger, channel) [B, M, C]."""
        episodes = serving_episodes(batch, self.config.num_candidates, self.feedback_key, self.mean_feedback)
        if self.feedback_key is None:
            episodes.feedback = self.log_popularity[episodes.candidates] * episodes.valid
        has_neighbours = self.trigger_degree[episodes.candidates] > 0
        routable = has_neighbours & episodes.valid.unsqueeze(-1)
        self.stats["empty_expansions_skipped"] += int((episodes.valid.unsqueeze(-1) & ~has_neighbours).sum())
        assignment, weights = self.selector.select_weighted(episodes, self.quotas(), routable)
        return episodes, assignment, weights

    def retrieve_per_channel(self, batch: UserBatch, k: int, exclude_history: bool = True) -> dict[str, Candidates]:
        """Each I2I channel's expansion of its assigned triggers, k candidates each (Candidates [B, k])."""
        if not self.expansions:
            raise DataError("u2i2i: not fitted; call fit(dataset) or Retriever.load(path) first")
        episodes, assignment, weights = self.assign(batch)
        out = {}
        for c, (alias, channel) in enumerate(self.channels.items()):
            rows, columns = torch.nonzero(assignment[..., c], as_tuple=True)
            items = episodes.candidates[rows, columns]
            weight = weights[rows, columns, c] if self.config.weight_by_value else torch.ones(items.numel())
            out[alias] = channel.expand(batch, rows, items, weight, k, exclude_history)
        return out

    def retrieve(self, batch: UserBatch, k: int, exclude_history: bool = True) -> Candidates:
        """The channels' lists interleaved by rank (round robin), de-duplicated, cut to k: Candidates [B, k]."""
        catalogue = next(iter(self.channels.values())).num_items
        if k > catalogue:
            warnings.warn(f"u2i2i: k={k} exceeds the catalogue ({catalogue} items); clipped", stacklevel=2)
            k = catalogue
        return merge_candidates(self.retrieve_per_channel(batch, k, exclude_history), None, k)

    # ---- persistence ----------------------------------------------------------------------------
    def save_state(self, path: Path) -> dict:
        if not self.expansions:
            raise DataError("u2i2i: nothing to save; fit the retriever first")
        for alias, channel in self.channels.items():
            channel.save(path / "channels" / alias)
        tensors, meta = self.selector.state()
        if tensors:
            temporary = path / ".selector.safetensors.tmp"
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(temporary))
            temporary.replace(path / "selector.safetensors")
        return {
            "feedback_key": self.feedback_key,
            "mean_feedback": self.mean_feedback,
            "selector_meta": meta,
            "fit_report": self.fit_report,
        }

    def load_state(self, path: Path, meta: dict) -> None:
        for alias in self.channels:
            loaded = Retriever.load(path / "channels" / alias)
            assert isinstance(loaded, I2IRetriever)
            self.channels[alias] = loaded
        self.feedback_key = meta.get("feedback_key")
        self.mean_feedback = float(meta.get("mean_feedback", 1.0))
        self.fit_report = meta.get("fit_report", {})
        file = path / "selector.safetensors"
        tensors = load_file(str(file)) if file.is_file() else {}
        if self.selector.learned and not tensors:
            raise DataError(f"u2i2i: the {self.selector.name} selector's weights are missing ({file})")
        self.selector.load(tensors, meta.get("selector_meta", {}))
        self._set_expansions()
