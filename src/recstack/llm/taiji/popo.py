"""POPO — Pareto Optimal Policy Optimization (Taiji, METHODS.md §2.1, step 3): GRPO over groups of G
rollouts of the LLM student with two rewards (rewards.py: semantic, ID), per-reward group-normalised
advantages, a KL term to the SFT reference and a weighting strategy (rl/weighting.py: fixed, mgda =
POPO, cv = POPO-light).

    trainer = POPOTrainer(policy, prompts, rewards, POPOConfig(weighting={"name": "mgda"}))
    log = trainer.train(contexts, folder)      # one dict per step: rewards, weights, kl, format_broken, ...

The policy is a LocalLM whose SFT adapter has been merged into its weights and that carries a fresh
LoRA adapter (pipeline.py does this): the reference policy is then the same model with the adapter
switched off (peft's disable_adapter), so no second copy of the weights is needed. A `reference`
LanguageModel may be given instead.

Each step draws `users_per_step` contexts (seeded by step), samples G rollouts per prompt, scores them,
and makes `updates_per_batch` (μ) GRPO updates; with μ = 1 the ratio is 1 (trl's default). Completions
are re-tokenised from their text for scoring (the EOS token is not scored [I]). Every `save_every` steps
the adapter, optimizer, weighting state and log are checkpointed atomically under `folder/checkpoint`;
`train` resumes from there and ends with the same adapter as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from recstack.errors import ConfigError, DataError
from recstack.llm.base import GenerationConfig
from recstack.llm.lora import LoraSettings, is_peft
from recstack.llm.taiji.prompting import TaijiPrompts, UserContext
from recstack.llm.taiji.rewards import REWARD_NAMES, TaijiRewards
from recstack.progress import progress_bar
from recstack.registry import build
from recstack.rl import GRPOConfig, MultiRewardGRPO
from recstack.train.checkpoint import atomic_dir, load_optimizer_tensors, optimizer_tensors, write_json


@dataclass
class POPOConfig:
    steps: int = 50
    users_per_step: int = 2  # B groups per step
    group_size: int = 4  # G rollouts per user
    lr: float = 5e-5
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    updates_per_batch: int = 1  # μ GRPO updates per batch of rollouts
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    generation_batch_size: int = 8
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    weighting: dict[str, Any] = field(default_factory=lambda: {"name": "mgda"})
    lora: LoraSettings = field(default_factory=LoraSettings)
    seed: int = 0
    save_every: int = 10
    progress: bool = True

    def __post_init__(self) -> None:
        for key in ("steps", "users_per_step", "updates_per_batch", "save_every", "max_new_tokens"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"popo.{key} must be > 0, got {getattr(self, key)!r}")
        if self.group_size < 2:
            raise ConfigError(f"popo.group_size must be >= 2 (GRPO compares rollouts), got {self.group_size}")


class POPOTrainer:
    def __init__(
        self,
        policy: Any,
        prompts: TaijiPrompts,
        rewards: TaijiRewards,
        config: POPOConfig | None = None,
        reference: Any = None,
    ) -> None:
        self.policy, self.prompts, self.rewards = policy, prompts, rewards
        self.config = c = config or POPOConfig()
        self.reference = reference
        if not is_peft(policy.model):
            policy.add_lora(c.lora)
        if reference is None and c.grpo.kl_coef > 0 and not hasattr(policy.model, "disable_adapter"):
            raise ConfigError("popo: the KL term needs a reference; give one or use a LoRA policy")
        self.params = policy.trainable_parameters()
        self.weighting = build("weighting", c.weighting, where="popo.weighting")
        self.grpo = MultiRewardGRPO(c.grpo, self.weighting, self.params)
        self.optimizer = torch.optim.AdamW(self.params, lr=c.lr, weight_decay=c.weight_decay)

    # ---- one step ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _reference(self) -> Iterator[Any]:
        if self.reference is not None:
            yield self.reference
            return
        with self.policy.model.disable_adapter():
            yield self.policy

    def rollouts(self, contexts: Sequence[UserContext], seed: int) -> tuple[list[Any], list[str]]:
        c = self.config
        prompts = [self.prompts.student(ctx) for ctx in contexts]
        generation = GenerationConfig(
            max_new_tokens=c.max_new_tokens,
            temperature=c.temperature,
            top_p=c.top_p,
            num_return_sequences=c.group_size,
            batch_size=c.generation_batch_size,
            seed=seed,
        )
        outputs = self.policy.generate(prompts, generation)
        return [p for p in prompts for _ in range(c.group_size)], [g.text for gens in outputs for g in gens]

    def step(self, contexts: Sequence[UserContext], step: int) -> dict[str, Any]:
        c = self.config
        started = time.perf_counter()
        row_prompts, texts = self.rollouts(contexts, c.seed + step)
        rows = [ctx for ctx in contexts for _ in range(c.group_size)]
        scored = self.rewards.score(texts, rows)
        rewards = scored.rewards.view(len(contexts), c.group_size, len(REWARD_NAMES))
        ref_logp = old_logp = None
        with torch.no_grad():
            if c.grpo.kl_coef > 0:
                with self._reference() as reference:
                    ref_logp, _ = reference.sequence_logprobs(row_prompts, texts)
            if c.updates_per_batch > 1:
                old_logp, _ = self.policy.sequence_logprobs(row_prompts, texts)
        for _ in range(c.updates_per_batch):
            logp, mask = self.policy.sequence_logprobs(row_prompts, texts)
            out = self.grpo.step(self.optimizer, logp, mask, rewards, old_logp, ref_logp, c.max_grad_norm)
        entry = {
            "step": step + 1,
            "users": [ctx.raw_user for ctx in contexts],
            **{f"reward_{name}": out.stats["reward_mean"][k] for k, name in enumerate(REWARD_NAMES)},
            **{f"weight_{name}": out.stats["weights"][k] for k, name in enumerate(REWARD_NAMES)},
            "kl": out.stats["kl"],
            "clip_fraction": out.stats["clip_fraction"],
            "grad_norm": out.stats.get("grad_norm"),
            "format_broken": scored.stats["format_broken"],
            "category_match": scored.stats["category_match"],
            "seconds": round(time.perf_counter() - started, 3),
        }
        return entry

    # ---- the loop, with checkpoints ------------------------------------------------------------
    def train(
        self,
        contexts: Sequence[UserContext],
        folder: str | Path | None = None,
        log: Callable[[dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        c = self.config
        if len(contexts) < c.users_per_step:
            raise DataError(f"popo: {len(contexts)} users, fewer than users_per_step = {c.users_per_step}")
        folder = Path(folder) if folder is not None else None
        history = self.resume(folder) if folder is not None else []
        bar = progress_bar(
            total=c.steps, initial=len(history), desc=f"popo[{self.weighting.name}]", disable=not c.progress
        )
        try:
            for step in range(len(history), c.steps):
                rng = np.random.default_rng(c.seed * 1_000_003 + step)
                chosen = [contexts[int(i)] for i in rng.choice(len(contexts), c.users_per_step, replace=False)]
                entry = self.step(chosen, step)
                history.append(entry)
                if log is not None:
                    log(entry)
                bar.update(1)
                bar.set_postfix(sem=f"{entry['reward_semantic']:.2f}", id=f"{entry['reward_id']:.2f}")
                if folder is not None and ((step + 1) % c.save_every == 0 or step + 1 == c.steps):
                    self.save(folder, history)
        finally:
            bar.close()
        return history

    def save(self, folder: Path, history: list[dict[str, Any]]) -> None:
        """folder/checkpoint: adapter/, optimizer.safetensors, state.json (atomic); folder/log.jsonl."""
        with atomic_dir(folder / "checkpoint") as tmp:
            self.policy.save_adapter(tmp / "adapter")
            save_file(optimizer_tensors(self.optimizer), str(tmp / "optimizer.safetensors"))
            write_json(tmp / "state.json", {"step": len(history), "weighting": self.weighting.state(), "log": history})
        lines = "".join(json.dumps(entry) + "\n" for entry in history)
        tmp_log = folder / ".log.jsonl.tmp"
        tmp_log.write_text(lines)
        tmp_log.replace(folder / "log.jsonl")

    def resume(self, folder: Path) -> list[dict[str, Any]]:
        """Load folder/checkpoint when present; returns the log of the steps already done."""
        checkpoint = folder / "checkpoint"
        if not (checkpoint / "state.json").is_file():
            return []
        state = json.loads((checkpoint / "state.json").read_text())
        self.policy.load_adapter(checkpoint / "adapter", trainable=True)
        self.params = self.policy.trainable_parameters()
        self.grpo = MultiRewardGRPO(self.config.grpo, self.weighting, self.params)
        self.optimizer = torch.optim.AdamW(self.params, lr=self.config.lr, weight_decay=self.config.weight_decay)
        names = [f"param{i}" for i in range(len(self.params))]
        load_optimizer_tensors(self.optimizer, load_file(str(checkpoint / "optimizer.safetensors")), names, checkpoint)
        self.weighting.load_state(state.get("weighting", {}))
        return list(state["log"])
