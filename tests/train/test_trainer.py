"""Trainer, schedule, checkpoints and batch sources on tiny CPU problems (each test < 1 s)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from torch import nn

import recstack.train.checkpoint as checkpoint
from recstack.config import from_dict
from recstack.errors import ConfigError, DataError
from recstack.train import (
    CallableBatchSource,
    TensorBatchSource,
    TrainConfig,
    Trainer,
    WarmupCosine,
    atomic_dir,
    load_weights,
    save_weights,
    seed_everything,
)
from tests.helpers import check_at_most, seeded

TRUE_W = torch.tensor([1.0, -2.0, 3.0, 0.5])


class Regressor(nn.Module):
    """Learnable toy problem; dropout makes the RNG matter for determinism and resume."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, 16)
        self.out = nn.Linear(16, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.relu(self.hidden(x)))).squeeze(-1)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mse = ((self(batch["x"]) - batch["y"]) ** 2).mean()
        reg = 1e-4 * self.out.weight.pow(2).sum()
        return {"loss": mse + reg, "mse": mse, "reg": reg}


def toy_data(n: int = 128, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return {"x": x, "y": x @ TRUE_W}


def neg_mse(data: dict[str, torch.Tensor]):
    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"neg_mse": -float(((model(data["x"]) - data["y"]) ** 2).mean())}

    return evaluate


def config(**overrides) -> TrainConfig:
    base = dict(
        epochs=4, batch_size=32, lr=0.02, progress=False, monitor="neg_mse", patience=0, warmup_steps=2, seed=seeded(42)
    )
    return TrainConfig(**{**base, **overrides})


def make_trainer(cfg: TrainConfig, dropout: float = 0.0, data=None, evaluate=None) -> Trainer:
    seed_everything(seeded())
    return Trainer(Regressor(dropout), cfg, data if data is not None else toy_data(seed=seeded()), evaluate=evaluate)


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---- config and schedule -------------------------------------------------------------------------
def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match="mode"):
        from_dict(TrainConfig, {"mode": "best"})
    with pytest.raises(ConfigError, match="epoch"):
        from_dict(TrainConfig, {"epoch": 3})
    assert from_dict(TrainConfig, {"betas": [0.9, 0.98]}).betas == (0.9, 0.98)


def test_warmup_cosine_values():
    s = WarmupCosine(base_lr=1.0, total_steps=11, warmup_steps=2, min_lr_ratio=0.1)
    assert s.lr(0) == pytest.approx(0.5) and s.lr(1) == pytest.approx(1.0) and s.lr(2) == pytest.approx(1.0)
    assert s.lr(6) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the 8 decay steps
    assert s.lr(4) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert s.lr(10) == pytest.approx(0.1) and s.lr(50) == pytest.approx(0.1)


def test_trainer_follows_schedule():
    trainer = make_trainer(config(epochs=2, lr=0.1, warmup_steps=0, warmup_ratio=0.25, min_lr_ratio=0.0))
    seen: list[float] = []
    trainer.optimizer.register_step_pre_hook(lambda opt, *_: seen.append(opt.param_groups[0]["lr"]))
    trainer.fit()
    expected = WarmupCosine(0.1, total_steps=8, warmup_steps=2, min_lr_ratio=0.0)  # 128 rows / 32 * 2 epochs
    assert seen == pytest.approx([expected.lr(s) for s in range(8)])
    assert seen[-1] == pytest.approx(0.0)


# ---- the loop ------------------------------------------------------------------------------------
@pytest.mark.learns
def test_loss_decreases_and_dict_entries_are_logged():
    result = make_trainer(config(epochs=6, lr=0.05, grad_clip=0)).fit()
    first, last = result.history[0]["train"], result.history[-1]["train"]
    assert set(first) == {"loss", "mse", "reg"}
    check_at_most(last["loss"] / first["loss"], 0.3, "last / first epoch loss")
    assert result.best_epoch is None and result.best_metrics == {} and not result.stopped_early
    assert all(h["seconds"] > 0 and h["lr"] > 0 for h in result.history)


