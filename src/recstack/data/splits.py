"""Split assignment over a prepared interaction table sorted by (user, timestamp, source order).

All functions take numpy arrays and return an Int8 split code per row (0 train, 1 valid, 2 test).
"""

from __future__ import annotations

import numpy as np

from recstack.data.dataset import TEST, TRAIN, VALID


def _position_from_end(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows grouped by user: (index counted from the user's last row, 0 = last; rows per user of each row)."""
    n = users.shape[0]
    boundaries = np.flatnonzero(np.diff(users)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [n]])
    counts = ends - starts
    per_row_end = np.repeat(ends, counts)
    return per_row_end - 1 - np.arange(n), np.repeat(counts, counts)


def leave_one_out(users: np.ndarray, min_train: int = 1) -> np.ndarray:
    """Last item of each user -> test, second-to-last -> valid (leave-one-out protocol).

    A user needs `min_train + 2` rows to get both; users with fewer keep everything in train (reported by prepare).
    """
    from_end, counts = _position_from_end(users)
    split = np.full(users.shape[0], TRAIN, dtype=np.int8)
    eligible = counts >= min_train + 2
    split[eligible & (from_end == 0)] = TEST
    split[eligible & (from_end == 1)] = VALID
    return split


def temporal(timestamps: np.ndarray, valid_fraction: float, test_fraction: float) -> np.ndarray:
    """Global time cut: the latest `test_fraction` of rows by time -> test, the next `valid_fraction` -> valid."""
    test_cut = np.quantile(timestamps, 1.0 - test_fraction) if test_fraction > 0 else np.inf
    valid_cut = np.quantile(timestamps, 1.0 - test_fraction - valid_fraction) if valid_fraction > 0 else test_cut
    split = np.full(timestamps.shape[0], TRAIN, dtype=np.int8)
    split[timestamps >= valid_cut] = VALID
    split[timestamps >= test_cut] = TEST
    return split


def random_user(
    users: np.ndarray, valid_fraction: float, test_fraction: float, holdout_fraction: float, seed: int
) -> np.ndarray:
    """Random-user holdout: a random share of users go to valid / test; for them the last
    `holdout_fraction` of their sequence (at least one row) is held out, the rest stays in train as history."""
    unique = np.unique(users)
    rng = np.random.default_rng(seed)
    draw = rng.random(unique.shape[0])
    user_split = np.full(unique.shape[0], TRAIN, dtype=np.int8)
    user_split[draw < test_fraction] = TEST
    user_split[(draw >= test_fraction) & (draw < test_fraction + valid_fraction)] = VALID
    row_user_split = user_split[np.searchsorted(unique, users)]
    from_end, counts = _position_from_end(users)
    held = from_end < np.maximum(1, np.floor(counts * holdout_fraction))
    return np.where(held, row_user_split, TRAIN).astype(np.int8)
