"""Ranking features: (user, history, candidate item, side tables, context) -> embedding fields.

Fields, each `FeatureConfig.dim` wide:
  item:    item id + one field per categorical column of `dataset.items` + one field for its
           standardised numeric columns. The same item vector serves the candidate and every
           history item (so target attention compares like with like).
  user:    user id (optional) + categorical columns of `dataset.users` + numeric columns.
  context: the request scenario, when the interactions have one.
Categorical columns are string / list-of-string / integer columns with at most `max_feature_ratio`
distinct values per row (ids and free text are skipped); multi-valued cells ('|' or ',' separated,
or lists) are mean-pooled bags. Text fields count only when `categorical_text_fields` is set and they
pass the same test (MovieLens "genres" does, titles do not). Vocabularies are built at fit time;
unknown ids map to 0 (a zero embedding). The token tables and numeric tables are buffers, saved
with the weights; the schema (columns, vocabularies, statistics) is JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl
import torch
from torch import nn

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError
from recstack.nn.categorical import TokenTable, categorical_tokens, is_categorical
from recstack.nn.embedding import CategoricalFields, NumericTable, apply_unique, id_embedding


@dataclass
class FeatureConfig:
    dim: int = 16
    user_id: bool = True  # a user id field (memorises per-user bias; off for cold-start studies)
    item_columns: list[str] | None = None  # None = auto-detect categorical and numeric columns; [] = none
    user_columns: list[str] | None = None
    categorical_text_fields: bool = True  # low-cardinality text fields (MovieLens genres) become categorical
    max_feature_ratio: float = 0.5
    separator: str = r"\s*[|,]\s*"
    numeric: bool = True  # float columns (price, quality) as one standardised field
    scenario: bool = True

    def __post_init__(self) -> None:
        if self.dim <= 0:
            raise ConfigError(f"features.dim must be > 0, got {self.dim!r}")


@dataclass
class FeatureSchema:
    """Everything needed to rebuild the encoder's shapes, as JSON. vocab: per column, its tokens."""

    num_users: int
    num_items: int
    item_columns: list[str] = field(default_factory=list)
    item_vocab: list[list[str]] = field(default_factory=list)
    item_tokens: list[int] = field(default_factory=list)
    item_numeric: list[str] = field(default_factory=list)
    item_numeric_stats: list[list[float]] = field(default_factory=list)  # [mean, std] per column
    user_columns: list[str] = field(default_factory=list)
    user_vocab: list[list[str]] = field(default_factory=list)
    user_tokens: list[int] = field(default_factory=list)
    user_numeric: list[str] = field(default_factory=list)
    user_numeric_stats: list[list[float]] = field(default_factory=list)
    scenario_names: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(data: dict) -> FeatureSchema:
        return FeatureSchema(**data)


@dataclass
class FeatureTables:
    """Fit-time contents of the encoder's buffers."""

    item_tokens: list[TokenTable]
    user_tokens: list[TokenTable]
    item_numeric: torch.Tensor | None
    user_numeric: torch.Tensor | None


def _side_columns(
    frame: pl.DataFrame, key: str, chosen: list[str] | None, text_fields: list[str], config: FeatureConfig
) -> tuple[list[str], list[str]]:
    """(categorical, numeric) columns of a side table."""
    candidates = [c for c in frame.columns if c not in (key, "raw_id")] if chosen is None else list(chosen)
    missing = [c for c in candidates if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"feature column {missing[0]!r} is not in the {key}s table (columns: {', '.join(frame.columns)})"
        )
    categorical, numeric = [], []
    for column in candidates:  # a loop over columns, not rows
        if column in text_fields and not config.categorical_text_fields and chosen is None:
            continue
        if is_categorical(frame, column, config.max_feature_ratio):
            categorical.append(column)
        elif config.numeric and frame.schema[column].is_numeric() and column not in text_fields:
            numeric.append(column)
        elif chosen is not None:
            raise ConfigError(
                f"feature column {column!r} of the {key}s table is neither categorical (at most "
                f"{config.max_feature_ratio} distinct values per row) nor numeric"
            )
    return categorical, numeric


def _numeric_table(
    frame: pl.DataFrame, key: str, num_rows: int, columns: list[str], stats: list[list[float]] | None
) -> tuple[torch.Tensor, list[list[float]]]:
    """[num_rows, F] standardised values (row 0 and missing = 0) and the [mean, std] used."""
    values = frame.select([pl.col(c).cast(pl.Float64) for c in columns]).to_numpy()
    if stats is None:
        mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
        stats = [[float(m), float(s) if s > 0 else 1.0] for m, s in zip(np.nan_to_num(mean), np.nan_to_num(std))]
    scaled = np.nan_to_num((values - np.array([s[0] for s in stats])) / np.array([s[1] for s in stats]))
    table = torch.zeros(num_rows, len(columns))
    table[torch.from_numpy(frame[key].to_numpy().astype(np.int64))] = torch.from_numpy(scaled).float()
    return table, stats


