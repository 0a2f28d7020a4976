"""Rewards, groups and losses of RL post-training (OneMall, arXiv 2601.21770, §2.16; GRPO: Shao et al.,
arXiv 2402.03300; DPO: Rafailov et al., arXiv 2305.18290).

Shapes: B requests (groups) of G = K candidates, each a code tuple of C levels; rows of a flattened
group batch are request-major (row b·G + g).

- fused_reward:  {task: p [B, G]} -> r [B, G] = Σ_task w_task · p(task)  (OneMall's linear fusion [I]).
- screen_groups: which groups teach something: a NaN / inf reward, too few valid (non-empty) candidates or
  a constant reward (range <= tol) skips the group, so no advantage divides by a zero std.
- code_log_probs: teacher-forced log p(code_l | context, codes_<l) [B, G, C] of given tuples through the
  model's own decoding interface (begin / step / reorder, base.py): C batched steps, the context encoded
  once per request and shared by its G candidates, with autograd.
- grpo_loss:  advantages normalised within each group (masked to the valid candidates; equal to
  rl.advantages.group_advantages on full groups), per-code surrogate and k3 KL from rl/grpo.py.
- dpo_loss:   −log σ(β [(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]) over (chosen, rejected)
  pairs. trl's DPOTrainer does not fit here: it needs a Hugging Face causal LM, a tokenizer and text
  prompt / completion columns, and computes log-probs by its own forward over concatenated tokens; our
  policy is a semantic-ID decoder with a per-user memory and a trie, whose sequence log-probs come from
  code_log_probs. The loss itself is one line of torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recstack.errors import ConfigError, DataError
from recstack.retrieval.generative.base import GenerativeModel
from recstack.retrieval.generative.beam_search import children
from recstack.rl.grpo import clipped_surrogate, kl_penalty, token_weights
from recstack.semantic_ids.semantic_ids import PrefixTrie


def fused_reward(scores: dict[str, torch.Tensor], weights: dict[str, float] | None) -> torch.Tensor:
    """{task: probabilities [B, G]} -> [B, G] weighted sum (weights None = 1.0 per task)."""
    if weights is None:
        weights = dict.fromkeys(scores, 1.0)
    unknown = sorted(set(weights) - set(scores))
    if unknown:
        raise ConfigError(f"posttrain.reward_weights: {unknown[0]!r} is not a ranker task; tasks: {', '.join(scores)}")
    first = next(iter(scores.values()))
    return sum((w * scores[task].float() for task, w in weights.items()), torch.zeros_like(first, dtype=torch.float))


def screen_groups(
    rewards: torch.Tensor, valid: torch.Tensor, tol: float, min_valid: int = 2
) -> dict[str, torch.Tensor]:
    """rewards, valid [B, G] -> {"keep", "nan", "small", "constant"} bool [B]. A skipped group has one reason,
    in this order: a NaN / inf reward on a valid candidate; fewer than `min_valid` valid candidates; the
    valid candidates' rewards span <= tol."""
    finite = torch.isfinite(rewards) | ~valid
    nan = ~finite.all(1)
    small = ~nan & (valid.sum(1) < max(min_valid, 2))
    r = torch.where(valid & finite, rewards, 0.0)
    spread = torch.where(valid, r, float("-inf")).amax(1) - torch.where(valid, r, float("inf")).amin(1)
    constant = ~nan & ~small & (spread <= tol)
    return {"keep": ~(nan | small | constant), "nan": nan, "small": small, "constant": constant}


def masked_group_advantages(rewards: torch.Tensor, valid: torch.Tensor, scale: bool, eps: float) -> torch.Tensor:
    """[B, G] -> (r − mean) / (std + eps) over each group's valid candidates (unbiased std; 0 elsewhere)."""
    n = valid.sum(1, keepdim=True).clamp_min(2).float()
    r = torch.where(valid, rewards.float(), 0.0)
    mean = r.sum(1, keepdim=True) / valid.sum(1, keepdim=True).clamp_min(1)
    centred = torch.where(valid, r - mean, 0.0)
    if scale:
        centred = centred / ((centred.square().sum(1, keepdim=True) / (n - 1)).sqrt() + eps)
    return centred


def code_log_probs(
    model: GenerativeModel, inputs: dict[str, torch.Tensor], codes: torch.Tensor, trie: PrefixTrie | None = None
) -> torch.Tensor:
    """codes [B, G, C] (model inputs: B requests) -> log p of each code given the earlier ones [B, G, C].

    trie: renormalise each level over the codes that continue the prefix towards an item; None = the
    model's own softmax (whose sum over levels is the beam search score of the tuple)."""
    b, g, levels = codes.shape
    device = inputs["users"].device
    codes = codes.to(device)
    flat = codes.reshape(b * g, levels)
    state = model.begin(inputs)
    parts = []
    for level in range(levels):  # C batched steps, as in beam search
        prefix = flat[:, :level]
        log_probs, state = model.step(state, prefix if level else prefix[:b], use_cache=True)
        if trie is not None:
            exists, _ = children(trie, (prefix if level else prefix[:b]).cpu())
            # a large finite fill: a prefix with no child (an empty slot's garbage tuple) stays finite, no NaN
            log_probs = torch.log_softmax(log_probs.masked_fill(~exists.to(device), -1e9), -1)
        if level == 0:  # one row per request: its G candidates' first codes, then repeat rows per candidate
            parts.append(log_probs.gather(1, codes[:, :, 0]).reshape(b * g))
            state = model.reorder(state, torch.arange(b, device=device).repeat_interleave(g))
        else:
            parts.append(log_probs.gather(1, flat[:, level : level + 1]).squeeze(1))
    return torch.stack(parts, 1).view(b, g, levels)


def grpo_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    kl_coef: float,
    loss_type: str = "grpo",
    kl_estimator: str = "k3",
) -> tuple[torch.Tensor, torch.Tensor]:
    """logp, ref_logp [N, C] per-code log-probs of N valid candidates; advantages [N] -> (loss, kl) scalars.

    One update per batch of candidates: the ratio is exp(logp − logp.detach()) = 1 with the policy gradient
    −A ∇log π (trl's μ = 1), reduced per `loss_type` (rl/grpo.py token_weights)."""
    weights = token_weights(torch.ones_like(logp), loss_type)
    policy = (clipped_surrogate(logp, logp.detach(), advantages, 0.2, 0.2) * weights).sum()
    if ref_logp is None or kl_coef == 0:
        return policy, logp.new_zeros(())
    kl = (kl_penalty(logp, ref_logp.detach(), kl_estimator) * weights).sum()
    return policy + kl_coef * kl, kl


def dpo_pairs(rewards: torch.Tensor, valid: torch.Tensor, pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards, valid [B, G] -> (chosen, rejected) candidate columns [B, pairs]: the i-th best and i-th worst
    valid candidates (groups must hold >= 2 · pairs valid candidates)."""
    if int(valid.sum(1).min()) < 2 * pairs:
        raise DataError(f"dpo: a group has fewer than {2 * pairs} valid candidates")
    best = torch.where(valid, rewards, float("-inf")).argsort(dim=1, descending=True, stable=True)[:, :pairs]
    worst = torch.where(valid, rewards, float("inf")).argsort(dim=1, stable=True)[:, :pairs]
    return best, worst


def dpo_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float
) -> torch.Tensor:
    """Sequence log-probs [P] of chosen / rejected candidates under the policy and the reference -> mean DPO loss."""
    margin = (chosen - ref_chosen.detach()) - (rejected - ref_rejected.detach())
    return -F.logsigmoid(beta * margin).mean()
