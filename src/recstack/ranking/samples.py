"""Ranking samples (user, history, candidate item, context, labels per task) from the logged data.

Tasks are the binary label columns of the dataset (the synthetic world: click, like, long_view,
purchase), plus `like = rating >= like_threshold` when there is a rating but no like column.
Impression logs (some label is 0 somewhere) are used as they are: every row is a sample.
Positive-only logs (MovieLens, Amazon: a label such as `view` is always 1, or there is no label; a
`view` task is added when missing) get negatives: per positive, `negatives_per_positive` items the
user did not consume, a `retrieved_share` of them drawn from the user's retrieved candidates (when
`fit` was given Candidates) and the rest from a popularity sampler (count**alpha); every task is 0
for a negative. Training negatives are redrawn for every batch (from the Trainer-seeded torch RNG);
valid/test negatives are drawn once with a fixed seed, from items the user never consumed.

History of a sample: the user's history events (rows whose `history_label` is 1; every row for
positive-only logs) strictly earlier in time; for a valid/test sample, the events of earlier splits,
as `Dataset.user_batch(before=split)` gives at serving time. Stored as one Jagged per sample set
plus each sample's end offset in it, so a batch gathers its padded histories without a loop.

Time and behaviour inputs (optional; models must work without them):
  request_time  [N] float64: the sample's timestamp in seconds (float64: unix seconds lose ~100 s in
                float32); absent when the dataset's timestamps are only an order (timestamp_kind "order").
  history_time  [N, T] float32: request time minus event time in seconds (>= 0), 0 at padding; same
                condition as request_time.
  history_event [N, T] int64: the behaviour type of each history event, 0 = padding. With
                `event_labels` = the funnel order (shallow -> deep; auto: the label columns that vary,
                by decreasing positive rate, e.g. the world's click -> long_view -> like -> purchase,
                ML-100K's like), code = 2 + index of the deepest positive label, and 1 = none positive
                (an exposure only). So the model needs `len(event_labels) + 2` codes; absent when there
                are no event labels.

User-level aggregation (MTFM / MTGR, `group_window` of `Samples.inputs`): the samples of one user whose
request times fall in the same window (floor(time / window), any scenario) form a group that shares
one history: the user's history events before the group's LAST request. Extra inputs:
  group               [N] int64: group index of each row, 0..G-1
  group_history       [G, T] int64 item ids (right-aligned, 0 = padding); group_history_event [G, T]
  group_history_time  [G, T] float32: the group's last request time minus event time (0 at padding), in
                      seconds (timestamp units, and the window too, for "order" timestamps)
  group_offset        [N] float32: the group's last request time minus the row's request time (>= 0)
A group history event j may be shown to row i only when it happened before row i's request:
group_history_time[g, j] > group_offset[i] (the dynamic mask of MTFM hides the others). The per-row
"history" inputs stay as without aggregation (no leakage for models that ignore groups).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from recstack.data.batch import Candidates
from recstack.data.dataset import SPLIT_CODES, TRAIN, Dataset
from recstack.data.jagged import Jagged
from recstack.errors import ConfigError, DataError


@dataclass
class SampleConfig:
    tasks: list[str] | None = None  # None = every binary label (+ like from rating, + view when positive-only)
    negatives_per_positive: int = 4
    retrieved_share: float = 0.5  # share of negatives taken from retrieved-but-not-consumed candidates
    eval_negatives: int | None = None  # per valid/test positive; None = negatives_per_positive
    max_history: int = 30
    history_label: str | None = "auto"  # label marking history events; auto: every row if positive-only, else the
    #                                       first label (click); null: every row
    like_threshold: float = 4.0
    sampler_alpha: float = 0.75
    seed: int = 0
    event_labels: list[str] | None = None  # funnel order (shallow -> deep) of history_event codes; None = auto
    #                                       (labels that vary, by decreasing positive rate); [] = no history_event

    def __post_init__(self) -> None:
        if self.negatives_per_positive < 0 or (self.eval_negatives is not None and self.eval_negatives < 0):
            raise ConfigError("samples.negatives_per_positive / eval_negatives must be >= 0")
        if not 0.0 <= self.retrieved_share <= 1.0:
            raise ConfigError(f"samples.retrieved_share must be in [0, 1], got {self.retrieved_share!r}")
        if self.max_history <= 0:
            raise ConfigError(f"samples.max_history must be > 0, got {self.max_history!r}")


@dataclass
class Samples:
    """N samples. users, items, history_end: [N] int64; labels: task -> [N] float32; scenario: [N]
    (dataset scenario code + 1, 0 = unknown) or None. history: per-user events (num_users + 1 rows);
    sample i's history is history.values[history.offsets[users[i]]:history_end[i]]."""

    users: torch.Tensor
    items: torch.Tensor
    labels: dict[str, torch.Tensor]
    history: Jagged
    history_end: torch.Tensor
    scenario: torch.Tensor | None = None
    time: torch.Tensor | None = None  # [N] int64 request timestamps (raw dataset units)
    history_timestamps: torch.Tensor | None = None  # [E] int64, aligned with history.values
    history_events: torch.Tensor | None = None  # [E] int64 behaviour codes (module docstring)
    time_scale: float | None = None  # seconds per timestamp unit; None = order only (no time inputs)

    def __len__(self) -> int:
        return self.users.numel()

    def select(self, rows: torch.Tensor) -> Samples:
        return dataclasses.replace(
            self,
            users=self.users[rows],
            items=self.items[rows],
            labels={t: v[rows] for t, v in self.labels.items()},
            history_end=self.history_end[rows],
            scenario=None if self.scenario is None else self.scenario[rows],
            time=None if self.time is None else self.time[rows],
        )

    def inputs(self, max_history: int, rows: torch.Tensor | None = None, group_window: float | None = None) -> dict:
        """Model inputs: users, items [N]; history [N, max_history] (right-aligned, 0 = padding);
        scenario [N] when known; labels task -> [N]; request_time, history_time, history_event when
        the data has them, and the group inputs when `group_window` (seconds) is set (module docstring)."""
        part = self if rows is None else self.select(rows)
        index, valid = history_index(part.history, part.users, part.history_end, max_history)
        out = {
            "users": part.users,
            "items": part.items,
            "labels": part.labels,
            "history": take_history(part.history.values, index, valid),
        }
        if part.scenario is not None:
            out["scenario"] = part.scenario
        out.update(part._extra_inputs(index, valid))
        if group_window is not None:
            out.update(part._group_inputs(max_history, group_window))
        return out

    def _extra_inputs(self, index: torch.Tensor, valid: torch.Tensor) -> dict:
        """request_time [N], history_time / history_event [N, T] of the gathered events, when available."""
        out = {}
        now = self.time
        if self.time_scale is not None and now is not None and self.history_timestamps is not None:
            out["request_time"] = now.double() * self.time_scale
            age = (now.unsqueeze(1) - take_history(self.history_timestamps, index, valid)).clamp(min=0)
            out["history_time"] = (age.double() * self.time_scale).float().masked_fill(~valid, 0.0)
        if self.history_events is not None:
            out["history_event"] = take_history(self.history_events, index, valid)
        return out

    def _group_keys(self, window: float) -> tuple[torch.Tensor, torch.Tensor]:
        """([G, 2] distinct (user, window bucket), [N] group of each row)."""
        time = self.time if self.time is not None else torch.zeros_like(self.users)
        bucket = torch.floor(time.double() * (self.time_scale or 1.0) / window).long()
        return torch.unique(torch.stack([self.users, bucket], 1), dim=0, return_inverse=True)

    def group_rows(self, window: float) -> Jagged:
        """The rows of each (user, window) group: a Jagged with one row per group (the aggregated data loader
        samples whole groups)."""
        keys, group = self._group_keys(window)
        order = torch.sort(group, stable=True).indices
        return Jagged.from_sorted_keys(group[order], order, keys.shape[0])

    def _group_inputs(self, max_history: int, window: float) -> dict:
        """group [N], group_history [G, T], group_history_time / _event [G, T], group_offset [N]."""
        time = self.time if self.time is not None else torch.zeros_like(self.users)
        scale = self.time_scale or 1.0
        keys, group = self._group_keys(window)
        num_groups = keys.shape[0]
        last = torch.full((num_groups,), torch.iinfo(torch.long).min).scatter_reduce(0, group, time, "amax")
        end = torch.zeros(num_groups, dtype=torch.long).scatter_reduce(0, group, self.history_end, "amax")
        index, valid = history_index(self.history, keys[:, 0], end, max_history)
        out = {
            "group": group,
            "group_history": take_history(self.history.values, index, valid),
            "group_offset": ((last[group] - time).double() * scale).float(),
        }
        timestamps = self.history_timestamps
        age = (
            (last.unsqueeze(1) - take_history(timestamps, index, valid))
            if timestamps is not None
            else torch.arange(max_history, 0, -1).expand(valid.shape)
        )  # no timestamps: the age in steps
        out["group_history_time"] = (age.double() * scale).float().masked_fill(~valid, 0.0)
        if self.history_events is not None:
            out["group_history_event"] = take_history(self.history_events, index, valid)
        return out


