"""SASRec and HSTU retrievers: windows, losses, overfitting a deterministic sequence, retrieve, save/load."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from recstack.data.batch import UserBatch
from recstack.data.jagged import Jagged
from recstack.data.prepare import prepare
from recstack.data.tables import RawTables
from recstack.errors import ConfigError
from recstack.eval.evaluator import evaluate_retriever
from recstack.registry import build
from recstack.retrieval.base import Retriever
from recstack.retrieval.sequential import HSTU, SASRec, TrainingWindows
from recstack.retrieval.sequential.common import LengthBucketedBatchSource, SequentialModel, full_softmax_cross_entropy
from recstack.train import TrainConfig
from tests.helpers import check_at_least, seeded

NUM_ITEMS = 12


def successor_dataset(num_users: int = 36, length: int = 7, timestamp_kind: str = "order"):
    """Item i is always followed by item i + 1 (cyclic over NUM_ITEMS); user u starts at item u mod NUM_ITEMS."""
    users, items, times = [], [], []
    for u in range(num_users):
        for step in range(length):
            users.append(f"u{u:03d}")
            items.append(f"i{(u + step) % NUM_ITEMS:02d}")
            times.append(step * 3600 * (1 + u % 3) + 1_600_000_000)
    frame = pl.DataFrame({"user": users, "item": items, "timestamp": times})
    return prepare(RawTables("successor", frame, timestamp_kind=timestamp_kind))


def tiny_train(epochs: int = 40) -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        batch_size=12,
        lr=1e-2,
        weight_decay=0.0,
        warmup_ratio=0.0,
        min_lr_ratio=0.1,
        patience=0,
        eval_every=epochs,
        monitor="recall@10",
        progress=False,
        seed=seeded(),
    )


SMALL = {"dim": 16, "max_len": 8, "dropout": 0.0}


@pytest.fixture(scope="module")
def successor():
    return successor_dataset()


def test_training_windows_right_aligned_with_targets_shifted():
    seqs = Jagged.from_lists([[], [1, 2, 3, 4, 5], [6], [7, 8]])
    windows = TrainingWindows(seqs, None, max_len=3, stride=None)
    assert windows.num_rows == 2  # users with fewer than two items give no window
    batch = windows.collate(torch.tensor([0, 1]))
    assert batch["items"].tolist() == [[2, 3, 4], [0, 0, 7]]
    assert batch["targets"].tolist() == [[3, 4, 5], [0, 0, 8]]
    assert float(batch["target_count"]) == 4.0  # 2 windows x (3 + 1) / 2 targets on average
    strided = TrainingWindows(seqs, torch.arange(8) * 10, max_len=3, stride=3)
    batch = strided.collate(torch.arange(strided.num_rows))
    assert batch["targets"].tolist() == [[3, 4, 5], [0, 0, 2], [0, 0, 8]]  # every target exactly once
    assert batch["timestamps"].tolist() == [[10, 20, 30], [0, 0, 0], [0, 0, 60]]


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_fused_cross_entropy_matches_autograd(chunk):
    torch.manual_seed(0)
    states = torch.randn(7, 4, requires_grad=True)
    table = torch.randn(9, 4, requires_grad=True)
    targets = torch.randint(0, 9, (7,))
    fused = full_softmax_cross_entropy(states, table, targets, temperature=0.5, chunk=chunk)
    (2 * fused).backward()
    grads = states.grad.clone(), table.grad.clone()
    states.grad, table.grad = None, None
    reference = torch.nn.functional.cross_entropy(states @ table.T / 0.5, targets)
    (2 * reference).backward()
    assert torch.allclose(fused.detach(), reference.detach(), atol=1e-5)
    assert torch.allclose(grads[0], states.grad, atol=1e-5) and torch.allclose(grads[1], table.grad, atol=1e-5)
    low = full_softmax_cross_entropy(states.detach(), table.detach(), targets, 0.5, chunk, torch.bfloat16)
    assert abs(float(low) - float(reference.detach())) < 0.05 * float(reference.detach())


def test_length_bucketed_batches_cover_every_row_once_and_are_seeded():
    lengths = torch.randint(2, 30, (100,), generator=torch.Generator().manual_seed(0))
    source = LengthBucketedBatchSource(lengths, lambda rows: rows, batch_size=8, seed=3, group_batches=4)
    batches = list(source.batches(epoch=0, rank=0, world_size=1))
    assert len(batches) == source.num_batches(0, 0, 1) == 13
    assert sorted(torch.cat(batches).tolist()) == list(range(100))
    assert all(lengths[b].max() - lengths[b].min() <= lengths.max() - lengths.min() for b in batches)
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in batches[:-1]) / 12
    assert spread < 10  # within a group of 32 rows sorted by length, a batch of 8 spans few lengths
    again = list(source.batches(epoch=0, rank=0, world_size=1))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    assert not all(torch.equal(a, b) for a, b in zip(batches, source.batches(epoch=1, rank=0, world_size=1)))


@pytest.mark.parametrize("loss", ["ce", "sampled_softmax", "bce"])
@pytest.mark.parametrize("model", ["sasrec", "hstu"])
def test_losses_are_finite_and_reach_every_parameter_group(successor, model, loss):
    retriever = build(
        "retriever",
        {
            "name": model,
            **SMALL,
            "loss": loss,
            "num_negatives": 5,
            "negative_sampler": "popularity" if loss == "sampled_softmax" else "uniform",
        },
    )
    retriever._build(successor.num_items, False, successor.item_popularity("train"))
    windows = TrainingWindows(successor.sequences(before="valid"), None, 8, None)
    out = retriever.model.loss(windows.collate(torch.arange(6)))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert retriever.model.encoder.item_embedding.weight.grad.abs().sum() > 0


@pytest.mark.learns
@pytest.mark.parametrize("name", ["sasrec", "hstu"])
def test_overfits_successor_sequences(successor, name):
    # max_len 4: a test history (6 items, leave-one-out) is cut to its last 4 items, the same items and next
    # item as the training window of the users who start two items later (5 train items: 4 inputs -> 4 targets).
    # With max_len 8 a test input held 6 items, two more than any training input, so the oldest slots' position
    # embeddings (SASRec) or the longer position / time gaps (HSTU's relative bias) were never trained and up
    # to 6 of the 36 users missed at some seeds.
    retriever = build("retriever", {"name": name, **SMALL, "max_len": 4, "train": tiny_train().__dict__})
    retriever.fit(successor)
    test = evaluate_retriever(retriever, successor, "test", ks=(1, 10))
    check_at_least(test["recall@1"], 0.95, "test recall@1")
    assert retriever.result.best_epoch is not None and retriever.seconds["train_per_epoch"] > 0


@pytest.fixture(scope="module")
def fitted(successor):
    return build("retriever", {"name": "hstu", **SMALL, "train": tiny_train(epochs=3).__dict__}).fit(successor)


def test_retrieve_skips_padding_duplicates_and_history(successor, fitted):
    users, _ = successor.eval_users("test")
    batch = successor.user_batch(users, before="test")
    candidates = fitted.retrieve(batch, k=6)
    assert candidates.items.shape == (users.numel(), 6)
    assert (candidates.items > 0).all()
    for row, history in zip(candidates.items.tolist(), batch.history.tolist()):
        assert len(set(row)) == len(row)
        assert not set(row) & set(history)
    scores = fitted.score_all(batch)
    assert scores.shape == (users.numel(), successor.num_items + 1) and torch.isinf(scores[:, 0]).all()


def test_scores_do_not_depend_on_batch_composition(successor, fitted):
    histories = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10, 11, 12, 1, 2], [], [2, 3], [9, 10, 11, 12, 1, 2, 3]]
    batch = UserBatch(torch.arange(1, 7), Jagged.from_lists(histories))
    full = fitted.score_all(batch)
    assert torch.isfinite(full[:, 1:]).all()
    rows = torch.tensor([5, 0, 2])
    assert torch.allclose(fitted.score_all(batch.select(rows)), full[rows], atol=1e-5)
    assert torch.allclose(fitted.user_embeddings(batch, chunk=2), fitted.user_embeddings(batch), atol=1e-5)


def test_save_load_identical_scores(successor, fitted, tmp_path):
    fitted.save(tmp_path / "hstu")
    loaded = Retriever.load(tmp_path / "hstu")
    assert isinstance(loaded, HSTU) and loaded.config == fitted.config
    batch = successor.user_batch(torch.arange(1, 10), before="test")
    assert torch.equal(loaded.score_all(batch), fitted.score_all(batch))
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.pkl"))


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_faiss_serving_returns_the_exact_top_k(successor, fitted, kind):
    """serving: faiss over the item table: the same items and scores as exact scoring (flat is exact; HNSW
    on a dozen items explores the whole graph), history still left out."""
    users, _ = successor.eval_users("test")
    batch = successor.user_batch(users, before="test")
    exact = fitted.retrieve(batch, k=5)
    fitted.config.serving, fitted.config.ann.kind, fitted.ann = "faiss", kind, None
    try:
        served = fitted.retrieve(batch, k=5)
    finally:
        fitted.config.serving, fitted.ann = "exact", None
    assert torch.equal(served.items, exact.items)
    assert torch.allclose(served.scores, exact.scores, atol=1e-4)


def test_hstu_time_bias_follows_timestamp_kind(tmp_path):
    timed = successor_dataset(num_users=12, timestamp_kind="unix_seconds")
    ordered = successor_dataset(num_users=12, timestamp_kind="order")
    hstu = HSTU(HSTU().config.__class__(**SMALL))
    assert hstu.wants_time(timed) and not hstu.wants_time(ordered)
    hstu.config.train = tiny_train(epochs=1)
    hstu.fit(timed)
    assert hstu.use_time and hstu.model.encoder.relative_bias.time is not None
    batch = timed.user_batch(torch.arange(1, 5), before="test")
    earlier = timed.user_batch(torch.arange(1, 5), before="test")
    earlier.history_features["timestamp"] = earlier.history_features["timestamp"] * 0 + 1_600_000_000
    assert not torch.allclose(hstu.score_all(batch), hstu.score_all(earlier))
    hstu.save(tmp_path / "timed")
    assert torch.equal(Retriever.load(tmp_path / "timed").score_all(batch), hstu.score_all(batch))


def test_refit_on_train_and_valid_runs_all_epochs_without_evaluating(successor):
    refit = build(
        "retriever", {"name": "sasrec", **SMALL, "train_on": "train+valid", "train": tiny_train(epochs=2).__dict__}
    ).fit(successor)
    assert refit.result.best_epoch is None and len(refit.result.history) == 2
    assert all(record["metrics"] == {} for record in refit.result.history)


def test_sasrec_flags_build_and_config_errors(successor):
    post = SASRec(SASRec().config.__class__(**SMALL, norm_first=False, position_from="start", activation="relu"))
    post._build(successor.num_items, False)
    assert isinstance(post.model, SequentialModel)
    with pytest.raises(ConfigError, match="divisible"):
        build("retriever", {"name": "sasrec", "dim": 10, "heads": 3})
    with pytest.raises(ConfigError, match="loss"):
        build("retriever", {"name": "hstu", "loss": "hinge"})