@pytest.mark.parametrize("clip", [0.0, 0.05])
def test_grad_clip_bounds_the_norm(clip):
    data = toy_data()
    data["y"] = data["y"] * 1000  # huge gradients
    trainer = make_trainer(config(epochs=1, grad_clip=clip), data=data)
    norms: list[float] = []
    params_ = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    trainer.optimizer.register_step_pre_hook(
        lambda *_: norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params_]))))
    )
    trainer.fit()
    if clip:
        assert max(norms) <= clip * (1 + 1e-5)
    else:
        assert min(norms) > 1.0


def test_early_stopping_restores_best_weights():
    scores = iter([0.1, 0.5, 0.4, 0.3, 0.9])
    snapshots: list[dict[str, torch.Tensor]] = []

    def evaluate(model):
        snapshots.append(params(model))
        return {"ndcg@10": next(scores)}

    trainer = make_trainer(config(epochs=10, patience=2, monitor="ndcg@10"), evaluate=evaluate)
    result = trainer.fit()
    assert result.stopped_early and len(result.history) == 4
    assert result.best_epoch == 1 and result.best_metrics == {"ndcg@10": 0.5}
    assert [h["metrics"]["ndcg@10"] for h in result.history] == [0.1, 0.5, 0.4, 0.3]
    assert_same(params(trainer.model), snapshots[1])


def test_eval_every_and_missing_monitor():
    calls = []
    result = make_trainer(
        config(epochs=5, eval_every=2), evaluate=lambda m: calls.append(1) or {"neg_mse": float(len(calls))}
    ).fit()
    assert [bool(h["metrics"]) for h in result.history] == [False, True, False, True, True]  # + the last epoch
    with pytest.raises(ConfigError, match="recall@10"):
        make_trainer(config(monitor="recall@10"), evaluate=lambda m: {"ndcg@10": 1.0}).fit()


def test_same_seed_same_weights_and_model_without_loss():
    a = make_trainer(config(), dropout=0.3)
    a.fit()
    b = make_trainer(config(), dropout=0.3)
    b.fit()
    assert_same(params(a.model), params(b.model))
    with pytest.raises(ConfigError, match="loss"):
        Trainer(nn.Linear(2, 2), config(), toy_data())


# ---- checkpoints and resume ----------------------------------------------------------------------
class Preempted(Exception):
    pass


class PreemptedSource(TensorBatchSource):
    """Dies at the start of epoch `at`, like a killed job."""

    def __init__(self, tensors, at: int) -> None:
        super().__init__(tensors, batch_size=32, seed=42)
        self.at = at

    def batches(self, epoch, rank, world_size):
        if epoch == self.at:
            raise Preempted
        return super().batches(epoch, rank, world_size)


def test_resume_reaches_the_same_weights(tmp_path):
    data, val = toy_data(), toy_data(64, seed=1)
    straight = make_trainer(config(checkpoint_dir=str(tmp_path / "a")), dropout=0.2, evaluate=neg_mse(val))
    expected = straight.fit()

    cfg = config(checkpoint_dir=str(tmp_path / "b"))
    with pytest.raises(Preempted):
        make_trainer(cfg, dropout=0.2, data=PreemptedSource(data, at=2), evaluate=neg_mse(val)).fit()
    assert json.loads((tmp_path / "b/last/state.json").read_text())["epoch"] == 1
    resumed = make_trainer(config(checkpoint_dir=str(tmp_path / "b"), resume=True), dropout=0.2, evaluate=neg_mse(val))
    result = resumed.fit()
    assert_same(params(resumed.model), params(straight.model))
    assert result.best_epoch == expected.best_epoch and len(result.history) == 4
    assert [h["train"] for h in result.history] == [h["train"] for h in expected.history]

    again = make_trainer(config(checkpoint_dir=str(tmp_path / "b"), resume=True), dropout=0.2, evaluate=neg_mse(val))
    assert len(again.fit().history) == 4  # a finished run is not retrained
    assert_same(params(again.model), params(straight.model))


