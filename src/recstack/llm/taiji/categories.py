"""Category paths of items: the label space of Taiji's intent (METHODS.md §2.1, semantic reward).

An item's categories cell holds one or more paths, "Beauty > Makeup > Nails; Beauty > Gifts"
(amazon sources write them so). The item's path is its first path, split into levels.

Interpretations ([I], flags of CategoryConfig):
- `strip_common_root`: levels that every item shares (amazon-beauty's "Beauty") carry no information;
  they are dropped, so "first level" means the first level that distinguishes items.
- `max_levels`: paths are cut to this many levels (None = keep all).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import polars as pl

from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError

Path = tuple[str, ...]


@dataclass
class CategoryConfig:
    column: str = "categories"  # the items column with category paths
    level_separator: str = ">"
    path_separator: str = ";"
    strip_common_root: bool = True  # [I] drop the leading levels every item shares
    max_levels: int | None = None  # [I] cut paths to this many levels

    def __post_init__(self) -> None:
        if self.max_levels is not None and self.max_levels <= 0:
            raise ConfigError(f"categories.max_levels must be > 0 or null, got {self.max_levels!r}")


def split_path(text: str, level_separator: str = ">") -> Path:
    """ "A > B >C" -> ("A", "B", "C"); empty levels dropped."""
    return tuple(part.strip() for part in text.split(level_separator) if part.strip())


class CategoryPaths:
    """paths[i] = the category path of item i (paths[0] = () for padding); items without one get ()."""

    def __init__(self, paths: list[Path], root: Path = ()) -> None:
        self.paths, self.root = paths, root

    @staticmethod
    def from_dataset(dataset: Dataset, config: CategoryConfig | None = None) -> CategoryPaths:
        config = config or CategoryConfig()
        if config.column not in dataset.items.columns:
            raise DataError(
                f"dataset {dataset.name!r} has no items column {config.column!r} with category paths "
                f"(columns: {', '.join(dataset.items.columns)}); set categories.column"
            )
        cells = dataset.items.select(pl.col(config.column).cast(pl.String).fill_null(""))[config.column].to_list()
        firsts = [cell.split(config.path_separator)[0] for cell in cells]  # a loop over the catalogue, once
        paths: list[Path] = [()] + [split_path(text, config.level_separator) for text in firsts]
        root: Path = ()
        if config.strip_common_root:
            nonempty = [p for p in paths if p]
            while nonempty and all(len(p) > len(root) + 1 and p[len(root)] == nonempty[0][len(root)] for p in nonempty):
                root = root + (nonempty[0][len(root)],)
            paths = [p[len(root) :] for p in paths]
        if config.max_levels is not None:
            paths = [p[: config.max_levels] for p in paths]
        if not any(paths):
            raise DataError(f"dataset {dataset.name!r}: no item has a category path in column {config.column!r}")
        return CategoryPaths(paths, root)

    def __getitem__(self, item: int) -> Path:
        return self.paths[item]

    @property
    def num_items(self) -> int:
        return len(self.paths) - 1

    def first_levels(self) -> list[str]:
        """Distinct first levels, most frequent first."""
        counts = Counter(p[0] for p in self.paths if p)
        return [name for name, _ in counts.most_common()]

    def known_paths(self) -> list[Path]:
        """Distinct full paths, most frequent first."""
        counts = Counter(p for p in self.paths if p)
        return [path for path, _ in counts.most_common()]

    def normalise(self, path: Path) -> Path:
        """A predicted path with the common root dropped when the model wrote it (case-insensitive)."""
        lowered = tuple(level.lower() for level in path)
        root = tuple(level.lower() for level in self.root)
        if root and lowered[: len(root)] == root:
            return path[len(root) :]
        return path


def matched_levels(predicted: Path, target: Path) -> int:
    """Number of leading levels on which the two paths agree (case- and space-insensitive)."""
    count = 0
    for a, b in zip(predicted, target):
        if " ".join(a.lower().split()) != " ".join(b.lower().split()):
            break
        count += 1
    return count


def level_accuracy(predicted: Path, target: Path) -> dict[str, bool]:
    """{"first_level": first levels agree, "leaf": the whole path agrees} for one prediction."""
    matched = matched_levels(predicted, target)
    return {
        "first_level": bool(target) and matched >= 1,
        "leaf": bool(target) and matched == len(target) == len(predicted),
    }
