"""LoRA SFT of the student on the chains of thought ORFT kept (Taiji, METHODS.md §2.1, step 2).

A short plain-torch loop over LocalLM.sequence_logprobs (not trl's SFTTrainer: it would pull in
`datasets` and its own Trainer for what is a few lines here): loss = − mean log-probability of the
target tokens (the chain of thought + answer block, and the end-of-sequence token so the student learns
to stop) after the student prompt without the hint. AdamW, linear warm-up, gradient clipping, seeded
shuffling; only the LoRA weights train.

    history = train_sft(student, prompts, targets, SFTConfig(epochs=2), folder=work / "sft")
    student.save_adapter(folder)

With a `folder`, every `save_every` steps (and after the last) the adapter, AdamW state, RNG state and
history go to `folder/checkpoint` (safetensors + JSON, built in a temporary folder and renamed), and
`train_sft` resumes from there: a killed run ends at the same adapter as an uninterrupted one. Nothing
else needs saving: the epoch shuffles are replayed from the seed and the warm-up is a function of the step.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from recstack.errors import ConfigError, DataError
from recstack.llm.base import Prompt
from recstack.llm.lora import LoraSettings, is_peft
from recstack.progress import progress_bar
from recstack.train.checkpoint import atomic_dir, load_optimizer_tensors, optimizer_tensors, write_json
from recstack.train.seeding import capture_rng_state, restore_rng_state


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
    save_every: int = 50  # steps between checkpoints when train_sft gets a folder
    lora: LoraSettings = field(default_factory=LoraSettings)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size <= 0 or self.lr <= 0 or self.save_every <= 0:
            raise ConfigError("sft.epochs, sft.batch_size, sft.lr and sft.save_every must be > 0")


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
    folder: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Fine-tune `student` (a LocalLM; a LoRA adapter is added when it has none) on (prompt, target) pairs,
    resuming from `folder/checkpoint` when there is one. Returns the per-step history
    [{"step", "epoch", "loss", "lr"}], the resumed steps included."""
    config = config or SFTConfig()
    if len(prompts) != len(targets):
        raise DataError(f"{len(prompts)} prompts but {len(targets)} SFT targets")
    if not prompts:
        raise DataError("SFT: no samples to train on (did the ORFT filter keep any?)")
    checkpoint = Path(folder) / "checkpoint" if folder is not None else None
    run = {"samples": len(prompts), "batch_size": config.batch_size, "epochs": config.epochs, "seed": config.seed}
    history = _resume(student, checkpoint, run) if checkpoint is not None else []
    if not is_peft(student.model):
        student.add_lora(config.lora)
    params = student.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    done = len(history)
    if checkpoint is not None and done:
        names = [f"param{i}" for i in range(len(params))]
        tensors = load_file(str(checkpoint / "optimizer.safetensors"))
        load_optimizer_tensors(optimizer, tensors, names, checkpoint)
        restore_rng_state(load_file(str(checkpoint / "rng.safetensors")), getattr(student, "device", "cpu"))
    steps_per_epoch = (len(prompts) + config.batch_size - 1) // config.batch_size
    total = steps_per_epoch * config.epochs
    warmup = max(1, config.warmup_steps)
    # LambdaLR counts from 0 at construction: shifting by the steps done gives a resumed run the same rates
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + done + 1) / warmup))
    rng = random.Random(config.seed)
    student.model.train()
    bar = progress_bar(total=total, initial=done, desc="sft", disable=not config.progress)
    try:
        for epoch in range(config.epochs):
            order = list(range(len(prompts)))
            rng.shuffle(order)  # also for the epochs a resumed run skips, so the later shuffles match
            for batch, start in enumerate(range(0, len(order), config.batch_size)):
                if epoch * steps_per_epoch + batch < done:
                    continue
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
                if checkpoint is not None and (len(history) % config.save_every == 0 or len(history) == total):
                    _save(student, optimizer, checkpoint, run, history)
                if log is not None:
                    log(entry)
                bar.update(1)
                bar.set_postfix(loss=f"{entry['loss']:.3f}")
    finally:
        bar.close()
        student.model.eval()
    return history


def _save(student: Any, optimizer: Any, checkpoint: Path, run: dict[str, Any], history: list[dict[str, Any]]) -> None:
    with atomic_dir(checkpoint) as tmp:
        student.save_adapter(tmp / "adapter")
        save_file(optimizer_tensors(optimizer), str(tmp / "optimizer.safetensors"))
        save_file(capture_rng_state(getattr(student, "device", "cpu")), str(tmp / "rng.safetensors"))
        write_json(tmp / "state.json", {**run, "step": len(history), "history": history})


def _resume(student: Any, checkpoint: Path, run: dict[str, Any]) -> list[dict[str, Any]]:
    """Load the checkpoint's adapter into `student`; returns the history of the steps it covers."""
    if not (checkpoint / "state.json").is_file():
        return []
    state = json.loads((checkpoint / "state.json").read_text())
    if {k: state.get(k) for k in run} != run:
        saved = {k: state.get(k) for k in run}
        raise DataError(f"{checkpoint} was written for {saved}, not {run}; delete it to train from scratch")
    student.load_adapter(checkpoint / "adapter", trainable=True)
    return list(state["history"])