def build_schema(dataset: Dataset, config: FeatureConfig) -> tuple[FeatureSchema, FeatureTables]:
    schema = FeatureSchema(dataset.num_users, dataset.num_items)
    tables = FeatureTables([], [], None, None)
    for side, frame, chosen, text in (
        ("item", dataset.items, config.item_columns, dataset.text_fields),
        ("user", dataset.users, config.user_columns, []),
    ):
        num_rows = frame.height + 1
        categorical, numeric = _side_columns(frame, side, chosen, text, config)
        token_tables = [categorical_tokens(frame, side, num_rows, [c], config.separator) for c in categorical]
        kept = [(c, t) for c, t in zip(categorical, token_tables) if t.vocab]
        setattr(schema, f"{side}_columns", [c for c, _ in kept])
        setattr(schema, f"{side}_vocab", [t.vocab for _, t in kept])
        setattr(schema, f"{side}_tokens", [int(t.weights.numel()) for _, t in kept])
        setattr(tables, f"{side}_tokens", [t for _, t in kept])
        if numeric:
            table, stats = _numeric_table(frame, side, num_rows, numeric, None)
            setattr(schema, f"{side}_numeric", numeric)
            setattr(schema, f"{side}_numeric_stats", stats)
            setattr(tables, f"{side}_numeric", table)
    if config.scenario and "scenario" in dataset.interactions.columns:
        schema.scenario_names = [str(s) for s in dataset.meta.get("scenario_names", [])]
    return schema, tables


class FeatureEncoder(nn.Module):
    """Embeds ids into fields. item_vectors: [...] -> [..., item_dim]; user_vectors: [N] -> [N, user_dim]."""

    def __init__(self, schema: FeatureSchema, config: FeatureConfig) -> None:
        super().__init__()
        d, self.num_users, self.num_items = config.dim, schema.num_users, schema.num_items
        self.item_id = id_embedding(schema.num_items + 1, d)
        self.item_categorical = CategoricalFields(
            [(len(v), t) for v, t in zip(schema.item_vocab, schema.item_tokens)], schema.num_items + 1, d
        )
        self.item_numeric = (
            NumericTable(schema.num_items + 1, len(schema.item_numeric), d) if schema.item_numeric else None
        )
        self.user_id = id_embedding(schema.num_users + 1, d) if config.user_id else None
        self.user_categorical = CategoricalFields(
            [(len(v), t) for v, t in zip(schema.user_vocab, schema.user_tokens)], schema.num_users + 1, d
        )
        self.user_numeric = (
            NumericTable(schema.num_users + 1, len(schema.user_numeric), d) if schema.user_numeric else None
        )
        self.scenario = id_embedding(len(schema.scenario_names) + 1, d) if schema.scenario_names else None
        self.item_dim = d * (1 + len(self.item_categorical) + (self.item_numeric is not None))
        self.user_dim = d * (
            (self.user_id is not None)
            + len(self.user_categorical)
            + (self.user_numeric is not None)
            + (self.scenario is not None)
        )

    def set_tables(self, tables: FeatureTables) -> FeatureEncoder:
        self.item_categorical.set_tables(tables.item_tokens)
        self.user_categorical.set_tables(tables.user_tokens)
        for module, values in ((self.item_numeric, tables.item_numeric), (self.user_numeric, tables.user_numeric)):
            if module is not None:
                assert values is not None  # the module exists only for a numeric table
                module.values.copy_(values)
        return self

    def _item_rows(self, items: torch.Tensor) -> torch.Tensor:
        """items [M] (distinct) -> [M, item_dim]."""
        parts = [self.item_id(items)]
        if len(self.item_categorical):
            parts.append(self.item_categorical(items).flatten(-2))
        if self.item_numeric is not None:
            parts.append(self.item_numeric(items))
        return torch.cat(parts, -1)

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        items = items.masked_fill((items > self.num_items) | (items < 0), 0)  # unknown -> padding row
        return apply_unique(self._item_rows, items, self.num_items + 1)

    def user_vectors(self, users: torch.Tensor, scenario: torch.Tensor | None = None) -> torch.Tensor:
        """users [N] (0 = unknown); scenario [N] codes + 1 (0 = unknown) -> [N, user_dim] (may be 0 wide)."""
        users = users.masked_fill((users > self.num_users) | (users < 0), 0)
        parts = [users.new_zeros(users.shape[0], 0, dtype=self.item_id.weight.dtype)]
        if self.user_id is not None:
            parts.append(self.user_id(users))
        if len(self.user_categorical):
            parts.append(self.user_categorical(users).flatten(-2))
        if self.user_numeric is not None:
            parts.append(self.user_numeric(users))
        if self.scenario is not None:
            codes = torch.zeros_like(users) if scenario is None else scenario.clamp(0, self.scenario.num_embeddings - 1)
            parts.append(self.scenario(codes))
        return torch.cat(parts, -1)
