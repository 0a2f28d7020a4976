"""Shared fixtures: every test gets its own RECSTACK_HOME and makes its own tiny data."""

from __future__ import annotations

import pytest
import torch

from recstack.data.prepare import PrepareConfig, prepare
from recstack.data.tables import RawTables
from tests.helpers import TEST_THREADS, make_raw


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests use tiny tensors: one intra-op thread avoids OpenMP spin-waits on a small, shared CPU
    (measured 10-30x faster here), and resets whatever a test (or FAISS) changed.
    $RECSTACK_TEST_THREADS overrides it (benchmarks/robustness.py runs the learning tests at 1 and 2)."""
    torch.set_num_threads(TEST_THREADS)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "recstack_home"
    monkeypatch.setenv("RECSTACK_HOME", str(home))
    return home


@pytest.fixture
def tiny_raw() -> RawTables:
    return make_raw()


@pytest.fixture
def tiny_dataset(tiny_raw):
    return prepare(tiny_raw, PrepareConfig())
