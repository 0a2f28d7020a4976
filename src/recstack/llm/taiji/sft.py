"""LoRA SFT of the student on the chains of thought ORFT kept (Taiji, METHODS.md §2.1, step 2).

A short plain-torch loop over LocalLM.sequence_logprobs (not trl's SFTTrainer: it would pull in
`datasets` and its own Trainer for what is a few lines here): loss = − mean log-probability of the
target tokens (the chain of thought + answer block, and the end-of-sequence token so the student learns
to stop) after the student prompt without the hint. AdamW, linear warm-up, gradient clipping, seeded
shuffling; only the LoRA weights train.

    history = train_sft(student, prompts, targets, SFTConfig(epochs=2))   # student: a LocalLM
    student.save_adapter(folder)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from recstack.errors import ConfigError, DataError
from recstack.llm.base import Prompt
from recstack.llm.lora import LoraSettings, is_peft
from recstack.progress import progress_bar


@dataclass
class SFTConfig:
    epochs: int = 2
    batch_size: int = 4
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 5
    max_grad_norm: float = 1.0
    add_eos: bool = True
    seed: int = 0
    lora: LoraSettings = field(default_factory=LoraSettings)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size <= 0 or self.lr <= 0:
            raise ConfigError("sft.epochs, sft.batch_size and sft.lr must be > 0")


def sft_loss(student: Any, prompts: Sequence[Prompt], targets: Sequence[str], add_eos: bool = True) -> torch.Tensor:
    """Mean negative log-likelihood per target token (scalar with autograd)."""
    logp, mask = student.sequence_logprobs(prompts, targets, add_eos=add_eos)
    return -(logp * mask).sum() / mask.sum().clamp_min(1.0)


def train_sft(
    student: Any,
    prompts: Sequence[Prompt],
    targets: Sequence[str],
    config: SFTConfig | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Fine-tune `student` (a LocalLM; a LoRA adapter is added when it has none) on (prompt, target) pairs.
    Returns the per-step history [{"step", "epoch", "loss", "lr"}]."""
    config = config or SFTConfig()
    if len(prompts) != len(targets):
        raise DataError(f"{len(prompts)} prompts but {len(targets)} SFT targets")
    if not prompts:
        raise DataError("SFT: no samples to train on (did the ORFT filter keep any?)")
    if not is_peft(student.model):
        student.add_lora(config.lora)
    params = student.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = (len(prompts) + config.batch_size - 1) // config.batch_size
    total = steps_per_epoch * config.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps)))
    rng = random.Random(config.seed)
    history: list[dict[str, Any]] = []
    student.model.train()
    bar = progress_bar(total=total, desc="sft", disable=not config.progress)
    try:
        for epoch in range(config.epochs):
            order = list(range(len(prompts)))
            rng.shuffle(order)
            for start in range(0, len(order), config.batch_size):
                rows = order[start : start + config.batch_size]
                loss = sft_loss(student, [prompts[i] for i in rows], [targets[i] for i in rows], config.add_eos)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                schedule.step()
                entry = {
                    "step": len(history) + 1,
                    "epoch": epoch,
                    "loss": float(loss.detach()),
                    "lr": schedule.get_last_lr()[0],
                }
                history.append(entry)
                if log is not None:
                    log(entry)
                bar.update(1)
                bar.set_postfix(loss=f"{entry['loss']:.3f}")
    finally:
        bar.close()
        student.model.eval()
    return history
