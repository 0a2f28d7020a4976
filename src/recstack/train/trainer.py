"""The one Trainer for every neural component.

Model contract: an nn.Module with `loss(batch) -> Tensor | dict[str, Tensor]` (a dict must hold
"loss"; its other entries are averaged and logged). Data contract: a `BatchSource` (or a dict of
equally long tensors). Evaluation: `evaluate(model) -> dict[str, float]`, run on rank 0 only.
AdamW, warm-up + cosine, gradient clipping, early stopping, checkpoints with exact resume, DDP under
torchrun. The best weights (by `config.monitor`) are in the model when `fit` returns.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from recstack.config import from_dict, to_dict
from recstack.errors import ConfigError, DataError
from recstack.progress import progress_bar
from recstack.train.batches import BatchSource, TensorBatchSource, move_to_device
from recstack.train.checkpoint import (
    BEST,
    LAST,
    find_checkpoint,
    read_checkpoint,
    read_json,
    read_weights,
    write_best,
    write_checkpoint,
)
from recstack.train.config import TrainConfig
from recstack.train.distributed import DistContext, LossForward, resolve_device
from recstack.train.schedule import WarmupCosine
from recstack.train.seeding import capture_rng_state, restore_rng_state, seed_everything

logger = logging.getLogger("recstack.train")

Evaluate = Callable[[nn.Module], dict[str, float]]
# Keys that may change between a run and its resumption without a warning.
_RESUME_FREE_KEYS = {"resume", "progress", "log_every", "checkpoint_dir"}


@dataclass
class TrainResult:
    """best_epoch is 0-based (None without `evaluate`); history has one dict per epoch:
    {"epoch", "train": {"loss", ...other loss entries}, "lr", "metrics" ({} when not evaluated), "seconds"}."""

    best_metrics: dict[str, float]
    best_epoch: int | None
    history: list[dict[str, Any]]
    stopped_early: bool


@dataclass
class _Best:
    value: float | None = None
    epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    bad_evals: int = 0
    weights: dict[str, torch.Tensor] | None = None

    def state(self) -> dict[str, Any]:
        return {"value": self.value, "epoch": self.epoch, "metrics": self.metrics, "bad_evals": self.bad_evals}


class Trainer:
    """`Trainer(model, config, train_data, evaluate=None, device="cpu").fit() -> TrainResult`.

    `config` may be a TrainConfig, a dict (validated like YAML) or None (defaults). `train_data` is a
    BatchSource or a dict of equally long tensors (then batched with config.batch_size / config.seed).
    Loss-dict entries other than "loss" must be scalars. `self.model` is the plain (unwrapped) model.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig | dict[str, Any] | None,
        train_data: BatchSource | dict[str, torch.Tensor],
        evaluate: Evaluate | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.config = config if isinstance(config, TrainConfig) else from_dict(TrainConfig, config, "train")
        if not callable(getattr(model, "loss", None)):
            raise ConfigError(f"{type(model).__name__} has no loss(batch) method; the Trainer needs one")
        if isinstance(train_data, dict):
            train_data = TensorBatchSource(train_data, self.config.batch_size, shuffle=True, seed=self.config.seed)
        if not isinstance(train_data, BatchSource):
            raise DataError(f"train_data must be a BatchSource or a dict of tensors, got {type(train_data).__name__}")
        self.dist = DistContext.from_env()
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.train_data = train_data
        self.evaluate = evaluate
        self.param_names, self.optimizer = self._build_optimizer()
        self.global_step = 0

    def _build_optimizer(self) -> tuple[list[str], torch.optim.AdamW]:
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not named:
            raise ConfigError(f"{type(self.model).__name__} has no trainable parameters")
        decay = [(n, p) for n, p in named if p.ndim >= 2]  # matrices/embeddings; not biases or norm scales
        no_decay = [(n, p) for n, p in named if p.ndim < 2]
        groups = [(g, wd) for g, wd in ((decay, self.config.weight_decay), (no_decay, 0.0)) if g]
        optimizer = torch.optim.AdamW(
            [{"params": [p for _, p in g], "weight_decay": wd} for g, wd in groups],
            lr=self.config.lr,
            betas=self.config.betas,
        )
        return [n for g, _ in groups for n, _ in g], optimizer

    # ---- the loop --------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        self.dist.setup(self.device)
        try:
            result = self._fit()
        except BaseException:
            self.dist.close(barrier=False)
            raise
        self.dist.close()
        return result

    def _fit(self) -> TrainResult:
        cfg, dist = self.config, self.dist
        seed_everything(cfg.seed + dist.rank)
        steps = [self._steps_in_epoch(e) for e in range(cfg.epochs)]
        schedule = WarmupCosine(cfg.lr, sum(steps), cfg.warmup_for(sum(steps)), cfg.min_lr_ratio)
        best = _Best()
        history: list[dict[str, Any]] = []
        start, stopped_early, finished = 0, False, False
        if cfg.resume:
            start, stopped_early, finished = self._resume(best, history)
        net = dist.wrap(LossForward(self.model), self.device, cfg.find_unused_parameters) if dist.enabled else None
        for epoch in range(start, 0 if finished else cfg.epochs):
            started = time.perf_counter()
            record = self._train_epoch(epoch, steps[epoch], schedule, net)
            due = (epoch + 1) % cfg.eval_every == 0 or epoch == cfg.epochs - 1
            if self.evaluate is not None and due:
                record["metrics"] = self._evaluate_on_main()
                self._update_best(best, record["metrics"], epoch)
            record["seconds"] = time.perf_counter() - started
            history.append(record)
            self._log_epoch(record)
            stopped_early = cfg.patience > 0 and best.bad_evals >= cfg.patience
            self._save_last(epoch, history, best, schedule, stopped_early or epoch == cfg.epochs - 1, stopped_early)
            if stopped_early:
                break
        if best.weights is not None:
            self.model.load_state_dict(best.weights)
        elif best.epoch is not None:
            warnings.warn(
                f"best weights of epoch {best.epoch} were not found; the model keeps the last weights", stacklevel=2
            )
        return TrainResult(best.metrics, best.epoch, history, stopped_early)

    def _steps_in_epoch(self, epoch: int) -> int:
        n = self.train_data.num_batches(epoch, self.dist.rank, self.dist.world_size)
        if not self.dist.all_equal(n, self._collective_device()):
            raise DataError(
                f"train_data gives ranks different numbers of batches in epoch {epoch}; "
                "DDP needs the same count on every rank"
            )
        if n <= 0:
            raise DataError(f"train_data has no batches in epoch {epoch}")
        return min(n, self.config.max_steps_per_epoch or n)

    def _train_epoch(self, epoch: int, steps: int, schedule: WarmupCosine, net: nn.Module | None) -> dict[str, Any]:
        cfg, model = self.config, self.model
        model.train()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if cfg.mixed_precision and self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        batches = iter(self.train_data.batches(epoch, self.dist.rank, self.dist.world_size))
        bar = progress_bar(
            total=steps,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            dynamic_ncols=True,
            disable=not (cfg.progress and self.dist.is_main),
        )
        sums: dict[str, torch.Tensor] = {}
        lr = cfg.lr
        for step in range(steps):
            batch = next(batches, None)
            if batch is None:
                raise DataError(f"train_data yielded {step} batches in epoch {epoch} but num_batches said {steps}")
            lr = schedule.apply(self.optimizer, self.global_step)
            with autocast:
                batch = move_to_device(batch, self.device)
                output = net(batch) if net is not None else cast(Callable[[Any], Any], model.loss)(batch)
                losses = _loss_dict(output, self.device)
            self.optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            self.optimizer.step()
            self.global_step += 1
            for key, value in losses.items():
                sums[key] = sums[key] + value.detach().float() if key in sums else value.detach().float()
            bar.update(1)
            if not bar.disable and (step + 1) % cfg.log_every == 0:
                bar.set_postfix(loss=f"{float(sums['loss']) / (step + 1):.4f}", lr=f"{lr:.2e}")
        getattr(batches, "close", lambda: None)()
        means = self._mean_over_ranks(sums, steps)
        bar.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{lr:.2e}")
        bar.close()
        if not torch.isfinite(torch.tensor(means["loss"])):
            raise FloatingPointError(
                f"training loss became {means['loss']} in epoch {epoch} "
                f"(global step {self.global_step}); try a lower lr or grad_clip"
            )
        return {"epoch": epoch, "train": means, "lr": lr, "metrics": {}}

    def _mean_over_ranks(self, sums: dict[str, torch.Tensor], steps: int) -> dict[str, float]:
        keys = sorted(sums)
        total = torch.stack([sums[k] for k in keys]).to(self._collective_device())
        total = self.dist.all_reduce_sum(total) / (steps * self.dist.world_size)
        return dict(zip(keys, total.tolist()))

    def _collective_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    # ---- evaluation and best weights -------------------------------------------------------------
    def _evaluate_on_main(self) -> dict[str, float]:
        """Rank 0 evaluates; the metrics (or its error) are broadcast so every rank decides alike."""
        payload: tuple[str, Any] | None = None
        error: BaseException | None = None
        if self.dist.is_main:
            self.model.eval()
            try:
                with torch.no_grad():
                    payload = ("ok", {k: float(v) for k, v in self.evaluate(self.model).items()})  # type: ignore[misc]
            except Exception as exc:
                payload, error = ("error", f"{type(exc).__name__}: {exc}"), exc
            finally:
                self.model.train()
        status, value = self.dist.broadcast_object(payload)
        if status == "error":
            raise error if error is not None else RuntimeError(f"evaluate failed on rank 0: {value}")
        if self.config.monitor not in value:
            raise ConfigError(
                f"train.monitor {self.config.monitor!r} is not among the metrics evaluate returned: "
                f"{', '.join(sorted(value)) or '(none)'}"
            )
        return value

    def _update_best(self, best: _Best, metrics: dict[str, float], epoch: int) -> None:
        value = metrics[self.config.monitor]
        better = best.value is None or (value > best.value if self.config.mode == "max" else value < best.value)
        if not better:  # NaN never improves
            best.bad_evals += 1
            return
        best.value, best.epoch, best.metrics, best.bad_evals = value, epoch, dict(metrics), 0
        best.weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        # Written before last/, so a crash in between retrains this epoch and rewrites it identically.
        if self.config.checkpoint_dir and self.dist.is_main:
            write_best(Path(self.config.checkpoint_dir) / BEST, self.model, {"epoch": epoch, "metrics": best.metrics})

    # ---- checkpoints -----------------------------------------------------------------------------
    def _save_last(
        self,
        epoch: int,
        history: list[dict[str, Any]],
        best: _Best,
        schedule: WarmupCosine,
        finished: bool,
        stopped_early: bool,
    ) -> None:
        if not self.config.checkpoint_dir:
            return
        rng_by_rank = self.dist.gather_objects(capture_rng_state(self.device))
        if self.dist.is_main:
            assert rng_by_rank is not None  # gathered on the main rank
            state = {
                "epoch": epoch,
                "global_step": self.global_step,
                "finished": finished,
                "stopped_early": stopped_early,
                "schedule": schedule.state_dict(),
                "best": best.state(),
                "history": history,
                "config": to_dict(self.config),
                "world_size": self.dist.world_size,
            }
            write_checkpoint(Path(self.config.checkpoint_dir) / LAST, self.model, self.optimizer, state, rng_by_rank)

    def _resume(self, best: _Best, history: list[dict[str, Any]]) -> tuple[int, bool, bool]:
        """Load last/ (if any) into model, optimizer, RNG and bookkeeping; returns (start epoch, stopped, finished)."""
        root = Path(self.config.checkpoint_dir)  # type: ignore[arg-type]
        folder = find_checkpoint(root / LAST)
        if folder is None:
            logger.info("resume: no checkpoint in %s, starting from scratch", root)
            return 0, False, False
        state, rng = read_checkpoint(folder, self.model, self.optimizer, self.param_names, self.dist.rank)
        now = to_dict(self.config)
        changed = sorted(
            k for k, v in state.get("config", {}).items() if k not in _RESUME_FREE_KEYS and now.get(k) != v
        )
        if changed:
            warnings.warn(
                f"resuming {folder} with changed config keys {changed}; the result will differ "
                "from an uninterrupted run",
                stacklevel=2,
            )
        self.global_step = int(state["global_step"])
        history[:] = state["history"]
        saved = state["best"]
        best.value, best.epoch, best.metrics, best.bad_evals = (
            saved["value"],
            saved["epoch"],
            saved["metrics"],
            saved["bad_evals"],
        )
        best_folder = find_checkpoint(root / BEST)
        # A best/ newer than last/ (crash between the two writes) is ignored: that epoch is retrained.
        best_epoch_on_disk = read_json(best_folder / "state.json").get("epoch") if best_folder else None
        if best_folder is not None and best.epoch is not None and best_epoch_on_disk == best.epoch:
            best.weights, _ = read_weights(self.model, best_folder / "model.safetensors")
        if rng is not None:
            restore_rng_state(rng, self.device)
        else:
            warnings.warn(
                f"{folder} has no RNG state for rank {self.dist.rank}; reseeding (result will differ)", stacklevel=2
            )
            seed_everything(self.config.seed + self.dist.rank + 7919 * (int(state["epoch"]) + 1))
        logger.info("resumed from %s after epoch %d (step %d)", folder, state["epoch"], self.global_step)
        return int(state["epoch"]) + 1, bool(state["stopped_early"]), bool(state["finished"])

    def _log_epoch(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            metrics = " ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items())
            train = " ".join(f"{k}={v:.4f}" for k, v in record["train"].items())
            line = f"epoch {record['epoch'] + 1}/{self.config.epochs} {train} lr={record['lr']:.2e} {metrics}"
            logger.info("%s (%.1fs)", line, record["seconds"])
            if self.config.progress and metrics:
                tqdm.write(line)


def _loss_dict(output: Any, device: torch.device) -> dict[str, torch.Tensor]:
    if torch.is_tensor(output):
        return {"loss": output}
    if isinstance(output, dict):
        if "loss" not in output:
            raise ConfigError(f"model.loss(batch) returned a dict without a 'loss' entry (keys: {sorted(output)})")
        return {k: v if torch.is_tensor(v) else torch.tensor(float(v), device=device) for k, v in output.items()}
    raise ConfigError(f"model.loss(batch) must return a Tensor or a dict with 'loss', got {type(output).__name__}")
