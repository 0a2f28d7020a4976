"""RLPostTrainConfig: every setting of the RL post-training of a generative retriever (OneMall, arXiv
2601.21770, METHODS.md §2.16). Each interpretation [I] of the paper is a field, so a better reading can
replace it; the paper gives K = 768 candidates, reward weights (1, 30, 1), total loss 0.5·L_RL + L_NTP +
L_contrastive and "reference model periodically synced", nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from recstack.errors import ConfigError

RESUME_FREE_KEYS = ("steps", "save_every", "progress")  # may change when a killed run resumes; the rest must match


@dataclass
class RLPostTrainConfig:
    objective: Literal["grpo", "dpo"] = "grpo"
    """grpo: group-normalised advantages over the K candidates + KL to the reference; dpo: best vs worst"""
    candidates: int = 256
    """K candidates per request, the top-K of a trie-constrained beam search with max(beam_size, K) beams
    (the paper: 768)"""
    reward_weights: dict[str, float] | None = None
    """ranker task -> w_task of the fused reward r = Σ_task w_task · p(task); None = 1.0 for every task of
    the ranker. OneMall: {ctr: 1, ctcvr: 30, egpm: 1} [I: linear fusion]"""
    requests_per_step: int = 16
    """B requests (groups) per step, drawn (seeded by step) from the train requests"""
    requests: Literal["all", "last"] = "all"
    """[I] a request = a user's state just before one train interaction, whose item is the NTP target:
    all = every train position with >= min_history earlier items (the paper samples 2% of the offline
    requests), last = each user's last train interaction"""
    min_history: int = 1
    steps: int = 100
    lr: float = 1e-4
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    kl_coef: float = 0.04
    """[I] β of the GRPO KL term to the reference (trl's former default; the paper gives none)"""
    kl_estimator: Literal["k3", "k1"] = "k3"
    ref_sync_every: int = 10
    """[I] M: the reference is set to the policy after every M steps ("periodically synced"); 0 = never
    (the SFT model stays the reference, as in DPO)"""
    scale_rewards: bool = True
    """[I] GRPO advantage (r − mean) / (std + eps) within the group (False: r − mean, Dr. GRPO)"""
    advantage_eps: float = 1e-4
    loss_type: Literal["grpo", "bnpo", "dr_grpo"] = "grpo"
    """[I] reduction of the per-code losses (rl/grpo.py token_weights; a code level plays a token's role)"""
    dpo_beta: float = 0.1
    """[I] DPO β (the DPO paper's range; OneMall gives none)"""
    dpo_pairs: int = 1
    """[I] pairs per group: the i-th best candidate against the i-th worst, i < dpo_pairs (1 = best vs worst)"""
    logprob: Literal["model", "constrained"] = "model"
    """[I] sequence log-prob of a candidate = Σ_levels log p(code): model = the model's own softmax (what NTP
    trains, and what beam search sums to rank), constrained = renormalised over the trie's valid children at
    each level (the distribution of trie-constrained sampling)"""
    exclude_history: bool = True
    """candidates exclude the request's history items (as retrieval does)"""
    rl_weight: float = 0.5
    ntp_weight: float = 1.0
    contrastive_weight: float = 1.0
    """weight of the model's in-batch contrastive loss (OneMall's "contrastive" entry; ignored for models
    without one)"""
    aux_weight: float | None = None
    """MoE load-balancing loss weight (models with "moe_aux"); None = the model's own aux_loss_weight [I]"""
    dropout: bool = False
    """[I] dropout active in the RL and NTP forward passes (off: log-probs are those of the deployed model,
    and the KL at the reference is 0 up to float rounding)"""
    skip_constant_tol: float = 1e-8
    """a group whose valid candidates' rewards span <= this (max − min) is skipped and counted"""
    on_nan: Literal["skip", "error"] = "skip"
    """a group with a NaN / inf reward: skipped and counted, or a DataError"""
    seed: int = 0
    save_every: int = 10
    """checkpoint every N steps (and after the last) under work_dir/checkpoint"""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.objective not in ("grpo", "dpo"):
            raise ConfigError(f"posttrain.objective must be 'grpo' or 'dpo', got {self.objective!r}")
        if self.candidates < 2:
            raise ConfigError(f"posttrain.candidates must be >= 2 (a group compares candidates), got {self.candidates}")
        for key in ("requests_per_step", "steps", "save_every", "min_history", "dpo_pairs"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"posttrain.{key} must be > 0, got {getattr(self, key)!r}")
        if 2 * self.dpo_pairs > self.candidates:
            raise ConfigError(f"posttrain.dpo_pairs ({self.dpo_pairs}) needs 2 x that many candidates")
        for key in ("lr", "dpo_beta", "advantage_eps"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"posttrain.{key} must be > 0, got {getattr(self, key)!r}")
        for key in ("kl_coef", "weight_decay", "ref_sync_every", "rl_weight", "ntp_weight", "contrastive_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"posttrain.{key} must be >= 0, got {getattr(self, key)!r}")
        if self.aux_weight is not None and self.aux_weight < 0:
            raise ConfigError(f"posttrain.aux_weight must be >= 0 or null, got {self.aux_weight!r}")
        if self.skip_constant_tol < 0:
            raise ConfigError(f"posttrain.skip_constant_tol must be >= 0, got {self.skip_constant_tol!r}")
        if self.reward_weights is not None and (
            not self.reward_weights or any(w < 0 for w in self.reward_weights.values())
        ):
            raise ConfigError(f"posttrain.reward_weights must map tasks to weights >= 0, got {self.reward_weights!r}")
        for key, allowed in (
            ("requests", ("all", "last")),
            ("logprob", ("model", "constrained")),
            ("on_nan", ("skip", "error")),
            ("loss_type", ("grpo", "bnpo", "dr_grpo")),
            ("kl_estimator", ("k3", "k1")),
        ):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"posttrain.{key} must be one of {', '.join(allowed)}; got {getattr(self, key)!r}")
