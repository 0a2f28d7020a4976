"""Checkpoints of RL post-training (safetensors + JSON, never pickle), written atomically.

    work_dir/checkpoint/model.safetensors      the policy
    work_dir/checkpoint/reference.safetensors  the reference (it may lag the policy: synced every M steps)
    work_dir/checkpoint/optimizer.safetensors  AdamW state (train/checkpoint.py optimizer_tensors)
    work_dir/checkpoint/state.json             steps done, the config, the per-step log
    work_dir/log.jsonl                         the log, one JSON line per step

Requests and dropout are seeded by the step number, so resuming from step s ends with the same weights as
an uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import load_file, save_file

from recstack.config import to_dict
from recstack.errors import ConfigError
from recstack.retrieval.generative.posttrain.config import RESUME_FREE_KEYS
from recstack.train.checkpoint import (
    atomic_dir,
    load_optimizer_tensors,
    load_weights,
    optimizer_tensors,
    save_weights,
    write_json,
)

if TYPE_CHECKING:
    from recstack.retrieval.generative.posttrain.trainer import PostTrainer


def save_checkpoint(folder: Path, trainer: PostTrainer, log: list[dict[str, Any]]) -> None:
    with atomic_dir(folder / "checkpoint") as tmp:
        save_weights(trainer.model, tmp / "model.safetensors")
        save_weights(trainer.reference, tmp / "reference.safetensors")
        save_file(optimizer_tensors(trainer.optimizer), str(tmp / "optimizer.safetensors"))
        write_json(tmp / "state.json", {"step": len(log), "config": to_dict(trainer.config), "log": log})
    tmp_log = folder / ".log.jsonl.tmp"
    tmp_log.write_text("".join(json.dumps(entry) + "\n" for entry in log))
    tmp_log.replace(folder / "log.jsonl")


def resume_checkpoint(folder: Path, trainer: PostTrainer) -> list[dict[str, Any]]:
    """Load folder/checkpoint into the trainer when present; -> the log of the steps done ([] when absent).
    The checkpoint's config must equal the trainer's, except for RESUME_FREE_KEYS (steps, ...)."""
    checkpoint = folder / "checkpoint"
    if not (checkpoint / "state.json").is_file():
        return []
    state = json.loads((checkpoint / "state.json").read_text())
    now = to_dict(trainer.config)
    changed = [k for k in sorted(set(now) | set(state["config"])) if k not in RESUME_FREE_KEYS]
    changed = [k for k in changed if now.get(k) != state["config"].get(k)]
    if changed:
        key = changed[0]
        raise ConfigError(
            f"{checkpoint} was written with posttrain.{key} = {state['config'].get(key)!r}, now {now.get(key)!r}: "
            "use another work folder, or delete that checkpoint to start over"
        )
    load_weights(trainer.model, checkpoint / "model.safetensors")
    load_weights(trainer.reference, checkpoint / "reference.safetensors")
    tensors = load_file(str(checkpoint / "optimizer.safetensors"))
    load_optimizer_tensors(trainer.optimizer, tensors, trainer.names, checkpoint / "optimizer.safetensors")
    return list(state["log"])
