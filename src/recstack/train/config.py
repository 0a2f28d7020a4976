"""TrainConfig: every knob of the Trainer, with its default, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from recstack.errors import ConfigError


@dataclass
class TrainConfig:
    """Optimisation, schedule, early stopping and checkpointing for `Trainer`.

    epochs:              passes over the training data.
    batch_size:          rows per batch *per process* (used when `train_data` is a dict of tensors).
    lr, weight_decay, betas: AdamW; weight decay applies to matrices only (ndim >= 2), not to
                         biases or norm scales.
    warmup_steps:        linear warm-up length; 0 means use `warmup_ratio` of all optimiser steps.
    min_lr_ratio:        the cosine decay ends at `min_lr_ratio * lr` on the last step.
    grad_clip:           max global gradient L2 norm; 0 = no clipping.
    patience:            stop after this many evaluations without improvement; 0 = never stop early.
    monitor, mode:       the metric from `evaluate` that decides "best" and whether higher is better.
    eval_every:          evaluate every this many epochs (and always after the last epoch).
    seed:                seeds Python/NumPy/torch at the start of `fit` (plus the rank) and the
                         batch order when `train_data` is a dict of tensors.
    progress:            tqdm bar on rank 0.
    checkpoint_dir:      write `last/` after every epoch and `best/` on improvement; None = no files.
    resume:              continue from `checkpoint_dir/last` when it exists.
    max_steps_per_epoch: cap on optimiser steps per epoch (None = whole epoch).
    log_every:           refresh the progress bar's loss / lr every this many steps.
    mixed_precision:     bf16 autocast on CUDA; ignored on CPU (full precision there).
    find_unused_parameters: passed to DDP, for models whose loss leaves some parameters unused.
    """

    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    patience: int = 5
    monitor: str = "recall@10"
    mode: Literal["max", "min"] = "max"
    eval_every: int = 1
    seed: int = 42
    progress: bool = True
    checkpoint_dir: str | None = None
    resume: bool = False
    max_steps_per_epoch: int | None = None
    log_every: int = 50
    mixed_precision: bool = True
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # type: ignore[assignment]  # YAML gives a list
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "eval_every": self.eval_every,
            "log_every": self.log_every,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"train.{key} must be > 0, got {value!r}")
        non_negative = {
            "weight_decay": self.weight_decay,
            "warmup_steps": self.warmup_steps,
            "grad_clip": self.grad_clip,
            "patience": self.patience,
        }
        for key, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {value!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas must be two numbers in [0, 1), got {self.betas!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.mode not in ("max", "min"):
            raise ConfigError(f"train.mode must be 'max' or 'min', got {self.mode!r}")
        if self.max_steps_per_epoch is not None and self.max_steps_per_epoch <= 0:
            raise ConfigError(f"train.max_steps_per_epoch must be > 0 or null, got {self.max_steps_per_epoch!r}")
        if self.resume and not self.checkpoint_dir:
            raise ConfigError("train.resume is true but train.checkpoint_dir is not set")

    def warmup_for(self, total_steps: int) -> int:
        """Warm-up length in steps: `warmup_steps` if set, else `warmup_ratio` of `total_steps`."""
        return self.warmup_steps if self.warmup_steps > 0 else round(self.warmup_ratio * total_steps)
