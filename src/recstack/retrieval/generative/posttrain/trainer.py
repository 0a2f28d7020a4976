"""post_train: RL post-training of a generative retriever with the cascade's ranker as reward (OneMall,
arXiv 2601.21770, METHODS.md §2.16).

    log = post_train(retriever, ranker, dataset, RLPostTrainConfig(objective="grpo"), work_dir)

Each step: draw B train requests (requests.py); beam-generate K candidate items per request with the
current policy (trie-constrained, history excluded); score them with the ranker's fused reward
r = Σ_task w_task · p(task) [B, K]; skip and count the groups that cannot teach (NaN, constant, too few
candidates); then one AdamW update of

    L = rl_weight · L_RL + ntp_weight · L_NTP + contrastive_weight · L_contrastive (+ MoE balance)

L_RL: GRPO (advantages normalised in each group of K, per-code surrogate, KL to the reference) or DPO (the
best vs the worst candidate of each group, against the reference). L_NTP (and L_contrastive when the
model has one) is the model's own loss on the true next item of the same B requests. The reference is a
frozen copy of the starting policy, set to the policy every `ref_sync_every` steps.

work_dir: checkpoint/ (policy, reference and AdamW state as safetensors, state.json with the log;
written atomically every save_every steps) and log.jsonl; a killed run resumes from the last checkpoint
and ends with the same weights as an uninterrupted one (requests and dropout are seeded by step).
The tuned weights are left in `retriever.model`; the log has one dict per step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

import torch

from recstack.data.batch import Candidates, UserBatch
from recstack.data.dataset import Dataset
from recstack.errors import ConfigError, DataError
from recstack.progress import progress_bar
from recstack.retrieval.generative.beam_search import BeamResult, beam_search
from recstack.retrieval.generative.posttrain.checkpoint import resume_checkpoint, save_checkpoint
from recstack.retrieval.generative.posttrain.config import RLPostTrainConfig
from recstack.retrieval.generative.posttrain.losses import fused_reward, screen_groups
from recstack.retrieval.generative.posttrain.objective import rl_loss, supervised_loss
from recstack.retrieval.generative.posttrain.requests import Requests
from recstack.retrieval.generative.retriever import GenerativeRetriever


class RewardModel(Protocol):
    """What post-training needs of a ranker (ranking/base.py Ranker): its tasks and `score`."""

    tasks: list[str]

    def score(self, batch: UserBatch, candidates: Candidates) -> dict[str, torch.Tensor]: ...


def check_reward_weights(weights: dict[str, float] | None, ranker: RewardModel) -> None:
    unknown = sorted(set(weights or {}) - set(ranker.tasks))
    if unknown:
        raise ConfigError(f"posttrain.reward_weights: {unknown[0]!r} is not a ranker task; tasks: {ranker.tasks}")


def mean_reward(rewards: torch.Tensor, valid: torch.Tensor, k: int) -> float | None:
    """Mean reward of the valid, finite candidates among the first k of each row (None when there are none)."""
    keep = valid[:, :k] & torch.isfinite(rewards[:, :k])
    return float(torch.where(keep, rewards[:, :k], 0.0).sum() / keep.sum()) if bool(keep.any()) else None


class PostTrainer:
    """The policy (retriever.model, trained in place), its frozen reference copy, AdamW and the requests."""

    def __init__(
        self, retriever: GenerativeRetriever, ranker: RewardModel, dataset: Dataset, config: RLPostTrainConfig
    ) -> None:
        if retriever.model is None or retriever.sids is None:
            raise DataError(f"{retriever.name}: post-training needs a fitted retriever (fit or Retriever.load)")
        check_reward_weights(config.reward_weights, ranker)
        self.retriever, self.ranker, self.config = retriever, ranker, config
        self.model, self.sids = retriever.model, retriever.sids
        features = ("timestamp", *dataset.labels, *retriever.event_columns)
        self.requests = Requests(dataset, features, config.requests, config.min_history)
        assert retriever.shape is not None  # set with the model
        self.reference = retriever.build_model(retriever.shape)  # not deepcopy: MoE keeps a non-leaf aux loss
        self.reference.load_state_dict(self.model.state_dict())
        self.reference.to(next(self.model.parameters()).device).eval().requires_grad_(False)
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.trie = self.sids.prefix_trie if config.logprob == "constrained" else None
        self.device = next(self.model.parameters()).device

    def generate(
        self, batch: UserBatch, inputs: dict[str, torch.Tensor]
    ) -> tuple[BeamResult, torch.Tensor, torch.Tensor]:
        """-> (BeamResult with K candidates per request, fused rewards [B, K], valid [B, K])."""
        c, rc = self.config, self.retriever.config
        self.model.eval()
        beams = beam_search(
            self.model,
            inputs,
            self.sids.prefix_trie,
            c.candidates,
            max(rc.beam_size, c.candidates),
            use_cache=rc.use_cache,
            constrained=rc.constrained,
            exclude=batch.history if c.exclude_history else None,
        )
        scores = self.ranker.score(batch, Candidates.from_topk(beams.items, beams.scores, self.retriever.name))
        return beams, fused_reward(scores, c.reward_weights), beams.items > 0

    def step(self, step: int) -> dict[str, Any]:
        c, started = self.config, time.perf_counter()
        seed = c.seed * 1_000_003 + step
        torch.manual_seed(seed)  # dropout masks (when on) depend on the step only: resume-exact
        batch, next_items = self.requests.batch(self.requests.sample(c.requests_per_step, seed))
        inputs = {k: v.to(self.device) for k, v in self.retriever.decode_batch(batch).items()}
        beams, rewards, valid = self.generate(batch, inputs)
        groups = screen_groups(rewards, valid, c.skip_constant_tol, 2 * c.dpo_pairs if c.objective == "dpo" else 2)
        if c.on_nan == "error" and bool(groups["nan"].any()):
            raise DataError(
                f"posttrain step {step + 1}: the ranker gave NaN / inf rewards to {int(groups['nan'].sum())} groups"
            )
        self.model.train(c.dropout)
        targets = {
            "target_items": next_items.to(self.device),
            "target_codes": self.sids.codes[next_items].to(self.device),
        }
        total, parts = supervised_loss(self.model, {**inputs, **targets}, c)
        keep = torch.nonzero(groups["keep"]).flatten()
        rl, kl = total.new_zeros(()), None
        if keep.numel():
            kept = {k: v[keep.to(self.device)] for k, v in inputs.items()}
            rl, kl = rl_loss(
                self.model, self.reference, kept, beams.codes[keep], rewards[keep], valid[keep], c, self.trie
            )
            total = total + c.rl_weight * rl
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if c.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], c.max_grad_norm
            )
        self.optimizer.step()
        if c.ref_sync_every and (step + 1) % c.ref_sync_every == 0:
            self.reference.load_state_dict(self.model.state_dict())
        self.model.eval()
        return {
            "step": step + 1,
            "reward_top10": mean_reward(rewards, valid, 10),
            "reward_topK": mean_reward(rewards, valid, c.candidates),
            "loss": float(total.detach()),
            "loss_rl": float(rl.detach()),
            **parts,
            "kl": kl,
            "groups": int(valid.shape[0]),
            "skipped_groups": int((~groups["keep"]).sum()),
            **{f"skipped_{why}": int(groups[why].sum()) for why in ("nan", "small", "constant")},
            "seconds": round(time.perf_counter() - started, 3),
        }

    # ---- the loop, checkpoints -----------------------------------------------------------------
    def train(self, work_dir: str | Path | None = None) -> list[dict[str, Any]]:
        c = self.config
        folder = Path(work_dir) if work_dir is not None else None
        log = resume_checkpoint(folder, self) if folder is not None else []
        bar = progress_bar(
            total=c.steps, initial=min(len(log), c.steps), desc=f"posttrain[{c.objective}]", disable=not c.progress
        )
        try:
            for step in range(len(log), c.steps):
                log.append(self.step(step))
                bar.update(1)
                bar.set_postfix(r10=f"{log[-1]['reward_top10'] or float('nan'):.4f}", skipped=log[-1]["skipped_groups"])
                if folder is not None and ((step + 1) % c.save_every == 0 or step + 1 == c.steps):
                    save_checkpoint(folder, self, log)
        finally:
            bar.close()
        return log


def post_train(
    retriever: GenerativeRetriever,
    ranker: RewardModel,
    dataset: Dataset,
    config: RLPostTrainConfig | None = None,
    work_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Post-train `retriever` in place (dataset: the one it was fitted on, e.g. a run's retrieval view);
    returns the per-step log (see PostTrainer.step). work_dir: checkpoints + log.jsonl, resumed when present."""
    return PostTrainer(retriever, ranker, dataset, config or RLPostTrainConfig()).train(work_dir)