def test_checkpoint_layout(tmp_path):
    make_trainer(config(epochs=2, checkpoint_dir=str(tmp_path)), evaluate=neg_mse(toy_data(32, 1))).fit()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "last"]  # no temp folders left
    last = tmp_path / "last"
    assert sorted(p.name for p in last.iterdir()) == [
        "model.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
        "state.json",
    ]
    with safe_open(str(last / "optimizer.safetensors"), "pt") as f:
        assert {"state.0.exp_avg", "state.0.exp_avg_sq", "state.0.step"} <= set(f.keys())
    with safe_open(str(last / "rng.safetensors"), "pt") as f:
        assert f.get_tensor("rank0.torch_cpu").dtype == torch.uint8
    state = json.loads((last / "state.json").read_text())
    assert state["epoch"] == 1 and state["global_step"] == 8 and state["config"]["lr"] == 0.02
    assert (tmp_path / "best/model.safetensors").is_file()


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    real = checkpoint.write_json

    def failing(path, data):
        if path.name == "state.json" and data.get("epoch") == 1:
            raise OSError("disk full")
        real(path, data)

    monkeypatch.setattr(checkpoint, "write_json", failing)
    with pytest.raises(OSError, match="disk full"):
        make_trainer(config(epochs=3, checkpoint_dir=str(tmp_path))).fit()
    assert [p.name for p in tmp_path.iterdir()] == ["last"]
    assert json.loads((tmp_path / "last/state.json").read_text())["epoch"] == 0
    load_weights(Regressor(), tmp_path / "last/model.safetensors")

    target = tmp_path / "folder"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("new")
        raise RuntimeError("crash")
    assert (target / "a.txt").read_text() == "old" and not list(tmp_path.glob(".folder*"))


def test_resume_with_another_model_names_the_parameter(tmp_path):
    make_trainer(config(epochs=1, checkpoint_dir=str(tmp_path))).fit()

    class Wider(Regressor):
        def __init__(self):
            super().__init__()
            self.hidden, self.out = nn.Linear(4, 8), nn.Linear(8, 1)

    trainer = Trainer(Wider(), config(checkpoint_dir=str(tmp_path), resume=True), toy_data())
    with pytest.raises(DataError, match="hidden"):
        trainer.fit()


# ---- weights -------------------------------------------------------------------------------------
class Tied(nn.Module):
    def __init__(self, n: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(n, 3)
        self.head = nn.Linear(3, n, bias=False)
        self.head.weight = self.embed.weight


def test_save_load_weights_tied_and_mismatch(tmp_path):
    a, b = Tied(), Tied()
    save_weights(a, tmp_path / "w.safetensors", metadata={"kind": "tied"})
    assert load_weights(b, tmp_path / "w.safetensors") == {"kind": "tied"}
    assert torch.equal(a.embed.weight, b.embed.weight) and b.head.weight is b.embed.weight
    with pytest.raises(DataError, match="embed.weight"):
        load_weights(Tied(6), tmp_path / "w.safetensors")
    with pytest.raises(DataError, match="in the file but not in the model"):
        load_weights(nn.Linear(3, 5, bias=False), tmp_path / "w.safetensors")
    with pytest.raises(DataError, match="not found"):
        load_weights(a, tmp_path / "missing.safetensors")


# ---- batch sources -------------------------------------------------------------------------------
def test_tensor_batch_source_shards_and_order():
    source = TensorBatchSource({"i": torch.arange(20)}, batch_size=3, seed=7)
    rows = [torch.cat([b["i"] for b in source.batches(0, r, 2)]) for r in range(2)]
    assert source.num_batches(0, 0, 2) == 4 and [len(r) for r in rows] == [10, 10]
    assert sorted(torch.cat(rows).tolist()) == list(range(20))  # disjoint, complete
    again = torch.cat([b["i"] for b in source.batches(0, 0, 2)])
    assert torch.equal(rows[0], again)
    assert not torch.equal(
        torch.cat([b["i"] for b in source.batches(1, 0, 1)]), torch.cat([b["i"] for b in source.batches(0, 0, 1)])
    )
    uneven = CallableBatchSource(5, lambda r: r, batch_size=2, shuffle=False)
    assert [len(torch.cat(list(uneven.batches(0, r, 2)))) for r in range(2)] == [3, 3]
    assert CallableBatchSource(5, lambda r: r, 2, drop_last=True).num_batches(0, 0, 2) == 1
    with pytest.raises(DataError, match="'y'"):
        TensorBatchSource({"x": torch.zeros(3), "y": torch.zeros(4)}, batch_size=2)