def group_view(inputs: dict) -> dict:
    """The user-level group layout of flat model inputs (module docstring); without the group inputs every
    row is its own group. Returns group [N], slot [N] (the row's position among its group's rows), size
    (rows in the largest group), history [G, T], history_time [G, T] or None, history_event [G, T] or None,
    offset [N] (seconds from the row's request to its group's last one)."""
    if "group" in inputs:
        group, history, offset = inputs["group"], inputs["group_history"], inputs["group_offset"]
        time, event = inputs.get("group_history_time"), inputs.get("group_history_event")
    else:
        history = inputs["history"]
        group = torch.arange(history.shape[0], device=history.device)
        time, event = inputs.get("history_time"), inputs.get("history_event")
        offset = torch.zeros(group.shape, device=history.device)
    n = group.numel()
    counts = torch.bincount(group, minlength=history.shape[0])
    order = torch.sort(group, stable=True).indices
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(group)
    slot[order] = torch.arange(n, device=group.device) - starts[group[order]]
    return {
        "group": group,
        "slot": slot,
        "size": int(counts.max()) if n else 0,
        "history": history,
        "history_time": time,
        "history_event": event,
        "offset": offset.float(),
    }


def history_index(
    history: Jagged, users: torch.Tensor, ends: torch.Tensor, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, max_len] positions in history.values of the last max_len events before each end, right-aligned;
    [N, max_len] bool valid). Gather any per-event array with `take_history`."""
    index = ends.unsqueeze(1) - max_len + torch.arange(max_len)
    valid = index >= history.offsets[users].unsqueeze(1)
    return index.clamp(min=0), valid


def take_history(values: torch.Tensor, index: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """values [E] per event -> [N, T] at `index`, 0 where not valid (int64 for integer values)."""
    if values.numel() == 0:
        return torch.zeros(index.shape, dtype=torch.long if not values.is_floating_point() else values.dtype)
    out = values[index]
    out = out.long() if not out.is_floating_point() else out
    return out.masked_fill(~valid, 0)


def gather_history(history: Jagged, users: torch.Tensor, ends: torch.Tensor, max_len: int) -> torch.Tensor:
    """[N, max_len] the last max_len events before each end, right-aligned, 0-padded."""
    index, valid = history_index(history, users, ends, max_len)
    return take_history(history.values, index, valid)


def resolve_event_labels(dataset: Dataset, labels: dict[str, np.ndarray], chosen: list[str] | None) -> list[str]:
    """Funnel order of the history_event codes: `chosen`, or the label columns whose value varies (a
    constant label, such as the `view` added to positive-only logs, tells nothing), most frequent first."""
    if chosen is not None:
        unknown = [name for name in chosen if name not in labels]
        if unknown:
            raise ConfigError(
                f"samples.event_labels: {unknown[0]!r} is not a label of {dataset.name}; available: {', '.join(labels)}"
            )
        return list(chosen)
    rates = {name: float(np.mean(values == 1)) for name, values in labels.items() if len(values)}
    varying = [name for name, rate in rates.items() if 0.0 < rate < 1.0]
    return sorted(varying, key=lambda name: -rates[name])  # stable: ties keep the label order


def event_codes(labels: dict[str, np.ndarray], order: list[str], num_rows: int) -> torch.Tensor:
    """[rows] int64: 2 + index in `order` of the deepest positive label, 1 when none is positive."""
    codes = np.ones(num_rows, dtype=np.int64)
    for j, name in enumerate(order):  # a loop over the few labels; deeper ones overwrite
        codes = np.where(labels[name] == 1, 2 + j, codes)
    return torch.from_numpy(codes)


TIME_SCALES = {"unix_seconds": 1.0, "unix_ms": 1e-3}  # seconds per unit; "order" timestamps have no time inputs


def is_member(keys: torch.Tensor, sorted_set: torch.Tensor) -> torch.Tensor:
    """keys [...] in the sorted 1-D `sorted_set` (binary search; far cheaper than isin for small key sets)."""
    if sorted_set.numel() == 0:
        return torch.zeros(keys.shape, dtype=torch.bool)
    index = torch.searchsorted(sorted_set, keys).clamp(max=sorted_set.numel() - 1)
    return sorted_set[index] == keys


def _is_binary(column: pl.Series) -> bool:
    if not (column.dtype.is_numeric() or column.dtype == pl.Boolean) or column.null_count():
        return False
    values = column.cast(pl.Float64)
    return bool(((values == 0) | (values == 1)).all())


def resolve_labels(dataset: Dataset, config: SampleConfig) -> tuple[dict[str, np.ndarray], bool]:
    """Label arrays per available task (one value per interaction row) and whether the log is positive-only."""
    inter = dataset.interactions
    labels = {
        name: inter[name].to_numpy() for name in dataset.labels if name in inter.columns and _is_binary(inter[name])
    }
    positive_only = not labels or any(bool((v == 1).all()) for v in labels.values())
    if "like" not in labels and "rating" in inter.columns:
        labels["like"] = (inter["rating"].to_numpy() >= config.like_threshold).astype(np.int8)
    if positive_only and "view" not in labels:
        labels["view"] = np.ones(inter.height, dtype=np.int8)
    return labels, positive_only


class SampleBuilder:
    """Builds training and valid/test Samples of one dataset (see the module docstring)."""

    def __init__(self, dataset: Dataset, config: SampleConfig, tasks: list[str] | None = None) -> None:
        if dataset.interactions.height == 0:
            raise DataError(f"{dataset.name}: no interactions to build ranking samples from")
        self.dataset, self.config = dataset, config
        labels, self.positive_only = resolve_labels(dataset, config)
        self.tasks = list(tasks or config.tasks or labels)
        unknown = [t for t in self.tasks if t not in labels]
        if unknown:
            raise ConfigError(
                f"samples.tasks: {unknown[0]!r} is not a binary label of {dataset.name}; available: {', '.join(labels)}"
            )
        self.labels = {t: torch.from_numpy(labels[t].astype(np.float32)) for t in self.tasks}
        label = config.history_label
        if label == "auto":
            label = None if self.positive_only else next(iter(labels))
        if label is not None and label not in labels:
            raise ConfigError(
                f"samples.history_label: {label!r} is not a label of {dataset.name}; "
                f"available: {', '.join(labels)} (or null for every row)"
            )
        self.history_label = label
        self.event_labels = resolve_event_labels(dataset, labels, config.event_labels)
        self.events = event_codes(labels, self.event_labels, dataset.interactions.height) if self.event_labels else None
        self.time_scale = TIME_SCALES.get(dataset.meta.get("timestamp_kind", "unix_seconds"))
        inter = dataset.interactions
        self.users = inter["user"].to_numpy().astype(np.int64)
        self.items = torch.from_numpy(inter["item"].to_numpy().astype(np.int64))
        self.split = inter["split"].to_numpy()
        self.timestamps = torch.from_numpy(inter["timestamp"].to_numpy().astype(np.int64))
        _, time_rank = np.unique(inter["timestamp"].to_numpy(), return_inverse=True)
        self.event_keys = self.users * (int(time_rank.max()) + 2) + time_rank  # sorts like (user, time)
        self.history_mask = np.ones(inter.height, bool) if label is None else labels[label] == 1
        self.scenario = (
            torch.from_numpy(inter["scenario"].to_numpy().astype(np.int64)) + 1 if "scenario" in inter.columns else None
        )
        counts = dataset.item_popularity("train")
        counts = counts if float(counts.sum()) > 0 else torch.ones_like(counts)
        weights = counts.double() ** config.sampler_alpha
        weights[0] = 0.0
        self.negative_probs = (weights / weights.sum()).float()
        self.key_base = dataset.num_items + 1

    # ---- histories and sample sets ---------------------------------------------------------------
    def _history(self, allowed: np.ndarray) -> tuple[Jagged, np.ndarray, torch.Tensor]:
        """(history Jagged, sort keys of its events, their interaction rows)."""
        rows = np.flatnonzero(allowed & self.history_mask)
        return (
            Jagged.from_sorted_keys(self.users[rows], self.items[rows], self.dataset.num_users + 1),
            self.event_keys[rows],
            torch.from_numpy(rows),
        )

    def _samples(self, rows: np.ndarray, history: Jagged, ends: torch.Tensor, history_rows: torch.Tensor) -> Samples:
        index = torch.from_numpy(rows)
        return Samples(
            torch.from_numpy(self.users[rows]),
            self.items[index],
            {t: v[index] for t, v in self.labels.items()},
            history,
            ends,
            None if self.scenario is None else self.scenario[index],
            time=self.timestamps[index],
            history_timestamps=self.timestamps[history_rows],
            history_events=None if self.events is None else self.events[history_rows],
            time_scale=self.time_scale,
        )

    def train_samples(self) -> Samples:
        """Every train row (positives only, for positive-only logs: negatives come per batch)."""
        train = self.split == TRAIN
        history, keys, history_rows = self._history(train)
        rows = np.flatnonzero(train)
        ends = torch.from_numpy(np.searchsorted(keys, self.event_keys[rows], side="left").astype(np.int64))
        return self._samples(rows, history, ends, history_rows)

    def eval_samples(
        self, split: str, candidates: Candidates | None = None, users: torch.Tensor | None = None
    ) -> Samples:
        """Rows of `split` with history from earlier splits; for positive-only logs plus fixed negatives.
        candidates: retrieved items for `users` (default: users 1..num_users in order)."""
        code = SPLIT_CODES[split]
        history, _, history_rows = self._history(self.split < code)
        rows = np.flatnonzero(self.split == code)
        ends = history.offsets[torch.from_numpy(self.users[rows] + 1)]
        samples = self._samples(rows, history, ends, history_rows)
        n = self.config.negatives_per_positive if self.config.eval_negatives is None else self.config.eval_negatives
        if self.positive_only and n > 0 and len(samples):
            consumed = self.consumed_keys(np.ones(len(self.split), bool))  # never a held-out positive
            generator = torch.Generator().manual_seed(self.config.seed + 7919 * code)
            samples = self.with_negatives(
                samples, n, consumed, self.candidate_pool(candidates, users, consumed), generator
            )
        return samples

    # ---- negatives --------------------------------------------------------------------------------
    def consumed_keys(self, mask: np.ndarray) -> torch.Tensor:
        """Sorted distinct user * (num_items + 1) + item of the interaction rows where `mask` is True."""
        rows = np.flatnonzero(mask)
        keys = torch.from_numpy(self.users[rows]) * self.key_base + self.items[torch.from_numpy(rows)]
        return torch.unique(keys)

    def candidate_pool(
        self, candidates: Candidates | None, users: torch.Tensor | None, consumed: torch.Tensor
    ) -> torch.Tensor | None:
        """[num_users + 1, K] retrieved items per user id with consumed / unknown / empty slots set to 0."""
        if candidates is None or self.config.retrieved_share == 0:
            return None
        num_users = self.dataset.num_users
        users = torch.arange(1, num_users + 1) if users is None else torch.as_tensor(users, dtype=torch.long)
        if candidates.items.shape[0] != users.numel():
            raise DataError(
                f"candidates have {candidates.items.shape[0]} rows but {users.numel()} users were given "
                "(without `users`, rows must be users 1..num_users in order)"
            )
        pool = torch.zeros(num_users + 1, candidates.k, dtype=torch.long)
        pool[users.clamp(0, num_users)] = candidates.items.long()
        bad = (pool <= 0) | (pool > self.dataset.num_items)
        bad |= is_member(torch.arange(num_users + 1).unsqueeze(1) * self.key_base + pool, consumed)
        return pool.masked_fill(bad, 0)

    def draw_negatives(
        self,
        users: torch.Tensor,
        n: int,
        consumed: torch.Tensor,
        pool: torch.Tensor | None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """[M, n] negatives for users [M]: retrieved ones first (distinct per row), the rest sampled."""
        m = users.numel()
        out = torch.multinomial(self.negative_probs, m * n, replacement=True, generator=generator).view(m, n)
        n_retrieved = min(round(n * self.config.retrieved_share), pool.shape[1]) if pool is not None else 0
        if pool is not None and n_retrieved > 0 and m > 0:  # n_retrieved > 0 only with a pool
            cand = pool[users]
            keys = torch.rand(cand.shape, generator=generator).masked_fill(cand == 0, -1.0)
            top_keys, top = keys.topk(n_retrieved, dim=1)  # a random subset of the valid slots
            out[:, :n_retrieved] = torch.where(top_keys >= 0, cand.gather(1, top), out[:, :n_retrieved])
        for _ in range(5):  # redraw sampled items the user consumed; leftovers are rare and kept
            hit = is_member(users.unsqueeze(1) * self.key_base + out, consumed)
            if not bool(hit.any()):
                break
            out[hit] = torch.multinomial(self.negative_probs, int(hit.sum()), replacement=True, generator=generator)
        return out

    def with_negatives(
        self,
        samples: Samples,
        n: int,
        consumed: torch.Tensor,
        pool: torch.Tensor | None,
        generator: torch.Generator | None = None,
    ) -> Samples:
        """The samples followed by n negatives each (same user, history and context; every label 0)."""
        negatives = self.draw_negatives(samples.users, n, consumed, pool, generator).reshape(-1)
        repeat = lambda t: torch.cat([t, t.repeat_interleave(n)])  # noqa: E731
        labels = {t: torch.cat([v, v.new_zeros(negatives.numel())]) for t, v in samples.labels.items()}
        return dataclasses.replace(
            samples,
            users=repeat(samples.users),
            items=torch.cat([samples.items, negatives]),
            labels=labels,
            history_end=repeat(samples.history_end),
            scenario=None if samples.scenario is None else repeat(samples.scenario),
            time=None if samples.time is None else repeat(samples.time),
        )
